"""Periodic time series for HyLoRADA v2's temporal prior (notebook 07), generated from a seed.

**Periodic series.** ``seasonal(t, components)`` is a sum of sinusoids a·sin(2π t / P + φ) of the
timestamps t (any unit: hours, say, with P = 24 for a daily cycle), ``periodic_series`` adds
seeded Gaussian noise. ``PeriodicRegression`` is a regression task whose *adaptation strength*
follows a seasonal envelope — what v2's structure-conditioned scaling can express and a v1
adapter cannot:

    y_t = W0 x_t + b0 + f(t)·ΔW x_t + ε,   f(t) = 1 + seasonal(t),   rank(ΔW) = r

with the pretrained layer ``nn.Linear(W0, b0)``, covariates x_t ~ N(0, I) and noise ε. Data are
consecutive windows of one long series; the test windows come *after* the training windows in
time, so a model must extrapolate the cycle, not interpolate it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

__all__ = ["SeasonalComponent", "seasonal", "periodic_series", "PeriodicRegression"]


@dataclass(frozen=True)
class SeasonalComponent:
    """a·sin(2π t / period + phase)."""
    period: float
    amplitude: float = 1.0
    phase: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.period) and self.period > 0):
            raise ValueError(f"period must be finite and > 0, got {self.period}")


def seasonal(timestamps: torch.Tensor, components: Sequence[SeasonalComponent]) -> torch.Tensor:
    """Σ a_k sin(2π t / P_k + φ_k), in float64, shaped like ``timestamps``.

    The phase t / P mod 1 is taken in float64, so timestamps far from 0 keep their precision.
    """
    t = torch.as_tensor(timestamps, dtype=torch.float64)
    out = torch.zeros_like(t)
    for c in components:
        ratio = t / c.period
        out = out + c.amplitude * torch.sin(2 * math.pi * (ratio - ratio.floor()) + c.phase)
    return out


def periodic_series(timestamps: torch.Tensor, components: Sequence[SeasonalComponent],
                    noise: float = 0.0, level: float = 0.0, seed: int = 0) -> torch.Tensor:
    """level + seasonal(t) + N(0, noise²), float64, shaped like ``timestamps`` (seeded)."""
    t = torch.as_tensor(timestamps, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(t.shape, generator=g, dtype=torch.float64) * noise
    return level + seasonal(t, components) + eps


class PeriodicRegression:
    """y_t = W0 x_t + b0 + f(t) ΔW x_t + ε with f(t) = 1 + seasonal(t): see the module docstring.

    Args:
        in_features, out_features: sizes of x and y.
        rank: rank of the shift ΔW (the adapter's job).
        components: the envelope's seasonal components; default one daily cycle,
            ``SeasonalComponent(24.0, 0.4)``, so f(t) ∈ [0.6, 1.4] — inside v2's (0.5, 1.5).
        shift_scale: ‖ΔW‖ relative to ‖W0‖ (Frobenius).
        noise: standard deviation of ε.
        windows, length: the series is ``windows`` consecutive windows of ``length`` steps.
        step: time between two samples; t0: the first timestamp.
        test_windows: how many of the last windows are the test set (later in time).
        seed: everything (W0, b0, ΔW, x, ε) is drawn from it.

    Attributes: ``base`` (the pretrained, frozen nn.Linear), ``timestamps`` (N, T) float64,
    ``x`` (N, T, in), ``y`` (N, T, out), ``f`` (N, T) float64 (the true factor), ``delta``
    (out, in) ΔW; ``train`` and ``test``: dicts with t, x, y, f for the two parts.
    """

    def __init__(self, in_features: int = 8, out_features: int = 6, rank: int = 2,
                 components: Sequence[SeasonalComponent] | None = None, shift_scale: float = 0.5,
                 noise: float = 0.05, windows: int = 24, length: int = 96, step: float = 1.0,
                 t0: float = 0.0, test_windows: int = 8, seed: int = 0) -> None:
        if not 0 < test_windows < windows:
            raise ValueError(f"need 0 < test_windows < windows, got {test_windows}, {windows}")
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"rank must be in [1, {min(in_features, out_features)}], got {rank}")
        self.components = tuple(components) if components is not None else (
            SeasonalComponent(24.0, 0.4),)
        self.noise, self.rank = noise, rank
        g = torch.Generator().manual_seed(seed)
        W0 = torch.randn(out_features, in_features, generator=g) / math.sqrt(in_features)
        b0 = torch.randn(out_features, generator=g) * 0.1
        U = torch.randn(out_features, rank, generator=g)
        V = torch.randn(rank, in_features, generator=g)
        delta = U @ V
        self.delta = delta * (shift_scale * W0.norm() / delta.norm())
        self.base = nn.Linear(in_features, out_features)
        with torch.no_grad():
            self.base.weight.copy_(W0)
            self.base.bias.copy_(b0)
        self.base.requires_grad_(False)
        n = windows * length
        t = (t0 + step * torch.arange(n, dtype=torch.float64)).reshape(windows, length)
        self.timestamps = t
        self.f = 1 + seasonal(t, self.components)
        self.x = torch.randn(windows, length, in_features, generator=g)
        eps = torch.randn(windows, length, out_features, generator=g) * noise
        with torch.no_grad():
            self.y = (self.base(self.x) + self.f[..., None].float() * (self.x @ self.delta.T)
                      + eps)
        k = windows - test_windows
        self.train = {"t": t[:k], "x": self.x[:k], "y": self.y[:k], "f": self.f[:k]}
        self.test = {"t": t[k:], "x": self.x[k:], "y": self.y[k:], "f": self.f[k:]}

    def noise_floor(self) -> float:
        """The MSE of the true function (ε's variance)."""
        return self.noise ** 2

    def mse_of_constant_factor(self, part: str = "test") -> float:
        """The MSE of the best *v1-like* model: the true W0 + c·ΔW with the best constant c.

        A lower bound for any adapter whose update ignores t: what v1 can at best reach when it
        learns ΔW exactly (the envelope's variance times E‖ΔW x‖², plus the noise).
        """
        d = getattr(self, part)
        f = d["f"].float()
        c = f.mean()
        with torch.no_grad():
            u = d["x"] @ self.delta.T
            pred = self.base(d["x"]) + c * u
        return (pred - d["y"]).pow(2).mean().item()
