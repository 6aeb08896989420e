"""What every lorakit adapter shares: argument checks, a frozen base, the merge protocol.

An adapter wraps a frozen ``nn.Linear`` (weight W of shape (out, in), optional bias b) and adds
a low-rank update. Subclasses implement ``delta_weight()`` (the (out, in) matrix that merging
adds to W) and ``forward``. The protocol, in the spirit of loralib's ``layers.py``:

    merge():   W <- W + delta_weight()     (refuses non-finite values, refuses twice)
    unmerge(): W <- W - delta_weight()     (refuses when not merged)
    forward:   merged -> base(x) only, so the update is never counted twice
"""
from __future__ import annotations

import math

import torch
from torch import nn


class MergeStateError(ValueError):
    """Merging a merged layer, unmerging an unmerged one, or a merge that would write NaN/Inf."""


def check_rank(rank: int, in_features: int, out_features: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"rank must be an int, got {type(rank).__name__} ({rank!r})")
    limit = min(in_features, out_features)
    if not 1 <= rank <= limit:
        raise ValueError(
            f"rank must be between 1 and min(in_features, out_features) = {limit} "
            f"for a {in_features}->{out_features} layer, got {rank}")
    return rank


def check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


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

    # --- the merge protocol ----------------------------------------------------------------
    def delta_weight(self) -> torch.Tensor:
        """The (out, in) matrix that ``merge()`` adds to the base weight."""
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight: W <- W + delta_weight()."""
        if self.merged:
            raise MergeStateError(f"{type(self).__name__} is already merged; unmerge() first")
        delta = self.delta_weight()
        if not torch.isfinite(delta).all():
            raise MergeStateError(
                "refusing to merge: the adapter update contains NaN or Inf; the base weight "
                "was left unchanged")
        self.base_layer.weight += delta.to(self.base_layer.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge()``: W <- W - delta_weight()."""
        if not self.merged:
            raise MergeStateError(f"{type(self).__name__} is not merged; nothing to unmerge")
        self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
        self.merged = False

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A new plain ``nn.Linear`` computing this layer's function; this layer is untouched."""
        base = self.base_layer
        weight = base.weight if self.merged else base.weight + self.delta_weight().to(base.weight.dtype)
        if not torch.isfinite(weight).all():
            raise MergeStateError("refusing to merge: the merged weight contains NaN or Inf")
        out = nn.Linear(self.in_features, self.out_features, bias=base.bias is not None,
                        **self._factory())
        out.weight.copy_(weight)
        if base.bias is not None:
            out.bias.copy_(base.bias)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}"
