"""What every lorakit adapter shares: argument checks, a frozen base, the merge protocol, and
the declaration (``AdapterSpec``) that lorakit's tools read instead of guessing.

An adapter wraps a frozen ``nn.Linear`` (weight W of shape (out, in), optional bias b) and adds
a low-rank update. The merge protocol, in the spirit of loralib's ``layers.py``, lives here
alone; families supply hooks:

    merge():     W <- merged_weight()        default W + delta_weight()   (refuses NaN/Inf, twice)
    unmerge():   W <- unmerged_weight(W')    default W' - delta_weight()  (refuses when not merged)
    to_linear(): a new nn.Linear with the merged weight, this layer untouched
    forward:     merged -> base(x) only, so the update is never counted twice

Additive families (LoRA, bilinear, RSS) implement ``delta_weight()``; the DoRA family rescales
rows, so it overrides ``merged_weight`` (returning W' and the row norm that ``unmerged_weight``
needs) instead. ``delta_bias`` (default None: no bias part) is the (out,) vector that merging
adds to b; when the base has no bias, merging creates a frozen one and unmerging removes it.
Conditioned layers (``ADAPTER.condition == "p"``) pass their arguments (one condition vector
p) through ``merge(*args)`` and ``to_linear(*args)``; ``merge`` remembers them for ``unmerge``.

Every concrete family declares ``ADAPTER = AdapterSpec(...)`` and registers in
``registry.py``; see ARCHITECTURE.md, "The adapter protocol".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.nn.modules import module as _module

from ..validate import check_int, check_real
from .fused import autocast_active


def add_low_rank(y: torch.Tensor, h: torch.Tensor, B: torch.Tensor, scaling: float,
                 in_place: bool) -> torch.Tensor:
    """y + scaling · h Bᵀ for y (N, out), h (N, r), B (out, r), as ONE addmm.

    The scaling is the GEMM's alpha, so no (N, out) temporary is made for the low-rank product,
    its scaled copy or the sum. With ``in_place`` the sum is written into y itself (the caller
    guarantees that nothing else holds y: a fresh output that no forward hook has seen and that
    autograd does not save); in backward, addmm passes dL/dy through unchanged and the gradients
    of h and B are (N, r)- and (out, r)-sized products. Mixed dtypes (e.g. autocast made y and h
    bf16 while B is float32) take the out-of-place ``torch.addmm``, which autocast casts.
    """
    if in_place and y.dtype == h.dtype == B.dtype:
        return y.addmm_(h, B.t(), alpha=scaling)
    return torch.addmm(y, h, B.t(), alpha=scaling)


def compiling() -> bool:
    """True while torch.compile (dynamo) traces the caller (False on torch without the API)."""
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(is_compiling()) if is_compiling is not None else False


class MergeStateError(ValueError):
    """Merging a merged layer, unmerging an unmerged one, or a merge that would write NaN/Inf."""


def check_rank(rank: int, in_features: int, out_features: int) -> int:
    limit = min(in_features, out_features)
    if not 1 <= check_int("rank", rank, minimum=None) <= limit:
        raise ValueError(
            f"rank must be between 1 and min(in_features, out_features) = {limit} "
            f"for a {in_features}->{out_features} layer, got {rank}")
    return rank


def check_positive(name: str, value: float) -> float:
    return check_real(name, value, low=0, low_open=True)


def check_probability(name: str, value: float) -> float:
    return check_real(name, value, low=0, high=1, high_open=True)


# --------------------------------------------------------------------------------------------
# the adapter protocol: what each family declares for lorakit's tools
# --------------------------------------------------------------------------------------------
CONDITIONS = (None, "p", "structure_prior")


@dataclass(frozen=True)
class PeftFlavour:
    """How a family maps onto PEFT's LoRA: the adapter_config.json flags that select the flavour
    and, per tensor PEFT stores for a module, the layer's attribute holding it."""
    flags: Mapping[str, Any]
    tensors: Mapping[str, str]      # PEFT suffix after "<module>." -> the layer's Parameter name


