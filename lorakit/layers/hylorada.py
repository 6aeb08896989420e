"""HyLoRADA (seed 003): DoRA with an orthogonal A, a gated magnitude and a LoRA residual path.

v1, ``HyLoRADALinear``. With z = W x + s·B(A x) (s = alpha / r) and the detached row norm
n_i = ‖W_i + s (BA)_i‖ computed as in :class:`~lorakit.layers.dora.DoRALinear`:

    γ     = σ(g)                               the magnitude gate, ONE scalar per layer
    m_eff = m_init + γ (m − m_init)            = γ·m + (1 − γ)·m_init, the seed's form
    β     = σ(b_res)                           the residual blend, one scalar per layer
    DoRA(x) = (m_eff / n) ⊙ z + b              LoRA(x) = z + b         (same A, B, same z)
    y     = (1 − β)·DoRA(x) + β·LoRA(x)  =  c ⊙ z + b,    c = 1 + (1 − β)(m_eff / n − 1)

    x: (..., in)   W: (out, in)   A: (r, in)   B: (out, r)   m, m_init, n, c: (out,)
    g, b_res: ()   y: (..., out)

The bias stays outside the rescaling and the blend (both paths add the same b). c is computed
in float32 from the formula above, which equals (1 − β)·m_eff/n + β and is exactly 1 at init
(float32 weights; in fp16/bf16 up to the rounding of m).

Init. A has orthonormal rows (``nn.init.orthogonal_``: each row has norm 1, where LoRA's
Kaiming-uniform rows have norm ≈ 0.58 — compare the two at equal scale); B = 0; m and the frozen
buffer m_init both start at the row norms ‖W_i‖, so m_eff / n = 1, c = 1 and the layer equals its
base at init. (The seed starts m at ones, which changes the function unless every row of W has
norm 1 — fixed here.) The gate logit starts at ``gate_init`` (0: γ = 0.5, as in the seed) and the
blend logit at ``residual_init``. The seed's default ``residual_weight = 0.1`` is a *logit*: β
starts at σ(0.1) ≈ 0.525, not 0.1 — the default here keeps the seed's 0.1 so that experiments
reproduce what the seed ran; pass ``residual_init=math.log(0.1 / 0.9)`` ≈ −2.197 for β = 0.1.

Honest notes on the seed's claims:

* The gate is one learned scalar per layer, not input-dependent as the seed's prose says.
* ∂m_eff/∂g = σ'(g)(m − m_init) is ZERO while m = m_init, i.e. at init: g receives no gradient
  until m has moved away from m_init (one optimiser step is enough).
* m's gradient is scaled by γ(1 − β) ≈ 0.24 at init relative to DoRA's, and a change of m
  moves the output by that same factor less: for the same learning rate the learned magnitude
  acts about 4× more slowly than DoRA's with Adam (which normalises the gradient's scale) and
  about 18× with SGD.

Trainable parameters (A, B, m, g, b_res): r(in + out) + out + 2 — 15,234 at in = out = 896,
r = 8; 13,058 at 768. m_init is a buffer, not counted (saved with the adapter's state).

Merging. For every x the layer is linear with weight W' = c ⊙_row (W + s·BA) and bias b, so
``merge()`` writes W' into the base and caches n; ``unmerge()`` restores
W = W' / c − s·BA with that cached n. Merging forms the (out × in) matrix; forward never does.

v2, ``HyLoRADAv2Linear`` adds the seed's structure-conditioned scaling. For a structure prior
P of shape (B, T, structure_dim) that goes with x of shape (B, T, in):

    f_t = 0.5 + σ(w · P_t)     ∈ (0.5, 1.5), one factor per position t; w: (structure_dim,)
    z_t = W x_t + f_t · s·B(A x_t)           the factor scales the adapter's update term only,
    y_t = c ⊙ z_t + b                         before the DoRA rescaling and the blend

with c exactly as in v1: n (hence c) is a per-row norm of the weight W + s·BA, the same for
every token, and never depends on f or on the position. w (``scale_from_structure``, a
bias-free ``nn.Linear(structure_dim, 1)``) starts at zero, so f = 1 and v2 starts equal to v1;
without a prior (``structure_prior=None`` outside any ``lorakit.conditioning.structure_prior``
block — how a model hands one prior to all its v2 layers) v2 computes exactly v1. v2 adds structure_dim
trainable parameters (32 by default: 13,090 at 768, r = 8).

A per-position factor cannot be folded into one weight matrix: ``merge()`` folds the f = 1
(no-prior) function, and calling a merged v2 layer *with* a prior raises ``MergeStateError``
(unmerge first). Without a prior a merged layer is the plain merged linear layer.

Dropout (default 0) follows DoRA/PEFT: the dropped-out input feeds the adapter and the part of
W x that gets rescaled, y = base(x) + (c − 1) ⊙ W x̃ + c ⊙ f·s·B(A x̃), x̃ = dropout(x).
"""
from __future__ import annotations

