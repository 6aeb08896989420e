"""Small offline data sets for the conditioning notebooks (03, 04). Nothing is downloaded, ever.

A simulated plant with operating conditions
-------------------------------------------
``OperatingSystem`` is a family of linear systems whose response depends smoothly but
non-linearly on an operating condition p (think temperature and load, scaled to [-1, 1]):

    y = W(p) x + b(p) + noise
    W(p) = W0 + U diag(g(p)) Vᵀ          K internal modes whose gains change with p
    g(p) = gain · tanh(G (p - p_nom))     gains saturate away from the nominal condition
    b(p) = b0 + D (p - p_nom)             every sensor's offset drifts with p

    x: (in_dim,) inputs ~ N(0, I)       p: (cond_dim,)      y: (out_dim,)
    W0: (out, in)   b0: (out,)   U: (out, K), V: (in, K) orthonormal columns
    G: (K, cond_dim)   D: (out, cond_dim)   noise ~ N(0, noise²) per output

The *pretrained* model is the plant at its nominal (calibration) condition p_nom: the
``nn.Linear`` with weight W0 and bias b0 (``pretrained()``). Adapting it to other conditions
needs a condition-dependent update of rank K in the weight (the modes) plus a condition-
dependent offset in output space (the drift D, rank ≤ cond_dim): across all conditions the
true update spans at most K + cond_dim output directions (``true_update``).

``nominal`` places the calibration point in p's coordinates. With the default p_nom = 0 the true
update vanishes at p = 0, exactly like a gate C p does; with p_nom ≠ 0 (p measured from some
other origin, say 0 °C instead of the calibration temperature) it does not — notebook 03 uses
both to test the seed's "self-regularising" claim.

Everything is deterministic: the plant is fixed by ``seed``; samples are drawn from a
``torch.Generator`` seeded by the caller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..validate import check_int


def _check_condition(p: torch.Tensor, cond_dim: int, what: str = "p") -> torch.Tensor:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (N, {cond_dim}) or ({cond_dim},), "
                        f"got {type(p).__name__}")
    if p.dim() not in (1, 2) or p.shape[-1] != cond_dim:
        raise ValueError(f"{what} must have shape (N, {cond_dim}) or ({cond_dim},), "
                         f"got {tuple(p.shape)}")
    if not p.is_floating_point():
        raise TypeError(f"{what} must be a floating tensor, got {p.dtype}")
    if not torch.isfinite(p).all():
        raise ValueError(f"{what} contains NaN or Inf")
    return p


def _orthonormal(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g))
    return q


@dataclass
class OperatingSystem:
    """A linear plant whose response depends on an operating condition p (see module docstring).

    Args:
        in_dim, out_dim: sizes of x and y.
        cond_dim: size of the operating condition p.
        modes: K, the number of internal modes whose gains depend on p.
        gain: the largest gain change of a mode (tanh saturates at ±gain).
        drift: scale of the sensors' offset drift D (per unit of p).
        noise: standard deviation of the measurement noise.
        nominal: p_nom, the calibration condition (None: the origin).
        seed: fixes the plant (W0, b0, U, V, G, D).
    """
    in_dim: int = 16
    out_dim: int = 12
    cond_dim: int = 2
    modes: int = 2
    gain: float = 1.5
    drift: float = 0.5
    noise: float = 0.05
    nominal: tuple[float, ...] | None = None
    seed: int = 0
    W0: torch.Tensor = field(init=False, repr=False)
    b0: torch.Tensor = field(init=False, repr=False)
    U: torch.Tensor = field(init=False, repr=False)
    V: torch.Tensor = field(init=False, repr=False)
    G: torch.Tensor = field(init=False, repr=False)
    D: torch.Tensor = field(init=False, repr=False)
    p_nom: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim", "cond_dim", "modes", "seed"):
            check_int(name, getattr(self, name), minimum=0 if name == "seed" else 1)
        if self.modes > min(self.in_dim, self.out_dim):
            raise ValueError(f"modes must be <= min(in_dim, out_dim) = "
                             f"{min(self.in_dim, self.out_dim)}, got {self.modes}")
        for name in ("gain", "drift", "noise"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        nominal = (0.0,) * self.cond_dim if self.nominal is None else tuple(self.nominal)
        if len(nominal) != self.cond_dim:
            raise ValueError(f"nominal must have cond_dim = {self.cond_dim} entries, got {len(nominal)}")
        g = torch.Generator().manual_seed(self.seed)
        self.W0 = torch.randn(self.out_dim, self.in_dim, generator=g) / math.sqrt(self.in_dim)
        self.b0 = 0.1 * torch.randn(self.out_dim, generator=g)
        self.U = _orthonormal(self.out_dim, self.modes, g)
        self.V = _orthonormal(self.in_dim, self.modes, g)
        self.G = torch.randn(self.modes, self.cond_dim, generator=g) * 1.5 / math.sqrt(self.cond_dim)
        self.D = torch.randn(self.out_dim, self.cond_dim, generator=g) * self.drift / math.sqrt(self.cond_dim)
        self.p_nom = torch.tensor(nominal, dtype=torch.float32)

    # --- the plant ---------------------------------------------------------------------------
    def gains(self, p: torch.Tensor) -> torch.Tensor:
        """g(p): (N, cond_dim) -> (N, K), or (cond_dim,) -> (K,)."""
        p = _check_condition(p, self.cond_dim)
        return self.gain * torch.tanh((p - self.p_nom) @ self.G.T)

    def weight(self, p: torch.Tensor) -> torch.Tensor:
        """W(p) for one condition p (cond_dim,): (out, in)."""
        p = _check_condition(p, self.cond_dim)
        if p.dim() != 1:
            raise ValueError(f"weight(p) takes one condition of shape ({self.cond_dim},), got {tuple(p.shape)}")
        return self.W0 + (self.U * self.gains(p)) @ self.V.T

    def bias(self, p: torch.Tensor) -> torch.Tensor:
        """b(p): (N, cond_dim) -> (N, out), or (cond_dim,) -> (out,)."""
        p = _check_condition(p, self.cond_dim)
        return self.b0 + (p - self.p_nom) @ self.D.T

    def respond(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Noise-free response: x (N, in), p (N, cond_dim) -> y (N, out)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.in_dim:
            raise ValueError(f"x must have shape (N, {self.in_dim}), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        p = _check_condition(p, self.cond_dim)
        if p.dim() != 2 or p.shape[0] != x.shape[0]:
            raise ValueError(f"p must have shape ({x.shape[0]}, {self.cond_dim}), one condition per "
                             f"row of x, got {tuple(p.shape)}")
        h = x @ self.V                                          # (N, K)
        return x @ self.W0.T + (h * self.gains(p)) @ self.U.T + self.bias(p)

    def sample(self, conditions: torch.Tensor, per_condition: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``per_condition`` noisy measurements at each of the conditions (M, cond_dim).

        Returns x (M·n, in), p (M·n, cond_dim), y (M·n, out), grouped by condition.
        """
        conditions = _check_condition(conditions, self.cond_dim, "conditions")
        if conditions.dim() != 2:
            raise ValueError(f"conditions must have shape (M, {self.cond_dim}), got {tuple(conditions.shape)}")
        check_int("per_condition", per_condition)
        p = conditions.repeat_interleave(per_condition, dim=0)
        x = torch.randn(p.shape[0], self.in_dim, generator=generator)
        y = self.respond(x, p) + self.noise * torch.randn(p.shape[0], self.out_dim, generator=generator)
        return x, p, y

    # --- the pretrained model and the truth an adapter should find --------------------------
    def pretrained(self) -> nn.Linear:
        """The model calibrated at the nominal condition: weight W0, bias b0, frozen."""
        layer = nn.Linear(self.in_dim, self.out_dim)
        with torch.no_grad():
            layer.weight.copy_(self.W0)
            layer.bias.copy_(self.b0)
        return layer.requires_grad_(False)

    def true_update(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ΔW(p), Δb(p)) = (W(p) - W0, b(p) - b0) for one condition p (cond_dim,)."""
        return self.weight(p) - self.W0, self.bias(p) - self.b0


def condition_splits(cond_dim: int = 2, n_train: int = 16, n_heldout: int = 12, seed: int = 0,
                     train_radius: float = 1.0, extrapolate_to: float = 1.5) -> dict[str, torch.Tensor]:
    """Operating conditions for training and for held-out evaluation, each (M, cond_dim).

    - "train": n_train conditions spread evenly over the box [-train_radius, train_radius]^d
      (a scrambled Sobol sequence, so that no corner of the range goes unseen);
    - "interpolate": n_heldout *other* conditions from the same box (unseen, but inside the
      range the adapter was trained on);
    - "extrapolate": n_heldout conditions outside the box, up to extrapolate_to in each
      coordinate (beyond the training range).
    """
    for name, v in (("cond_dim", cond_dim), ("n_train", n_train), ("n_heldout", n_heldout)):
        check_int(name, v)
    if not 0 < train_radius < extrapolate_to:
        raise ValueError(f"need 0 < train_radius < extrapolate_to, got {train_radius}, {extrapolate_to}")
    g = torch.Generator().manual_seed(seed)
    box = lambda n: (2 * torch.rand(n, cond_dim, generator=g) - 1) * train_radius  # noqa: E731
    sobol = torch.quasirandom.SobolEngine(cond_dim, scramble=True, seed=seed)
    train = (2 * sobol.draw(n_train) - 1) * train_radius
    inside = box(n_heldout)
    # outside: a random direction, pushed so the largest coordinate lies in (radius, extrapolate_to]
    d = torch.randn(n_heldout, cond_dim, generator=g)
    d = d / d.abs().amax(dim=1, keepdim=True)
    r = train_radius + (extrapolate_to - train_radius) * (0.2 + 0.8 * torch.rand(n_heldout, 1, generator=g))
    return {"train": train, "interpolate": inside, "extrapolate": d * r}


__all__ = ["OperatingSystem", "condition_splits"]
