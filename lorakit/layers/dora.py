"""DoRA: weight-decomposed low-rank adaptation (Liu et al., 2024).

The adapted weight W + s·BA is split into a direction and a learned per-row magnitude m:

    y = (m / n) ⊙ (W x + s · B(A x)) + b,    n_i = ‖W_i + s (BA)_i‖ (row norm, detached)

    x: (..., in)   W: (out, in)   A: (r, in)   B: (out, r)   m, n: (out,)   y: (..., out)

m starts at the row norms of W, so at init (B = 0) m / n = 1 and the layer equals its base. As
in the paper (§4.3) and PEFT, n is a constant in backward. The bias stays outside the rescaling.

n is computed without ever forming the (out × in) matrix W + s·BA:

    n_i² = ‖W_i‖² + 2s · (B ⊙ W Aᵀ)_i·1 + s² · (B (A Aᵀ) ⊙ B)_i·1

which costs one (out × in × r) product, W Aᵀ, and (out, r)-sized memory. ‖W_i‖² is cached and
recomputed only when W changes (and recomputed every call while torch.compile traces the layer:
the cache's key, W's data pointer and version, is Python state that dynamo cannot guard on).

Speed: x is flattened to (N, in); W x is one matmul, s·B(Ax) is accumulated into it by one
addmm (scaling as alpha), then one multiply by m / n and an in-place bias add: the adapter keeps
one (N, out) tensor (W x + s B A x, saved for the gradient of m) beyond the output. Without
dropout or autocast, ``fused.dora_linear`` does this with a backward that allocates one
(N, out) tensor (c ⊙ g) where autograd would allocate three.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    AdapterLinear,
    AdapterSpec,
    MergeStateError,
    PeftFlavour,
    add_low_rank,
    check_positive,
    check_probability,
    compiling,
)
from .fused import autocast_active, dora_linear


class DoRALinear(AdapterLinear):
    """y = (m / ‖W + s B A‖_row) ⊙ (W x + s B A x) + b, with the norm detached."""

    ADAPTER = AdapterSpec(
        "dora", init_kwargs={"rank": "rank", "alpha": "alpha", "dropout": "dropout_p", "eps": "eps"},
        param_groups={"lora_A": "lora_A", "lora_B": "lora_B", "magnitude": "magnitude"},
        peft=PeftFlavour({"use_dora": True}, {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B",
                                              "lora_magnitude_vector": "magnitude"}),
        bench_peer=("dora", "peft"),
        trainable_params=lambda d_in, d_out, r: r * (d_in + d_out) + d_out)     # A, B, m

    def __init__(self, base_layer: nn.Linear, rank: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0, eps: float = 1e-6) -> None:
        super().__init__(base_layer, rank, alpha)
        self.dropout_p = check_probability("dropout", dropout)
        self.dropout = nn.Dropout(self.dropout_p) if self.dropout_p > 0 else nn.Identity()
        self.eps = check_positive("eps", eps)
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, **self._factory()))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, self.rank, **self._factory()))
        self.magnitude = nn.Parameter(torch.empty(self.out_features, **self._factory()))
        self._w_sq_cache: tuple[tuple, torch.Tensor] | None = None
        self._merge_norm: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)
        with torch.no_grad():
            self.magnitude.copy_(self._weight_sq_norm().sqrt())   # m = ‖W_i‖

    # --- the detached row norm n = ‖W + s B A‖_row ------------------------------------------
    def _weight_sq_norm(self) -> torch.Tensor:
        """‖W_i‖² in float32, (out,), cached while W is unchanged."""
        W = self.base_layer.weight
        if compiling():  # no Python-side cache inside a compiled graph: one O(out·in) pass
            with torch.no_grad():
                return torch.linalg.vector_norm(W, dim=1, dtype=torch.float32).square()
        key = (W.data_ptr(), W._version, W.dtype, W.device)
        if self._w_sq_cache is None or self._w_sq_cache[0] != key:
            with torch.no_grad():
                sq = torch.linalg.vector_norm(W, dim=1, dtype=torch.float32).square()
            self._w_sq_cache = (key, sq)
        return self._w_sq_cache[1]

    @torch.no_grad()
    def weight_norm(self) -> torch.Tensor:
        """n_i = ‖W_i + s (BA)_i‖ in float32, shape (out,), never forming BA."""
        W, A, B, s = self.base_layer.weight, self.lora_A, self.lora_B, self.scaling
        # ‖W_i + s(BA)_i‖² = ‖W_i‖² + 2s <W_i, (BA)_i> + s² ‖(BA)_i‖²
        #                  = ‖W_i‖² + <B_i, 2s (W Aᵀ)_i + s² (B A Aᵀ)_i>
        WAt = (W @ A.T).float()                               # (out, r)
        Bf = B.float()                                        # (out, r)
        AAt = (A @ A.T).float()                               # (r, r)
        M = torch.addmm(WAt, Bf, AAt, beta=2 * s, alpha=s * s)  # (out, r)
        n_sq = torch.linalg.vecdot(Bf, M).add_(self._weight_sq_norm())   # (out,)
        return n_sq.clamp_min_(0).sqrt_().clamp_min_(self.eps)

    def scale(self, norm: torch.Tensor | None = None) -> torch.Tensor:
        """c = m / n in float32, (out,), the row factor on W x + s B A x; gradients reach m only.

        ``norm``: a row norm n to use instead of the current one (``unmerged_weight`` passes
        the n of merge time).
        """
        n = self.weight_norm() if norm is None else norm
        return self.magnitude.float() / n

    # --- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_x(x)
        if self.merged:
            return self.base_layer(x)
        return rescaled_forward(self, x, self.scale().to(x.dtype), None)

    # --- the base's merge protocol, rescaling rows instead of adding ----------------------
    @torch.no_grad()
    def merged_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W' = c ⊙_row (W + s B A) in W's dtype, the row norm n it used, for unmerge)."""
        n = self.weight_norm()
        c = self.scale(n)
        if (c == 0).any():
            raise MergeStateError("refusing to merge: a row factor c is 0, so unmerge() could not "
                                  "recover W; the base weight was left unchanged")
        W = self.base_layer.weight
        new = c[:, None] * (W.float() + self.scaling * (self.lora_B @ self.lora_A).float())
        return new.to(W.dtype), n

    @torch.no_grad()
    def unmerged_weight(self, merged: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """W = W' / c − s B A, with c computed from the n of merge time."""
        c = self.scale(norm)[:, None]
        return (merged.float() / c - self.scaling * (self.lora_B @ self.lora_A).float()).to(merged.dtype)

    def delta_weight(self) -> torch.Tensor:
        """W' − W: what merging changes (not additive in the update: W' rescales W's rows)."""
        return self.merged_weight()[0] - self.base_layer.weight


def rescaled_forward(layer: DoRALinear, x: torch.Tensor, scale: torch.Tensor,
                      factor: torch.Tensor | None) -> torch.Tensor:
    """scale ⊙ (W x + s·B(f ⊙ A x)) + b, the forward of DoRA and HyLoRADA (v1, v2).

    x (..., in); scale (out,), the row factor (m / n for DoRA); factor f (..., 1) or None (= 1),
    HyLoRADA v2's per-position factor, applied in rank space: f ⊙ (A x) is (N, r), so neither
    forward nor f's gradient touches an (N, out) tensor for it. With dropout active (PEFT's
    rule) the rescaling acts on the dropped-out input: base(x) + (scale − 1) ⊙ W x̃ + scale ⊙ s·B(f ⊙ A x̃).
    """
    W, b = layer.base_layer.weight, layer.base_layer.bias
    x2 = x.reshape(-1, layer.in_features)                      # (N, in)
    f = None if factor is None else factor.reshape(-1, 1)      # (N, 1)
    if not (layer.training and layer.dropout_p > 0) and not autocast_active(x.device.type) \
            and not compiling() and all(t is None or t.dtype == x.dtype
                    for t in (W, b, layer.lora_A, layer.lora_B, scale, f)):
        # the same, with a backward that allocates one (N, out) tensor instead of three
        y = dora_linear(x2, W, b, layer.lora_A, layer.lora_B, layer.scaling, scale, f)
        return y.view(*x.shape[:-1], layer.out_features)
    xd = layer.dropout(x2)
    h = F.linear(xd, layer.lora_A)                             # (N, r)
    if f is not None:
        h = h * f                                              # (N, r) * (N, 1)
    if xd is x2:     # no dropout active: one matmul with W
        z = add_low_rank(F.linear(x2, W), h, layer.lora_B, layer.scaling, in_place=True)
        y = z * scale.to(z.dtype)                              # (N, out); z saved for dL/dm
        if b is not None:       # in z's dtype, as nn.Linear's output is under autocast
            y = y.add_(b.to(y.dtype))                          # (N, out)
    else:
        lora = F.linear(h, layer.lora_B) * layer.scaling       # (N, out)
        c = scale.to(lora.dtype)
        y = layer.base_layer(x2) + (c - 1) * F.linear(xd, W) + c * lora
    return y.view(*x.shape[:-1], layer.out_features)
