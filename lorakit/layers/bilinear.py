"""Bilinear LoRA: a rank-r update whose channels are gated (and, for RSS, shifted) by a condition p.

    BilinearLoRALinear:  y = W x + b + s * B ((A x) ⊙ g(p))
    RSSBilinearLoRA:     y = W x + b + s * B ((A x) ⊙ g(p) + S p)

    g(p) = C p        gate="linear"    the seeds' form: the update vanishes at p = 0
    g(p) = 1 + C p    gate="one_plus"  FiLM form of public implementations: plain LoRA at C p = 0
    s = alpha / r

    x: (B, ..., in)    p: (B, d_p), one condition per sample, or (d_p,), one for the whole batch
    W: (out, in)   A: (r, in)   B: (out, r)   C, S: (r, d_p)   y: (B, ..., out)
    A x: (B, ..., r);  g(p), S p: (B, r), broadcast over x's middle dims (sequence, pixels, ...)

"Bilinear": the update is linear in x and linear in C p, multiplicative across the two.

Init. B = 0, so the layer equals its base at init. A is Kaiming-uniform(a=sqrt(5)) as in LoRA:
entries U(-1/sqrt(in), 1/sqrt(in)), rows of norm ~0.58. C and S get the same init over d_p:
U(-1/sqrt(d_p), 1/sqrt(d_p)), so for a standardised p every entry of C p (and S p) has std
~0.58 whatever d_p is: the gate starts at the same scale as A x. C must not start at zero: with
the linear gate, C = 0 and B = 0 make every gradient of A, B, C zero, and the layer never trains.
With a random C, B gets the gradient s * (dL/dy) ((A x) ⊙ C p)^T from the first step.

Merging. For one fixed p the layer is an ordinary linear layer:

    W(p) = W + s * B diag(g(p)) A        b(p) = b + s * B S p   (RSS only)

so ``merge(p)`` folds the update for that p into the base (RSS creates a frozen bias when the
base has none; ``unmerge()`` removes it again). The seed's "conditioned layers cannot be
merged" is true only across conditions. A batch of conditions cannot be merged into one weight.

Passing p. ``forward(x, p)`` is the primary path (explicit, torch.compile-friendly). With p=None
the layer takes the condition of the enclosing ``with lorakit.condition(p):`` block.

Merged forward. While merged for p0, ``forward(x)`` (no p, no context) returns base(x) at the
cost of a plain linear layer. Given any other p it stays exact: W and b already hold the update
for p0, so it adds only the difference s * B ((A x) ⊙ (g(p) - g(p0)) + S (p - p0)), which is
exactly zero when p = p0. Merging is for inference: A, B, C, S get no gradient from the part
folded into W.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..conditioning import current_condition
from ..validate import check_int
from .base import AdapterLinear, AdapterSpec, MergeStateError, add_low_rank, check_probability

GATES = ("linear", "one_plus")


def check_cond_dim(cond_dim: int) -> int:
    return check_int("cond_dim", cond_dim, what=" (the length of the condition p)")


class BilinearLoRALinear(AdapterLinear):
    """y = base(x) + (alpha / rank) * B ((A x) ⊙ g(p)), g(p) = C p or 1 + C p.

    A: (rank, in), B: (out, rank), C: (rank, cond_dim); see the module docstring for shapes,
    init and the merge protocol.
    """

    ADAPTER = AdapterSpec(
        "bilinear", init_kwargs={"cond_dim": "cond_dim", "rank": "rank", "alpha": "alpha", "dropout": "dropout_p",
                                 "gate": "gate_form"},
        condition="p", sizes={"cond_dim": 8},
        param_groups={"lora_A": "lora_A", "lora_B": "lora_B", "lora_C": "condition"},
        bench_peer=("lora", "lorakit"),
        trainable_params=lambda d_in, d_out, r, cond_dim: r * (d_in + d_out) + r * cond_dim)       # A, B, C

    # the (rank, cond_dim) matrices that read p; all get the same init
    condition_matrices: tuple[str, ...] = ("lora_C",)

    def __init__(self, base_layer: nn.Linear, cond_dim: int, rank: int = 4, alpha: float = 1.0,
                 dropout: float = 0.0, gate: str = "linear") -> None:
        super().__init__(base_layer, rank, alpha)
        self.cond_dim = check_cond_dim(cond_dim)
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        self.gate_form = gate
        self.dropout_p = check_probability("dropout", dropout)
        self.dropout = nn.Dropout(self.dropout_p) if self.dropout_p > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, **self._factory()))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, self.rank, **self._factory()))
        for name in self.condition_matrices:                    # C (and S): (r, d_p)
            setattr(self, name, nn.Parameter(torch.empty(self.rank, cond_dim, **self._factory())))
        # the condition merge(p) folded into the base, (cond_dim,); a buffer so .to() moves it
        self.register_buffer("merged_condition", None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # U(±1/sqrt(in)), rows ~0.58
        for name in self.condition_matrices:                    # U(±1/sqrt(d_p)): never zero
            nn.init.kaiming_uniform_(getattr(self, name), a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)                             # update starts at 0

    # --- the rank-space modulation ---------------------------------------------------------
    def gate(self, p: torch.Tensor) -> torch.Tensor:
        """g(p): (..., cond_dim) -> (..., rank), C p or 1 + C p."""
        cp = F.linear(p, self.lora_C)
        return cp if self.gate_form == "linear" else 1 + cp

    def _modulation(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(gate, shift) in rank space, each (..., rank); shift None: this layer has none."""
        return self.gate(p), None

    # --- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
        self._check_x(x)
        p = self._resolve_condition(x, p)
        if p is None:                                           # merged, no new condition
            return self.base_layer(x)
        gate, shift = self._modulation(p)                       # (B, r) or (r,)
        if self.merged:                                         # W, b hold p0's update already
            gate0, shift0 = self._modulation(self.merged_condition)
            gate = gate - gate0
            shift = None if shift is None else shift - shift0
        x2 = x.reshape(-1, self.in_features)                    # (N, in), N = B·...
        y = self.base_layer(x2)                                 # (N, out)
        h = F.linear(self.dropout(x), self.lora_A)              # (B, ..., r)
        z = h * _over_middle_dims(gate, h)                      # (B, ..., r)
        if shift is not None:
            z = z + _over_middle_dims(shift, h)
        y = add_low_rank(y, z.reshape(-1, self.rank), self.lora_B, self.scaling,  # y + s z Bᵀ
                         in_place=self._base_output_is_private())
        return y.view(*x.shape[:-1], self.out_features)         # (B, ..., out)

    # --- merging for one condition ---------------------------------------------------------
    def delta_weight(self, p: torch.Tensor | None = None) -> torch.Tensor:
        """s * B diag(g(p)) A, the (out, in) update for ONE condition p of shape (cond_dim,)."""
        g = self.gate(self._single_condition(p, "delta_weight"))   # (r,)
        return self.scaling * (self.lora_B * g) @ self.lora_A       # (out, r) * (r,) -> (out, in)

    def merge(self, p: torch.Tensor | None = None) -> None:
        """Fold the update for one condition p (cond_dim,) into the base weight (and bias)."""
        p0 = self._single_condition(p, "merge").detach().clone()
        super().merge(p0)
        self.merged_condition = p0

    def unmerge(self) -> None:
        super().unmerge()
        self.merged_condition = None

    def to_linear(self, p: torch.Tensor | None = None) -> nn.Linear:
        """A plain ``nn.Linear`` computing ``self(x, p)`` for one condition p; self is untouched.

        While merged, p may be omitted (or equal the merged condition).
        """
        if not self.merged:
            return super().to_linear(self._single_condition(p, "to_linear"))
        if p is not None and not torch.equal(self._single_condition(p, "to_linear"),
                                             self.merged_condition):
            raise MergeStateError(
                f"{type(self).__name__} is merged for another condition; call to_linear() "
                "without p for the merged one, or unmerge() first")
        return super().to_linear()

    # --- checking p ------------------------------------------------------------------------
    def _resolve_condition(self, x: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor | None:
        """The explicit p, else the enclosing ``lorakit.condition(p)``, else (merged) None."""
        if p is None:
            p = current_condition()
        if p is None:
            if self.merged:
                return None
            raise ValueError(
                f"{type(self).__name__} needs the condition p: call layer(x, p) with p of shape "
                f"(B, cond_dim) or (cond_dim,) = ({self.cond_dim},), or run the model inside "
                "`with lorakit.condition(p):`")
        self._check_condition(x, p)
        return p

    def _check_condition(self, x: torch.Tensor, p: torch.Tensor) -> None:
        d = self.cond_dim
        expected = f"({x.shape[0]}, {d}) or ({d},)" if x.dim() >= 2 else f"({d},)"
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"p must be a torch.Tensor of shape {expected}, got {type(p).__name__}")
        if p.dim() not in (1, 2) or p.shape[-1] != d:
            raise ValueError(
                f"p must have shape {expected}, i.e. (B, cond_dim) or (cond_dim,) with "
                f"cond_dim = {d}; got {tuple(p.shape)}")
        if p.dim() == 2 and (x.dim() < 2 or p.shape[0] != x.shape[0]):
            raise ValueError(
                f"p must have shape {expected}: one condition per sample of x "
                f"{tuple(x.shape)} or one for all; got {tuple(p.shape)}")
        if not p.is_floating_point() or p.dtype != x.dtype:
            raise TypeError(f"p must be a floating tensor with x's dtype {x.dtype}, got {p.dtype}")
        if p.device != x.device:
            raise ValueError(f"p must be on x's device {x.device}, got {p.device}")

    def _single_condition(self, p: torch.Tensor | None, what: str) -> torch.Tensor:
        """One condition vector, (cond_dim,) or (1, cond_dim), returned as (cond_dim,)."""
        d = self.cond_dim
        if p is None:
            raise ValueError(
                f"{what}() needs one condition vector p of shape ({d},): the update of a "
                "conditioned layer depends on p, so it is merged for one p at a time")
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"p must be a torch.Tensor of shape ({d},), got {type(p).__name__}")
        if tuple(p.shape) not in ((d,), (1, d)):
            many = (f"; a batch of {p.shape[0]} conditions has no single merged weight"
                    if p.dim() == 2 and p.shape[-1] == d else "")
            raise ValueError(
                f"{what}() needs one condition vector p of shape ({d},) (or (1, {d})), "
                f"got {tuple(p.shape)}{many}")
        w = self.lora_A
        if not p.is_floating_point() or p.dtype != w.dtype:
            raise TypeError(
                f"p must be a floating tensor with the layer's dtype {w.dtype}, got {p.dtype}")
        if p.device != w.device:
            raise ValueError(f"p must be on the layer's device {w.device}, got {p.device}")
        return p.reshape(d)

    def extra_repr(self) -> str:
        return f"cond_dim={self.cond_dim}, gate={self.gate_form}, " + super().extra_repr()


