"""Structure priors for HyLoRADA v2 (seed 003): one vector per position, fed to every v2 layer.

    StructureEncoder:          positions (B, T) long [, structure_types (B, T) long]
                               -> prior (B, T, structure_dim)
    TemporalStructureEncoder:  timestamps (B, T) float -> prior (B, T, structure_dim)

The prior goes to ``HyLoRADAv2Linear.forward(x, structure_prior=prior)``, where a zero-initialised
projection w turns it into the per-position factor f = 0.5 + σ(w · prior).

StructureEncoder, per position with offset d (an int; leading dims (B, T) or any (...)):

    h = E_bucket[bucket(d)] + [sin(d ω ⊙ φ), cos(d ω ⊙ φ)] + E_type[type]      (encoding_dim,)
    prior = σ(gate) · P h                                                      (structure_dim,)

    bucket(d): sign(d)·b(|d|) shifted into [0, 2·num_buckets]; b(k) = k for k < num_buckets/2,
               then logarithmic up to max_distance (T5's relative-position buckets), capped at
               num_buckets — so 2·num_buckets + 1 embeddings, as in the seed
    ω_k = 10000^(−2k / encoding_dim) fixed, φ_k learned (starts at 1): learned frequencies
    E_type: optional structure-type embedding (AST depth, node kind, ...), num_structure_types rows
    P: bias-free (structure_dim, encoding_dim) projection;  gate: a learned scalar, starts at 0

What "relative" means here: a prior is one vector per token, so the offsets are relative to an
anchor you choose — by default the start of the sequence (``get_position_tensor`` gives
0..T−1), or, for code, the start of the enclosing block/function; negative offsets (before the
anchor) get their own buckets.

Deviations from the seed's sketch (it does not run as written):

* ``max_structure_types`` is used but never defined: here it is the argument
  ``num_structure_types`` (None: no type embedding, and passing types is an error).
* The seed's ``hidden_size`` is the size of the *prior*, not the model's hidden size (its own
  example passes 32 and gets [batch, seq, 32]): renamed ``structure_dim``.
* The seed sizes the bucket table for signed relative offsets (2·num_buckets + 1) but feeds
  absolute positions; here offsets are signed and relative to an anchor, as above.
* ``freq_scale`` has encoding_dim // 2 entries, which silently drops a feature for an odd
  encoding_dim: encoding_dim must be even.
* The output gate: the seed's ``gate = 0.0`` with "gated output for gradual learning" suggests
  tanh(gate) (output 0 at init). Combined with v2's zero-initialised w that is a saddle: the
  prior is 0 so w gets no gradient, and w is 0 so the encoder gets none — nothing ever
  trains. Here the gate is σ(gate) (0.5 at init): w receives a gradient from the first step and
  the encoder as soon as w ≠ 0. (A scalar gate in front of a linear projection only
  reparametrises its scale; it is kept for fidelity to the seed.)

TemporalStructureEncoder, for timestamps t (real, any unit) and K learned periods T_k > 0:

    h = [sin(2π t / T_k), cos(2π t / T_k)]_{k=1..K}            (2K,)
    prior = σ(gate) · P h                                        (structure_dim,)

T_k = T0_k · exp(δ_k): the learned δ (``period_log_ratio``, starts at 0) keeps periods positive,
and the starting periods T0 (``init_periods``: your known seasonalities, e.g. (24, 168) for
hourly data with daily/weekly cycles; default: geometric between ``min_period`` and
``max_period``) are kept as exact Python floats, not as a float32 parameter — so at init the
periods are exact, and the phase t / T_k mod 1 is computed in float64: large timestamps (seconds
since 1970) keep their precision. Once δ moves, the phase at time t moves by about (t/T)·δ
cycles — that is what learning a period means: ∂/∂δ_k grows like t / T_k, so with timestamps
many periods from 0 the periods' gradients are large and oscillate — subtract a recent origin
from t, or give ``structure_scales`` (see ``lorakit.tuning.loraplus``) a small learning rate. (The seed
shows only the constructor call ``TemporalStructureEncoder(hidden_size=32, num_periods=4)``;
this is one sound reading of "learnable periods".)
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..validate import check_int

__all__ = ["StructureEncoder", "TemporalStructureEncoder", "relative_position_bucket"]


def relative_position_bucket(offsets: torch.Tensor, num_buckets: int = 64,
                             max_distance: int = 512) -> torch.Tensor:
    """Signed offsets (...) long -> bucket ids (...) long in [0, 2·num_buckets].

    |d| < num_buckets // 2 gets its own bucket; larger |d| share logarithmically wider buckets up
    to max_distance, beyond which all share bucket num_buckets. The sign shifts the id below or
    above the centre num_buckets (d = 0).
    """
    exact = num_buckets // 2
    mag = offsets.abs()
    # log-spaced part; clamp_min(exact) keeps log() finite where the exact branch applies
    ratio = mag.clamp_min(exact).float() / exact
    log_part = exact + (torch.log(ratio) / math.log(max_distance / exact)
                        * (num_buckets - exact)).long()
    b = torch.where(mag < exact, mag, log_part.clamp_max(num_buckets))
    return num_buckets + torch.sign(offsets) * b


class StructureEncoder(nn.Module):
    """Bucketed offsets + learned-frequency sinusoids (+ type embeddings) -> (..., structure_dim).

    Args:
        structure_dim: size of the prior (the seed's ``hidden_size``); HyLoRADAv2Linear's
            ``structure_dim`` must match.
        encoding_dim: size of the internal features (even).
        num_buckets: buckets per sign; the table has 2·num_buckets + 1 rows.
        max_distance: offsets beyond it share the last bucket.
        num_structure_types: rows of the type embedding; None (default) for no types.

    forward(positions (B, T) long, structure_types (B, T) long or None) -> (B, T, structure_dim);
    any leading shape (...) works the same way.
    """

    # LoRA+ groups (lorakit.tuning.loraplus): parameter or submodule name -> group, "*" for the rest
    PARAM_GROUPS = {"gate": "gates", "freq_scale": "structure_scales", "*": "structure"}

    def __init__(self, structure_dim: int = 32, encoding_dim: int = 32, num_buckets: int = 64,
                 max_distance: int = 512, num_structure_types: int | None = None) -> None:
        super().__init__()
        self.structure_dim = check_int("structure_dim", structure_dim, 1)
        self.encoding_dim = check_int("encoding_dim", encoding_dim, 2)
        if encoding_dim % 2:
            raise ValueError(f"encoding_dim must be even (sin and cos halves), got {encoding_dim}")
        self.num_buckets = check_int("num_buckets", num_buckets, 2)
        self.max_distance = check_int("max_distance", max_distance, num_buckets // 2 + 1)
        self.num_structure_types = (None if num_structure_types is None
                                    else check_int("num_structure_types", num_structure_types, 1))
        self.bucket_embeddings = nn.Embedding(2 * num_buckets + 1, encoding_dim)
        half = encoding_dim // 2
        self.register_buffer("inv_freq", 10000.0 ** (-torch.arange(half).float() * 2 / encoding_dim),
                             persistent=False)
        self.freq_scale = nn.Parameter(torch.ones(half))              # learned frequencies φ
        self.structure_embeddings = (None if num_structure_types is None
                                     else nn.Embedding(num_structure_types, encoding_dim))
        self.proj = nn.Linear(encoding_dim, structure_dim, bias=False)
        self.gate = nn.Parameter(torch.tensor(0.0))                   # σ(0) = 0.5, see docstring

    @staticmethod
    def get_position_tensor(batch_size: int, seq_len: int, device=None) -> torch.Tensor:
        """Offsets from the start of each sequence: (batch_size, seq_len) long, rows 0..T−1."""
        return torch.arange(seq_len, device=device).expand(batch_size, seq_len)

    def forward(self, positions: torch.Tensor,
                structure_types: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(positions, torch.Tensor) or positions.is_floating_point() \
                or positions.is_complex() or positions.dtype == torch.bool:
            raise TypeError("positions must be an integer tensor of offsets, shape (B, T) "
                            "(real-valued times: use TemporalStructureEncoder), got "
                            f"{getattr(positions, 'dtype', type(positions).__name__)}")
        h = self.bucket_embeddings(relative_position_bucket(positions.long(), self.num_buckets,
                                                            self.max_distance))
        angle = positions.to(h.dtype)[..., None] * (self.inv_freq * self.freq_scale)  # (..., half)
        h = h + torch.cat([angle.sin(), angle.cos()], dim=-1)
        if structure_types is not None:
            h = h + self._type_embedding(structure_types, positions)
        return torch.sigmoid(self.gate) * self.proj(h)               # (..., structure_dim)

    def _type_embedding(self, types: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.structure_embeddings is None:
            raise ValueError("this StructureEncoder has no structure-type embedding: build it "
                             "with num_structure_types=N to pass structure_types")
        if not isinstance(types, torch.Tensor) or types.is_floating_point() \
                or types.dtype == torch.bool:
            raise TypeError("structure_types must be an integer tensor shaped like positions")
        if types.shape != positions.shape:
            raise ValueError(f"structure_types must have the shape of positions "
                             f"{tuple(positions.shape)}, got {tuple(types.shape)}")
        n = self.num_structure_types
        if types.numel() and (types.min() < 0 or types.max() >= n):
            raise ValueError(f"structure_types must lie in [0, {n}) (num_structure_types = {n}); "
                             f"got values in [{int(types.min())}, {int(types.max())}]: clamp "
                             "them (e.g. AST depth to num_structure_types − 1)")
        return self.structure_embeddings(types.long())

    def extra_repr(self) -> str:
        return (f"structure_dim={self.structure_dim}, encoding_dim={self.encoding_dim}, "
                f"num_buckets={self.num_buckets}, max_distance={self.max_distance}, "
                f"num_structure_types={self.num_structure_types}")


class TemporalStructureEncoder(nn.Module):
    """Sin/cos of timestamps at K learnable periods -> (..., structure_dim).

    Args:
        structure_dim: size of the prior (the seed's ``hidden_size``).
        num_periods: K, the number of learned periods.
        init_periods: K positive starting periods, in the timestamps' unit; None: geometric
            between min_period and max_period.

    forward(timestamps (B, T) real) -> (B, T, structure_dim); any leading shape works.
    """

    # LoRA+ groups (lorakit.tuning.loraplus): parameter or submodule name -> group, "*" for the rest
    PARAM_GROUPS = {"gate": "gates", "period_log_ratio": "structure_scales", "*": "structure"}

    def __init__(self, structure_dim: int = 32, num_periods: int = 4,
                 init_periods: Sequence[float] | None = None, min_period: float = 2.0,
                 max_period: float = 512.0) -> None:
        super().__init__()
        self.structure_dim = check_int("structure_dim", structure_dim, 1)
        self.num_periods = check_int("num_periods", num_periods, 1)
        if init_periods is None:
            if not (0 < min_period <= max_period and math.isfinite(max_period)):
                raise ValueError(f"need 0 < min_period <= max_period < inf, got {min_period}, "
                                 f"{max_period}")
            periods = torch.logspace(math.log10(min_period), math.log10(max_period), num_periods,
                                     dtype=torch.float64)
        else:
            periods = torch.as_tensor(list(init_periods), dtype=torch.float64)
            if periods.shape != (num_periods,) or not (torch.isfinite(periods).all()
                                                       and (periods > 0).all()):
                raise ValueError(f"init_periods must be {num_periods} finite periods > 0, got "
                                 f"{list(init_periods)}")
        self.init_periods = tuple(float(p) for p in periods)           # T0, exact
        self.period_log_ratio = nn.Parameter(torch.zeros(num_periods))  # δ: T = T0 · exp(δ)
        self.proj = nn.Linear(2 * num_periods, structure_dim, bias=False)
        self.gate = nn.Parameter(torch.tensor(0.0))                   # σ(0) = 0.5

    def periods(self) -> torch.Tensor:
        """The current periods T_k = T0_k · exp(δ_k), float64, (num_periods,)."""
        t0 = torch.tensor(self.init_periods, dtype=torch.float64, device=self.period_log_ratio.device)
        return t0 * self.period_log_ratio.double().exp()

    def forward(self, timestamps: torch.Tensor) -> torch.Tensor:
        if not isinstance(timestamps, torch.Tensor) or timestamps.is_complex() \
                or timestamps.dtype == torch.bool:
            raise TypeError("timestamps must be a real tensor of shape (B, T), got "
                            f"{getattr(timestamps, 'dtype', type(timestamps).__name__)}")
        ratio = timestamps.double()[..., None] / self.periods()             # (..., K)
        phase = (2 * math.pi) * (ratio - ratio.detach().floor())              # t/T mod 1, exact
        h = torch.cat([phase.sin(), phase.cos()], dim=-1).to(self.proj.weight.dtype)  # (..., 2K)
        return torch.sigmoid(self.gate) * self.proj(h)                        # (..., structure_dim)

    def extra_repr(self) -> str:
        return f"structure_dim={self.structure_dim}, num_periods={self.num_periods}"