import torch
from torch import nn

from ..conditioning import current_structure_prior
from ..validate import check_int, check_real
from .base import AdapterSpec, MergeStateError
from .dora import DoRALinear, rescaled_forward


def _check_logit(name: str, value: float) -> float:
    return check_real(name, value, what=" (a sigmoid input, a logit)")


class HyLoRADALinear(DoRALinear):
    """y = (1 − β)·DoRA(x) + β·LoRA(x) = c ⊙ (W x + s B A x) + b; see the module docstring.

    Args:
        base_layer: the pretrained ``nn.Linear`` (frozen).
        rank, alpha: r and alpha, scaling s = alpha / r.
        dropout: dropout on the adapter's input (0 by default).
        gate_init: initial gate logit g; γ = σ(g) (0 → 0.5, the seed's value).
        residual_init: initial blend logit; β = σ(residual_init) (the seed's 0.1 → β ≈ 0.525).
        eps: floor of the row norm n.

    Parameters (seed names): ``lora_A`` (r, in), ``lora_B`` (out, r), ``magnitude`` m (out,),
    ``magnitude_gate`` g (), ``residual_weight`` b_res (); buffer ``magnitude_init`` (out,).
    """

    ADAPTER = AdapterSpec(
        "hylorada",
        init_kwargs={"rank": "rank", "alpha": "alpha", "dropout": "dropout_p", "gate_init": "gate_init",
                     "residual_init": "residual_init", "eps": "eps"},
        param_groups={"lora_A": "lora_A", "lora_B": "lora_B", "magnitude": "magnitude",
                      "magnitude_gate": "gates", "residual_weight": "gates"},
        bench_peer=("dora", "lorakit"),
        trainable_params=lambda d_in, d_out, r: r * (d_in + d_out) + d_out + 2)   # A, B, m, g, b_res

    def __init__(self, base_layer: nn.Linear, rank: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0, *, gate_init: float = 0.0, residual_init: float = 0.1,
                 eps: float = 1e-6) -> None:
        gate_init = _check_logit("gate_init", gate_init)
        residual_init = _check_logit("residual_init", residual_init)
        super().__init__(base_layer, rank, alpha, dropout, eps)   # A, B, m (reset_parameters below)
        self.gate_init, self.residual_init = gate_init, residual_init
        f = self._factory()
        self.magnitude_gate = nn.Parameter(torch.empty((), **f))   # g: one scalar per layer
        self.residual_weight = nn.Parameter(torch.empty((), **f))  # b_res: β = σ(b_res)
        self.register_buffer("magnitude_init", torch.empty(self.out_features, **f))
        self._reset_extras()

    def reset_parameters(self) -> None:
        """A orthogonal (rows orthonormal), B = 0, m = m_init = ‖W_i‖, logits at their inits."""
        with torch.no_grad():
            # QR has no fp16/bf16 kernels: draw in float32, then round to the layer's dtype
            a = torch.empty(self.lora_A.shape, dtype=torch.float32, device=self.lora_A.device)
            self.lora_A.copy_(nn.init.orthogonal_(a))
            nn.init.zeros_(self.lora_B)
            self.magnitude.copy_(self._weight_sq_norm().sqrt())
        if "magnitude_gate" in self._parameters:  # DoRALinear.__init__ calls this before they exist
            self._reset_extras()

    @torch.no_grad()
    def _reset_extras(self) -> None:
        self.magnitude_init.copy_(self.magnitude)
        self.magnitude_gate.fill_(self.gate_init)
        self.residual_weight.fill_(self.residual_init)

    # --- the scalars and the per-row factor ------------------------------------------------
    def gate(self) -> torch.Tensor:
        """γ = σ(g), a float32 scalar (the same for every input)."""
        return torch.sigmoid(self.magnitude_gate.float())

    def blend(self) -> torch.Tensor:
        """β = σ(b_res), a float32 scalar: the weight of the LoRA path."""
        return torch.sigmoid(self.residual_weight.float())

    def effective_magnitude(self) -> torch.Tensor:
        """m_eff = m_init + γ (m − m_init), float32, (out,)."""
        m0 = self.magnitude_init.float()
        return m0 + self.gate() * (self.magnitude.float() - m0)

    def scale(self, norm: torch.Tensor | None = None) -> torch.Tensor:
        """c = 1 + (1 − β)(m_eff / n − 1), float32, (out,): the row factor on W x + s B A x.

        ``norm``: a row norm n to use instead of the current one (``unmerge`` passes the n
        cached at merge time). Gradients reach m, g and b_res; n is detached.
        """
        n = self.weight_norm() if norm is None else norm
        return 1 + (1 - self.blend()) * (self.effective_magnitude() / n - 1)

    # --- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_x(x)
        return self._forward(x, None)

    def _forward(self, x: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
        """c ⊙ (W x + factor · s B(A x)) + b; factor (..., 1) or None (= 1). x already checked."""
        if self.merged:
            return self.base_layer(x)
        return rescaled_forward(self, x, self.scale().to(x.dtype), factor)

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", gate_init={self.gate_init:g}, residual_init={self.residual_init:g}")