@dataclass(frozen=True)
class AdapterSpec:
    """What lorakit's tools need to know about an adapter family, declared by the family.

    name: the method's short name ("lora", "dora", ...): analysis, bench and tests use it.
    init_kwargs: each ``__init__`` argument after ``base_layer`` -> the attribute that stores
        its value (save/load rebuilds the layer from them).
    condition: the forward's extra input: None, "p" (a condition vector; ``merge(p)`` merges
        for one p) or "structure_prior" (per position; a merged layer computes the no-prior
        function).
    sizes: the init arguments that are input sizes (cond_dim, structure_dim), with the value
        tests and benchmarks build an example with.
    param_groups: trainable Parameter or submodule name -> LoRA+ group ("lora_A", "lora_B",
        "magnitude", "gates", "condition", "structure"); see ``tuning/loraplus.py``.
    peft: the PEFT flavour, or None when PEFT's LoRA cannot represent the family.
    bench_peer: the (method, implementation) case ``tools/bench.py`` times it against.
    trainable_params: (d_in, d_out, rank, **sizes) -> the trainable parameter count of one
        layer, the formula beside the equation (``notebook/analysis.py`` reads it; the tests
        check it against built layers).
    """
    name: str
    init_kwargs: Mapping[str, str]
    condition: str | None = None
    sizes: Mapping[str, int] = field(default_factory=dict)
    param_groups: Mapping[str, str] = field(default_factory=lambda: {"lora_A": "lora_A", "lora_B": "lora_B"})
    peft: PeftFlavour | None = None
    bench_peer: tuple[str, str] | None = None
    trainable_params: Callable[..., int] | None = None

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {self.condition!r}")
        missing = set(self.sizes) - set(self.init_kwargs)
        if missing:
            raise ValueError(f"sizes {sorted(missing)} are not init arguments {list(self.init_kwargs)}")


def spec_of(cls_or_layer: type | nn.Module, own: bool = False) -> AdapterSpec:
    """The ``AdapterSpec`` of a class (or of a layer's class): its own declaration, or with
    ``own=False`` one it inherits (a subclass that only changes behaviour keeps its parent's;
    one that adds ``__init__`` arguments must declare its own: save/load checks)."""
    cls = cls_or_layer if isinstance(cls_or_layer, type) else type(cls_or_layer)
    spec = cls.__dict__.get("ADAPTER") if own else getattr(cls, "ADAPTER", None)
    if not isinstance(spec, AdapterSpec):
        raise TypeError(f"{cls.__name__} declares no AdapterSpec: give it a class attribute "
                        "ADAPTER = AdapterSpec(...) (see lorakit/layers/base.py)")
    return spec