class RSSBilinearLoRA(BilinearLoRALinear):
    """y = base(x) + (alpha / rank) * B ((A x) ⊙ g(p) + S p): FiLM inside LoRA's rank space.

    S: (rank, cond_dim), no bias, random init like C (B = 0 keeps the layer at its base).
    The shift S p does not depend on x: through B it is a condition-dependent bias,
    s * B S p, which ``merge(p)`` folds into the base bias.
    """

    ADAPTER = AdapterSpec(
        "rss", init_kwargs={"cond_dim": "cond_dim", "rank": "rank", "alpha": "alpha", "dropout": "dropout_p",
                                 "gate": "gate_form"},
        condition="p", sizes={"cond_dim": 8},
        param_groups={"lora_A": "lora_A", "lora_B": "lora_B", "lora_C": "condition", "lora_S": "condition"},
        bench_peer=("bilinear", "lorakit"),
        trainable_params=lambda d_in, d_out, r, cond_dim: r * (d_in + d_out) + 2 * r * cond_dim)   # A, B, C, S
    condition_matrices = ("lora_C", "lora_S")

    def shift(self, p: torch.Tensor) -> torch.Tensor:
        """S p: (..., cond_dim) -> (..., rank)."""
        return F.linear(p, self.lora_S)

    def _modulation(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.gate(p), self.shift(p)

    def delta_bias(self, p: torch.Tensor | None = None) -> torch.Tensor:
        """s * B S p, the (out,) bias update for ONE condition p of shape (cond_dim,)."""
        return self.scaling * self.lora_B @ self.shift(self._single_condition(p, "delta_bias"))


def _over_middle_dims(v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(B, r) -> (B, 1, ..., 1, r) to broadcast over h's middle dims; (r,) broadcasts as is."""
    if v.dim() == 1:
        return v
    return v.reshape(v.shape[0], *[1] * (h.dim() - 2), v.shape[-1])