class HyLoRADAv2Linear(HyLoRADALinear):
    """v1 with a per-position factor f = 0.5 + σ(w · prior) on the update term s B A x.

    ``forward(x, structure_prior=None)``: x (B, T, in) (any (..., in)), structure_prior
    (B, T, structure_dim) (in general x.shape[:-1] + (structure_dim,)), or None: then the prior
    of an enclosing ``lorakit.conditioning.structure_prior(prior)`` block (how a whole model
    hands one prior to all its v2 layers), and outside any block exactly v1.
    Adds ``scale_from_structure`` = w, a bias-free ``nn.Linear(structure_dim, 1)`` initialised
    to zero (f = 1). See the module docstring for the equation and the merge rule.
    """

    ADAPTER = AdapterSpec(
        "hylorada_v2",
        init_kwargs={"rank": "rank", "alpha": "alpha", "structure_dim": "structure_dim", "dropout": "dropout_p",
                     "gate_init": "gate_init", "residual_init": "residual_init", "eps": "eps"},
        condition="structure_prior", sizes={"structure_dim": 32},
        param_groups={"lora_A": "lora_A", "lora_B": "lora_B", "magnitude": "magnitude",
                      "magnitude_gate": "gates", "residual_weight": "gates", "scale_from_structure": "structure"},
        bench_peer=("hylorada", "lorakit"),
        trainable_params=lambda d_in, d_out, r, structure_dim: r * (d_in + d_out) + d_out + 2 + structure_dim)

    def __init__(self, base_layer: nn.Linear, rank: int = 8, alpha: float = 16.0,
                 structure_dim: int = 32, dropout: float = 0.0, *, gate_init: float = 0.0,
                 residual_init: float = 0.1, eps: float = 1e-6) -> None:
        check_int("structure_dim", structure_dim)
        super().__init__(base_layer, rank, alpha, dropout, gate_init=gate_init,
                         residual_init=residual_init, eps=eps)
        self.structure_dim = structure_dim
        self.scale_from_structure = nn.Linear(structure_dim, 1, bias=False, **self._factory())
        nn.init.zeros_(self.scale_from_structure.weight)   # f = 1: starts equal to v1

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if "scale_from_structure" in self._modules:
            nn.init.zeros_(self.scale_from_structure.weight)

    def position_factor(self, structure_prior: torch.Tensor) -> torch.Tensor:
        """f = 0.5 + σ(w · prior): (..., structure_dim) -> (..., 1), values in (0.5, 1.5)."""
        w = self.scale_from_structure.weight
        return 0.5 + torch.sigmoid(self.scale_from_structure(structure_prior.to(w.dtype)))

    def forward(self, x: torch.Tensor, structure_prior: torch.Tensor | None = None) -> torch.Tensor:
        self._check_x(x)
        if structure_prior is None:       # inside a model: the enclosing structure_prior(...) block
            structure_prior = current_structure_prior()
        if structure_prior is None:
            return self._forward(x, None)
        self._check_prior(x, structure_prior)
        if self.merged:
            raise MergeStateError(
                f"{type(self).__name__} is merged, and a per-position structure factor cannot be "
                "folded into one weight matrix: unmerge() before calling it with a "
                "structure_prior (a merged layer computes the no-prior function)")
        return self._forward(x, self.position_factor(structure_prior).to(x.dtype))

    def _check_prior(self, x: torch.Tensor, prior: torch.Tensor) -> None:
        expected = (*x.shape[:-1], self.structure_dim)
        if not isinstance(prior, torch.Tensor):
            raise TypeError(f"structure_prior must be a torch.Tensor of shape {expected}, got "
                            f"{type(prior).__name__}")
        if tuple(prior.shape) != expected:
            raise ValueError(
                f"structure_prior must have shape {expected}, i.e. x's leading dims "
                f"{tuple(x.shape[:-1])} (one prior per position, e.g. (B, T)) + structure_dim = "
                f"{self.structure_dim}; got {tuple(prior.shape)}")
        if not prior.is_floating_point():
            raise TypeError(f"structure_prior must be a floating tensor, got {prior.dtype}")
        if prior.device != x.device:
            raise ValueError(f"structure_prior must be on x's device {x.device}, got {prior.device}")

    def extra_repr(self) -> str:
        return f"structure_dim={self.structure_dim}, " + super().extra_repr()