class AdapterLinear(nn.Module):
    """Base of every lorakit layer: y = base(x) + update(x), base frozen.

    Args:
        base_layer: the pretrained ``nn.Linear`` to adapt; its parameters are frozen.
        rank: r, with 1 <= r <= min(in_features, out_features).
        alpha: the update is scaled by ``scaling = alpha / rank``.
    """

    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(
                f"base_layer must be an nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.rank = check_rank(rank, self.in_features, self.out_features)
        self.alpha = check_positive("alpha", alpha)
        self.scaling = self.alpha / self.rank
        self.merged = False
        self._created_bias = False      # merge() gave the base a bias it did not have
        self._merge_memo: Any = None    # merged_weight's memo, for unmerge
        self._merge_args: tuple = ()    # merge's arguments (one condition p), for unmerge
        base_layer.requires_grad_(False)

    # --- helpers for subclasses ------------------------------------------------------------
    def _factory(self) -> dict:
        """dtype and device of the base weight: adapters are created to match it."""
        w = self.base_layer.weight
        return {"dtype": w.dtype, "device": w.device}

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have shape (..., {self.in_features}) (last dim = in_features), "
                f"got {tuple(x.shape)}")

    def _base_output_is_private(self) -> bool:
        """Whether the adapter may add its update into the base's output in place.

        True when the base runs ``nn.Linear.forward`` itself (its output is a fresh tensor
        that autograd does not save) and no forward hook (the layer's own or a global one) can
        have kept a reference to that output.
        """
        base = self.base_layer
        return (type(base).forward is nn.Linear.forward and not base._forward_hooks
                and not _module._global_forward_hooks)

    def _can_fuse(self, x: torch.Tensor, *params: torch.Tensor) -> bool:
        """Whether forward may skip calling the base module and use a fused function instead.

        True when the base output is private (above), no forward pre-hook could change the
        input, autocast is off (a fused function saves tensors in the dtypes it computed in),
        x and the parameters share one dtype, and torch.compile is not tracing: compiled, the
        plain ops are traced and the compiler fuses them itself (torch 2.11 on CUDA, aot_eager
        and inductor alike, returned a zero dL/dx for the custom Function; tests/layers/test_cuda.py
        checks compiled gradients on a GPU).
        """
        base = self.base_layer
        return (not compiling() and self._base_output_is_private() and not base._forward_pre_hooks
                and not _module._global_forward_pre_hooks
                and not autocast_active(x.device.type)
                and all(p.dtype == x.dtype for p in params))

    # --- the merge protocol ----------------------------------------------------------------
    def delta_weight(self, *args) -> torch.Tensor:
        """The (out, in) matrix that ``merge()`` adds to the base weight."""
        raise NotImplementedError

    def delta_bias(self, *args) -> torch.Tensor | None:
        """The (out,) vector that ``merge()`` adds to the base bias; None: the update has none."""
        return None

    def merged_weight(self, *args) -> tuple[torch.Tensor, Any]:
        """Hook: (W', memo): the merged (out, in) weight in W's dtype, and what
        ``unmerged_weight`` needs to undo it (default: W + delta_weight(*args), memo = args)."""
        W = self.base_layer.weight
        return W + self.delta_weight(*args).to(W.dtype), args

    def unmerged_weight(self, merged: torch.Tensor, memo: Any) -> torch.Tensor:
        """Hook: W recovered from the merged weight W' and ``merged_weight``'s memo
        (default: W' - delta_weight(*memo))."""
        return merged - self.delta_weight(*memo).to(merged.dtype)

    @torch.no_grad()
    def merge(self, *args) -> None:
        """Fold the update into the base: W <- merged_weight() (and b <- b + delta_bias())."""
        if self.merged:
            raise MergeStateError(f"{type(self).__name__} is already merged; unmerge() first")
        new, memo = self.merged_weight(*args)
        delta_b = self.delta_bias(*args)
        if not (torch.isfinite(new).all() and (delta_b is None or torch.isfinite(delta_b).all())):
            raise MergeStateError(
                "refusing to merge: the merged weight contains NaN or Inf; the base weight "
                "was left unchanged")
        base = self.base_layer
        base.weight.copy_(new)
        if delta_b is not None:
            self._created_bias = base.bias is None
            if self._created_bias:      # frozen, like the rest of the base; unmerge removes it
                base.bias = nn.Parameter(torch.zeros(self.out_features, **self._factory()),
                                         requires_grad=False)
            base.bias += delta_b.to(base.bias.dtype)
        self._merge_memo, self._merge_args = memo, args
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge()``: W <- unmerged_weight(W') (and b <- b - delta_bias())."""
        if not self.merged:
            raise MergeStateError(f"{type(self).__name__} is not merged; nothing to unmerge")
        base = self.base_layer
        base.weight.copy_(self.unmerged_weight(base.weight, self._merge_memo))
        delta_b = self.delta_bias(*self._merge_args)
        if delta_b is not None:
            if self._created_bias:
                base.bias = None        # the base had no bias before merge(): it has none again
            else:
                base.bias -= delta_b.to(base.bias.dtype)
        self._created_bias = False
        self._merge_memo, self._merge_args = None, ()
        self.merged = False

    @torch.no_grad()
    def to_linear(self, *args) -> nn.Linear:
        """A new plain ``nn.Linear`` computing this layer's function; this layer is untouched."""
        base = self.base_layer
        weight, bias = base.weight, base.bias
        if not self.merged:
            weight = self.merged_weight(*args)[0]
            delta_b = self.delta_bias(*args)
            if delta_b is not None:
                delta_b = delta_b.to(weight.dtype)
                bias = delta_b if bias is None else bias + delta_b
        if not (torch.isfinite(weight).all() and (bias is None or torch.isfinite(bias).all())):
            raise MergeStateError("refusing to merge: the merged weight contains NaN or Inf")
        out = nn.Linear(self.in_features, self.out_features, bias=bias is not None,
                        **self._factory())
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}"
