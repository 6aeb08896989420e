"""What the checks of notebooks 03 and 04 share: probing a *conditioned* low-rank layer.

Contract: ``cls(base_layer, cond_dim, rank=4, alpha=1)`` keeps ``self.base_layer``
and ``self.scaling = alpha / rank``; ``forward(x, p)`` takes x of shape (B, ..., in_features)
and p of shape (B, cond_dim), broadcast over the middle dims of x::

    bilinear (03):  y = base(x) + scaling * B((A x) ⊙ (C p))
    RSS      (04):  y = base(x) + scaling * B((A x) ⊙ (C p) + S p)

with A (r, in), B (out, r), C and S (r, cond_dim), all without bias.
``merge_fn(layer, p)`` with p of shape (cond_dim,) returns an ``nn.Linear`` computing
``layer(x, p)`` for that one condition.

Nothing else is assumed. A, B, C (and S) are found among the trainable parameters by shape
(the probe layers have in, out, rank and cond_dim pairwise different; either orientation, or
C and S fused into one (2r, cond_dim) projection); C and S, which share a shape, are told
apart by behaviour: at x = 0 only the shift S p reaches the output.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import _probe
from ._common import (
    check_layer_after_merge,
    check_training_steps,
    concept_key,
    handles,
    max_diff,
    with_concept,
)
from ._probe import (
    BigIntermediates,
    CheckFailure,
    TimedOut,
    build,
    call,
    close,
    fail,
    make_base,
    randn,
    randomize_adapters,
    trainable,
)


def find_base(layer: nn.Module) -> nn.Linear:
    return with_concept("base_layer", _probe.find_base, layer)

# Probe layers: non-square, with in, out, rank and cond_dim pairwise different (and 2*rank
# different from all of them), so every adapter matrix has a shape of its own.
IN, OUT, RANK, COND = 24, 10, 3, 5


@dataclass(frozen=True)
class Variant:
    """Which layer a set of checks is about."""
    cls_name: str       # the contract's class name, used in messages
    shift: bool         # True for RSS: y = base + s B((Ax ⊙ Cp) + Sp)
    topic: str          # the first part of the concept keys: "bilinear.update", ...
    # the notebook allows merging in place into layer.base_layer (then layer is spent: its
    # base holds the update for that p); otherwise the given layer must be left unchanged
    merge_in_place: bool = False
    merge_name: str = "merge_conditioned"

    def key(self, concept: str) -> str:
        return f"{self.topic}.{concept}"

    @property
    def formula(self) -> str:
        return ("base(x) + scaling * B((A x) ⊙ (C p) + S p)" if self.shift
                else "base(x) + scaling * B((A x) ⊙ (C p))")

    @property
    def gates(self) -> str:
        return "the gate C p and the shift S p" if self.shift else "the gate C p"

    def n_params(self, in_f: int, out_f: int, rank: int, cond: int) -> int:
        return rank * (in_f + out_f + cond * (2 if self.shift else 1))


# 03's notebook says "update layer.base_layer in place or build a new layer"; 04's does not
BILINEAR = Variant("BilinearLoRALinear", shift=False, topic="bilinear", merge_in_place=True)
RSS = Variant("RSSBilinearLoRA", shift=True, topic="rss")


# --- building, calling ----------------------------------------------------------------------

def make_layer(cls, variant: Variant, in_f=IN, out_f=OUT, rank=RANK, cond=COND, alpha=1.0,
               bias=True, seed=0, random=True) -> nn.Module:
    base = make_base(in_f, out_f, bias=bias, seed=seed)
    layer = with_concept("construct", build, cls, base, seed=seed, cond_dim=cond, rank=rank,
                         alpha=alpha)
    if random:
        randomize_adapters(layer, seed=seed + 1)
    return layer


def forward(layer: nn.Module, x: torch.Tensor, p: torch.Tensor, in_f: int, out_f: int) -> torch.Tensor:
    """layer(x, p) with a time limit; a crash or a non-tensor result becomes a CheckFailure
    (key ``<topic>.forward_crash``, ``<topic>.timeout``)."""
    return with_concept("forward_crash", _forward, layer, x, p, in_f, out_f)


def _forward(layer, x, p, in_f, out_f):
    what = (f"Forward on x of shape {tuple(x.shape)} and p of shape {tuple(p.shape)} "
            f"({in_f}->{out_f} layer)")
    if type(layer) in _probe._hung:
        fail(f"{what} was not run: an earlier call to this forward took longer than "
             f"{_probe.STEP_SECONDS} s. Is there an endless loop?", key=concept_key("timeout"))
    try:
        y = call(layer, x, p, what=what)
    except TimedOut:
        _probe._hung.add(type(layer))
        raise
    except CheckFailure as e:
        if any(k in str(e) for k in ("must match the size", "broadcast", "shape mismatch")):
            fail(f"{e}", BROADCAST_HINT)
        raise
    if not isinstance(y, torch.Tensor):
        fail("forward must return a tensor.", f"{what} returned {type(y).__name__}")
    return y


@torch.no_grad()
def update(layer, x, p, in_f, out_f) -> torch.Tensor:
    """Δ(x, p) = layer(x, p) - base(x)."""
    y = forward(layer, x, p, in_f, out_f)
    want = x.shape[:-1] + (out_f,)
    if tuple(y.shape) != tuple(want):
        fail(f"Wrong output shape: for x of shape {tuple(x.shape)} and p of shape "
             f"{tuple(p.shape)} the layer must return {tuple(want)}, got {tuple(y.shape)}.",
             BROADCAST_HINT, key=concept_key("shapes"))
    return y - find_base(layer)(x)


BROADCAST_HINT = (
    "p has shape (batch, cond_dim), so C p has shape (batch, r), while A x has shape "
    "(batch, ..., r). Reshape the gate to (batch, 1, ..., 1, r) — one 1 per middle dim of x, "
    "whatever x.dim() is, e.g. c.view(c.shape[0], *[1] * (x.dim() - 2), c.shape[-1]) — before "
    "multiplying. A bare 'h * c' lines c up with the *last two* dims of h instead of the first "
    "and the last; a fixed c.unsqueeze(1) fits 3-D x only.")


# --- finding the adapter matrices by shape --------------------------------------------------

@dataclass
class Factor:
    """One adapter matrix inside a trainable parameter, read in nn.Linear orientation."""
    param: nn.Parameter
    transposed: bool = False
    rows: slice | None = None   # for C and S fused in one (2r, cond) projection

    def _view(self, t: torch.Tensor) -> torch.Tensor:
        t = t.T if self.transposed else t
        return t[self.rows] if self.rows is not None else t

    @property
    def value(self) -> torch.Tensor:
        return self._view(self.param.detach())

    @property
    def grad(self) -> torch.Tensor | None:
        g = self.param.grad
        return None if g is None else self._view(g)


@dataclass
class CondFactors:
    """A (r, in), B (out, r), C (r, cond) and, for RSS, S (r, cond), as Factors."""
    A: Factor
    B: Factor
    C: Factor
    S: Factor | None = None

    def named(self) -> list[tuple[str, Factor]]:
        out = [("A", self.A), ("B", self.B), ("C", self.C)]
        return out + ([("S", self.S)] if self.S is not None else [])


def _shapes(layer) -> str:
    return ", ".join(f"{n} {tuple(p.shape)}" for n, p in trainable(layer)) or "none"


def find_AB(layer: nn.Module, in_f=IN, out_f=OUT, rank=RANK) -> tuple[Factor, Factor]:
    """A (r, in) and B (out, r) among the trainable parameters, by shape, either orientation."""
    return with_concept("adapters", _find_AB, layer, in_f, out_f, rank)


def _find_AB(layer, in_f, out_f, rank):
    A = B = None
    for _, p in trainable(layer):
        shape = tuple(p.shape)
        if shape == (rank, in_f):
            A = Factor(p)
        elif shape == (in_f, rank):
            A = Factor(p, transposed=True)
        elif shape == (out_f, rank):
            B = Factor(p)
        elif shape == (rank, out_f):
            B = Factor(p, transposed=True)
    if A is None or B is None:
        fail("Could not find the adapter matrices A and B among the trainable parameters.",
             f"For a {in_f}->{out_f} layer with rank={rank} expected one of shape ({rank}, {in_f}) "
             f"or ({in_f}, {rank}) (A) and one of shape ({out_f}, {rank}) or ({rank}, {out_f}) (B); "
             f"trainable parameters: {_shapes(layer)}")
    return A, B


def find_cond_factors(layer: nn.Module, variant: Variant, in_f=IN, out_f=OUT, rank=RANK,
                      cond=COND) -> CondFactors:
    """Find A, B, C (and S) among the trainable parameters by shape; tell C from S by behaviour.

    Call on a layer whose adapters are random (B != 0): S is the (r, cond) matrix that still
    matters at x = 0.
    """
    return with_concept("adapters", _find_cond_factors, layer, variant, in_f, out_f, rank, cond)


def _find_cond_factors(layer, variant, in_f, out_f, rank, cond):
    assert len({in_f, out_f, rank, cond, 2 * rank}) == 5, "probe dims must be pairwise different"
    A, B = find_AB(layer, in_f, out_f, rank)
    cands: list[Factor] = []
    output_space = []
    for name, p in trainable(layer):
        shape = tuple(p.shape)
        if shape in ((rank, cond), (cond, rank)):
            cands.append(Factor(p, transposed=shape == (cond, rank)))
        elif variant.shift and shape in ((2 * rank, cond), (cond, 2 * rank)):
            t = shape == (cond, 2 * rank)
            cands += [Factor(p, t, slice(0, rank)), Factor(p, t, slice(rank, 2 * rank))]
        elif shape in ((out_f, cond), (cond, out_f)):
            output_space.append(name)
    want = 2 if variant.shift else 1
    what = "C (the gate) and S (the shift)" if variant.shift else "C (the gate)"
    if len(cands) != want:
        expected = "two matrices" if want == 2 else "one matrix"
        detail = (f"With cond_dim={cond} and rank={rank} expected {expected} of shape "
                  f"({rank}, {cond}) or ({cond}, {rank}) for {what}; found {len(cands)}. "
                  f"Trainable parameters: {_shapes(layer)}.")
        if output_space:
            detail += (f" {output_space} map p to the {out_f} output features: that modulates "
                       "the output space (output-space FiLM). Here p acts in rank space: C (and S) "
                       "map p to r numbers, one per rank direction, *before* B.")
        fail(f"Could not find {what} among the trainable parameters.", detail)
    if not variant.shift:
        return CondFactors(A, B, cands[0])
    C, S = _tell_gate_from_shift(layer, cands, in_f, out_f, cond)
    return CondFactors(A, B, C, S)


@torch.no_grad()
def _tell_gate_from_shift(layer, cands, in_f, out_f, cond) -> tuple[Factor, Factor]:
    x0 = torch.zeros(1, 3, in_f)
    p = randn(1, cond, seed=99)
    ref = update(layer, x0, p, in_f, out_f)
    matters = []
    for f in cands:
        saved = f.value.clone()
        f._view(f.param.data).zero_()
        try:
            matters.append(not close(update(layer, x0, p, in_f, out_f), ref))
        finally:
            f._view(f.param.data).copy_(saved)
    if matters.count(True) != 1:
        why = ("neither changes it: is the shift S p added at all?" if not any(matters) else
               "both change it: is the shift multiplied by the gate, e.g. ((A x) + S p) ⊙ (C p)?")
        fail("Could not tell the gate C from the shift S: at x = 0 the update must be "
             "scaling * B S p, which involves S but not C.",
             f"Zeroing each of your two ({cands[0].value.shape[0]}, {cond}) matrices in turn "
             f"and looking at the update at x = 0: {why}")
    return cands[matters.index(False)], cands[matters.index(True)]


def expected_update(f: CondFactors, x, p, scaling: float, *, one_plus=False,
                    shift_scaled=True) -> torch.Tensor:
    """scaling * B((A x) ⊙ (C p) + S p) for x (batch, ..., in), p (batch, cond)."""
    h = x @ f.A.value.T                                     # (batch, ..., r)
    view = (p.shape[0],) + (1,) * (h.dim() - 2) + (h.shape[-1],)
    c = (p @ f.C.value.T).reshape(view)                     # (batch, 1, ..., r)
    out = scaling * ((h * (1 + c if one_plus else c)) @ f.B.value.T)
    if f.S is not None:
        shift = (p @ f.S.value.T).reshape(view) @ f.B.value.T
        out = out + (scaling if shift_scaled else 1.0) * shift
    return out


def cond_batch(x: torch.Tensor, seed: int, cond=COND, scale=1.0) -> torch.Tensor:
    return randn(x.shape[0], cond, seed=seed, scale=scale)


# --- the checks -------------------------------------------------------------------------------

def check_shapes(cls, v: Variant) -> None:
    """Output (B, ..., out) for x (B, in), (B, T, in), (B, T, U, in) with p (B, cond_dim)."""
    layer = make_layer(cls, v, seed=1)
    for shape in [(5, IN), (1, IN), (2, 3, IN), (1, 7, IN), (2, 3, 4, IN)]:
        x = randn(*shape, seed=2)
        p = cond_batch(x, seed=3)
        try:
            y = forward(layer, x, p, IN, OUT)
        except TimedOut:
            raise
        except CheckFailure as e:
            error = str(e).split(" raised ", 1)[-1]
            about_shapes = any(k in error for k in ("size of tensor", "must match", "broadcast",
                                                    "shape", "mat1 and mat2", "dimension"))
            fail(f"{e}", "" if BROADCAST_HINT in str(e) or not about_shapes else BROADCAST_HINT,
                 key=v.key("shapes"))
        want = shape[:-1] + (OUT,)
        if tuple(y.shape) != want:
            fail(f"Wrong output shape: for x of shape {shape} and p of shape {tuple(p.shape)} "
                 f"a {IN}->{OUT} layer must return {want}, got {tuple(y.shape)}.", BROADCAST_HINT,
                 key=v.key("shapes"))


def check_per_sample(cls, v: Variant) -> None:
    """Sample b's output depends on p[b] only, for 2-D, 3-D and 4-D x (also when B equals T)."""
    layer = make_layer(cls, v, seed=4)
    for shape in [(4, IN), (4, 4, IN), (3, 2, 4, IN)]:
        x = randn(*shape, seed=5)
        p = cond_batch(x, seed=6)
        y = update(layer, x, p, IN, OUT)
        for b in range(shape[0]):
            alone = update(layer, x[b:b + 1], p[b:b + 1], IN, OUT)
            if not close(y[b:b + 1], alone):
                fail("Each sample must be modulated by its own condition: the output for sample "
                     "b may depend on p[b] only.",
                     f"x of shape {shape}, p of shape {tuple(p.shape)}: sample {b} run alone "
                     f"gives a different output than inside the batch. " + BROADCAST_HINT,
                     key=v.key("per_sample"))


def check_frozen(cls, v: Variant, in_f=IN, out_f=OUT, rank=RANK, cond=COND) -> None:
    """The base is frozen and exactly r(in + out + cond_dim) (RSS: + r·cond_dim) parameters train."""
    layer = make_layer(cls, v, in_f, out_f, rank, cond, random=False)
    base = find_base(layer)
    unfrozen = [n for n, p in base.named_parameters() if p.requires_grad]
    if unfrozen:
        fail("The pretrained layer must be frozen: only the adapter trains.",
             f"base_layer parameters that still require grad: {unfrozen}", key=v.key("frozen"))
    n = sum(p.numel() for _, p in trainable(layer))
    want = v.n_params(in_f, out_f, rank, cond)
    if n != want:
        terms = "r*(in + out + 2*cond_dim)" if v.shift else "r*(in + out + cond_dim)"
        mats = ("A (r x in), B (out x r), C and S (r x cond_dim)" if v.shift
                else "A (r x in), B (out x r), C (r x cond_dim)")
        fail(f"{v.cls_name} trains exactly {terms} = {want} parameters for a {in_f}->{out_f} "
             f"layer with rank={rank}, cond_dim={cond} ({mats}, no biases); your layer trains {n}.",
             f"trainable parameters: {_shapes(layer)}", key=v.key("param_count"))


def check_identity_at_init(cls, v: Variant) -> None:
    """At init the layer equals its base for every p (B starts at zero)."""
    for bias in (True, False):
        layer = make_layer(cls, v, bias=bias, random=False, seed=7)
        for shape in [(1, 5, IN), (1, 2, 3, IN)]:
            x = randn(*shape, seed=8)
            p = cond_batch(x, seed=9, scale=2.0)
            d = update(layer, x, p, IN, OUT)
            if not close(d, torch.zeros_like(d), rtol=0, atol=1e-6):
                fail("At init the layer must equal the pretrained layer, whatever p is: start B "
                     "at zero so that fine-tuning starts from the pretrained function.",
                     f"x of shape {shape}, bias={bias}: largest difference {d.abs().max().item():.3g}")


def check_off_at_zero(cls, v: Variant) -> None:
    """With p = 0 the adapter path is off: layer(x, 0) = base(x), even with B != 0."""
    layer = make_layer(cls, v, seed=10)
    for shape in [(1, 5, IN), (1, 2, 3, IN)]:
        x = randn(*shape, seed=11)
        d = update(layer, x, torch.zeros(shape[0], COND), IN, OUT)
        if not close(d, torch.zeros_like(d), rtol=0, atol=1e-6):
            fail(f"With p = 0 {v.gates} {'are' if v.shift else 'is'} zero, so the update must "
                 "vanish and the layer must return base(x).",
                 f"x of shape {shape}: largest difference from base(x) is "
                 f"{d.abs().max().item():.3g}. Did you use 1 + C p (a different layer, see the "
                 "notebook), give C a bias, or gate with a function of p that is not linear?")


def _linear_in(fn, u1, u2, what: str) -> str | None:
    """None if fn is linear (homogeneous, also for negative factors, and additive), else why."""
    f1 = fn(u1)
    for a in (2.0, -0.5):
        fa = fn(a * u1)
        if not close(fa, a * f1, rtol=1e-4, atol=1e-5):
            ratio = (fa.norm() / f1.norm().clamp_min(1e-12)).item()
            extra = (f" — it grows like the square of {what}, as if one {what}-dependent factor "
                     "multiplied another (the shift times the gate, say)"
                     if abs(ratio - a * a) < 1e-2 * a * a else "")
            return f"f({a:g}·{what}) != {a:g}·f({what}) (norm ratio {ratio:.3g}){extra}"
    if not close(fn(u1 + u2), f1 + fn(u2), rtol=1e-4, atol=1e-5):
        return f"f({what}1 + {what}2) != f({what}1) + f({what}2)"
    return None


def check_bilinear(cls, v: Variant) -> None:
    """The update Δ(x, p) = layer(x, p) - base(x) is linear in x for fixed p and in p for fixed x."""
    layer = make_layer(cls, v, seed=12)
    x1, x2 = randn(1, 8, IN, seed=13), randn(1, 8, IN, seed=14)
    p1, p2 = randn(1, COND, seed=15), randn(1, COND, seed=16)
    why = _linear_in(lambda x: update(layer, x, p1, IN, OUT), x1, x2, "x")
    if why:
        fail("For a fixed condition the update must be linear in x — it is a matrix, "
             "scaling * B diag(C p) A, applied to x.",
             f"Δ(x, p) = layer(x, p) - base(x): {why}. Use matrix products for A and B; only "
             "the gate is elementwise, and it multiplies A x, not x.")
    why = _linear_in(lambda p: update(layer, x1, p, IN, OUT), p1, p2, "p")
    if why:
        fail("For a fixed input the update must be linear in p: the gate C p is a linear "
             "function of the condition, with no offset and no squashing.",
             f"Δ(x, p) = layer(x, p) - base(x): {why}. A gate like 1 + C p, sigmoid(C p) or a C "
             "with a bias is affine or non-linear in p.")


def check_shift(cls, v: Variant) -> None:
    """Δ(x, p) = G(x, p) + σ(p): the shift σ(p) = Δ(0, p) is linear in p and does not depend on
    x; the gated part G = Δ(x, p) - Δ(0, p) is linear in x and in p."""
    layer = make_layer(cls, v, seed=12)
    x1, x2 = randn(1, 8, IN, seed=13), randn(1, 8, IN, seed=14)
    p1, p2 = randn(1, COND, seed=15), randn(1, COND, seed=16)
    zero = torch.zeros_like(x1)
    sigma = lambda p: update(layer, zero, p, IN, OUT)  # noqa: E731
    s1 = sigma(p1)
    if close(s1, torch.zeros_like(s1), rtol=0, atol=1e-6):
        fail("The rank-space shift is missing: at x = 0 the update must be scaling * B S p, "
             "which is not zero once B and S are.",
             "Add S p (S of shape (r, cond_dim)) to (A x) ⊙ (C p) inside the rank space, "
             "before B.")
    if not close(s1[:, :1].expand_as(s1), s1):
        fail("The shift must not depend on the position: S p is one vector per sample, broadcast "
             "over the middle dims of x.", BROADCAST_HINT)
    why = _linear_in(sigma, p1, p2, "p")
    if why:
        fail("The shift σ(p) = Δ(0, p) must be linear in p: it is scaling * B S p.",
             f"{why}. The shift is added to the gated features, never multiplied by the gate.")
    gated = lambda x, p: update(layer, x, p, IN, OUT) - sigma(p)  # noqa: E731
    why = _linear_in(lambda x: gated(x, p1), x1, x2, "x")
    if why:
        fail("Apart from the shift, the update must be linear in x: scaling * B diag(C p) A x.",
             f"G(x, p) = Δ(x, p) - Δ(0, p): {why}.")
    why = _linear_in(lambda p: gated(x1, p), p1, p2, "p")
    if why:
        fail("Apart from the shift, the update must be linear in p: the gate C p has no offset "
             "and no squashing.", f"G(x, p) = Δ(x, p) - Δ(0, p): {why}. A gate like 1 + C p or "
             "sigmoid(C p) is affine or non-linear in p.")


def _update_diagnosis(layer, f: CondFactors, v: Variant, alpha: float, rank: int) -> str:
    s = alpha / rank
    x, p = randn(4, 2, IN, seed=21), randn(4, COND, seed=22)
    got = update(layer, x, p, IN, OUT)
    for b in range(x.shape[0]):
        if not close(got[b:b + 1], update(layer, x[b:b + 1], p[b:b + 1], IN, OUT)):
            return "Samples are mixed up: sample b must be gated by p[b] only. " + BROADCAST_HINT
    candidates = [(dict(one_plus=True), "it gates with 1 + C p instead of C p")]
    for c, why in [(1.0, "the scaling alpha/rank is missing"),
                   (alpha, "it is scaled by alpha instead of alpha/rank"),
                   (rank / alpha, "it is scaled by rank/alpha instead of alpha/rank")]:
        if abs(c - s) > 1e-9:
            candidates.append((dict(scaling=c), why))
    if v.shift:
        candidates.append((dict(shift_scaled=False), "the shift B S p is not multiplied by scaling"))
    for kw, why in candidates:
        kw = {"scaling": s, **kw}
        if close(got, expected_update(f, x, p, **kw)):
            return f"Your update matches a common mistake: {why}."
    if close(got, torch.zeros_like(got)):
        return "The update is zero even though B is not: is the adapter path added to the output?"
    return (f"The update should be scaling * B((A x) ⊙ (C p){' + S p' if v.shift else ''}) with "
            "A (r, in), B (out, r), C (r, cond_dim): the gate multiplies A x in rank space, "
            "one number per rank direction.")


def check_update(cls, v: Variant) -> None:
    """With random adapters: y = base(x) + (alpha/r) B((Ax) ⊙ (Cp) [+ Sp]) — first for x of
    shape (1, T, in), then (B, in), (B, T, in), (B, T, U, in) where the layer handles them (a
    shape it does not handle is check_shapes's business) — in train and in eval mode, and after
    the parameters change in eval mode (nothing cached)."""
    alpha = 3.0
    layer = make_layer(cls, v, alpha=alpha, seed=17)
    f = find_cond_factors(layer, v)
    for k, shape in enumerate([(1, 5, IN), (4, IN), (2, 3, IN), (2, 2, 3, IN)]):
        x = randn(*shape, seed=18)
        p = cond_batch(x, seed=19)
        run = functools.partial(update, layer, x, p, IN, OUT)
        got = run() if k == 0 else handles(run, tuple(shape[:-1]) + (OUT,))
        if got is None:
            continue
        if not close(got, expected_update(f, x, p, alpha / RANK)):
            fail(f"With non-zero adapters the layer must compute {v.formula}.",
                 f"x of shape {shape}. " + _update_diagnosis(layer, f, v, alpha, RANK),
                 key=v.key("update"))
    x, p = randn(1, 5, IN, seed=18), randn(1, COND, seed=19)
    layer.eval()
    try:
        got, want = update(layer, x, p, IN, OUT), expected_update(f, x, p, alpha / RANK)
        if not close(got, want):
            why = ("In eval mode it returns base(x) alone: the adapter is skipped. The layer has "
                   "no train-only part, so a trained adapter must act at inference."
                   if close(got, torch.zeros_like(got)) else
                   f"Largest difference from {v.formula}: {max_diff(got, want)}.")
            fail(f"After layer.eval() the layer must compute what it computes in train mode: "
                 f"{v.formula}.", why, key=v.key("eval_mode"))
        randomize_adapters(layer, seed=20)  # new values while in eval mode (a loaded checkpoint)
        got, want = update(layer, x, p, IN, OUT), expected_update(f, x, p, alpha / RANK)
        if not close(got, want):
            fail("After the adapter's parameters change (here in eval mode, as when a checkpoint "
                 "is loaded), the next forward must use the new values.",
                 f"largest difference from {v.formula} with the new parameters: "
                 f"{max_diff(got, want)}. Does forward cache a gate, a shift or a product from "
                 "an earlier call?", key=v.key("stale_state"))
    finally:
        layer.train()


def check_column_space(cls, v: Variant) -> None:
    """Every update lies in the column space of B: conditioning never leaves the rank-r subspace."""
    layer = make_layer(cls, v, seed=23)
    _, B = find_AB(layer)
    d = torch.cat([update(layer, randn(1, 4, IN, seed=24 + k, scale=2.0),
                          randn(1, COND, seed=124 + k, scale=2.0), IN, OUT)[0]
                   for k in range(8)]).double()                     # 8 conditions x 4 inputs: (32, out)
    B = B.value.double()                                            # (out, r)
    outside = d - (d @ torch.linalg.pinv(B).T) @ B.T                # remove the part in col(B)
    rel = (outside.norm() / d.norm().clamp_min(1e-12)).item()
    if rel > 1e-5:
        rank = torch.linalg.matrix_rank(d, rtol=1e-6).item()
        fail(f"The update must lie in the column space of B (it is B times an r-vector), so that "
             f"conditioning keeps LoRA's rank-{RANK} subspace.",
             f"{rel:.1%} of your update (by norm) lies outside it; 32 updates for random x and p "
             f"span {rank} output dimensions (at most {RANK} allowed). A gate or shift applied "
             "after B, on the output features, leaves the subspace: that is output-space FiLM.")


def check_scaling(cls, v: Variant) -> None:
    """self.scaling is alpha / rank, and the update is scaled by it."""
    x, p = randn(1, 6, IN, seed=27), randn(1, COND, seed=28)
    for rank, alpha in [(RANK, 6.0), (2, 1.0)]:
        layer = make_layer(cls, v, rank=rank, alpha=alpha, seed=26)
        want_s = alpha / rank
        s = getattr(layer, "scaling", None)
        if not isinstance(s, (int, float, torch.Tensor)) or abs(float(s) - want_s) > 1e-9:
            fail(f"The attribute self.scaling must be alpha / rank = {alpha:g}/{rank} = {want_s:g}, "
                 f"got {s!r}.")
        try:
            f = find_cond_factors(layer, v, rank=rank)
        except CheckFailure:
            continue  # the matrices' shapes are check_frozen's and check_update's business
        got = update(layer, x, p, IN, OUT)
        # judge the scale only: the form of the gate is the business of other checks
        if not any(close(got, expected_update(f, x, p, want_s, one_plus=o)) for o in (False, True)):
            fail(f"The update must be scaled by alpha/rank (here {alpha:g}/{rank} = {want_s:g}), "
                 "so that changing the rank does not force you to retune alpha.",
                 _update_diagnosis(layer, f, v, alpha, rank))
    # the same adapter values with alpha 3 and 6: the update must double
    d3 = update(make_layer(cls, v, alpha=3.0, seed=26), x, p, IN, OUT)
    d6 = update(make_layer(cls, v, alpha=6.0, seed=26), x, p, IN, OUT)
    if not close(d6, 2 * d3):
        ratio = (d6.norm() / d3.norm().clamp_min(1e-12)).item()
        fail("The update must be scaled by alpha/rank: with the same adapter values, alpha = 6 "
             "must give twice the update of alpha = 3.",
             f"Your update changes by a factor {ratio:.3g}. "
             + ("Is self.scaling used in forward at all?" if abs(ratio - 1) < 1e-3 else ""))


def check_low_rank_order(cls, v: Variant) -> None:
    """forward never builds an (out, in)-sized tensor such as B diag(Cp) A per sample."""
    in_f, out_f, rank, cond = 64, 48, 4, 6
    layer = make_layer(cls, v, in_f, out_f, rank, cond, seed=29)
    x, p = randn(1, 6, in_f, seed=30), randn(1, cond, seed=31)
    with BigIntermediates(limit=1):  # pay the one-off cost of the first dispatch mode here
        torch.zeros(1) + 1
    probe = BigIntermediates(limit=in_f * out_f)
    with probe:
        forward(layer, x, p, in_f, out_f)
    if probe.seen:
        op, shape = probe.seen[0]
        fail(f"Your forward builds a {shape} tensor (by {op}) for a {in_f}->{out_f} layer: as large "
             "as the full weight matrix. Keep the computation in rank space: h = A x, gate it "
             "with C p (one number per rank direction), then apply B — never form "
             "B diag(C p) A in forward (that is what merging is for).")


def check_gradients(cls, v: Variant) -> None:
    """At init B gets a gradient; with non-zero adapters every factor does, and so do x and p
    (directional derivatives against central differences); the base never; and a few optimizer
    steps later the layer still computes and differentiates like a freshly built one."""
    layer = make_layer(cls, v, random=False, seed=32)
    base = find_base(layer)
    x, p = randn(1, 6, IN, seed=33), randn(1, COND, seed=34)
    target = randn(1, 6, OUT, seed=35)

    def backward():
        layer.zero_grad(set_to_none=True)
        loss = (forward(layer, x, p, IN, OUT) - target).pow(2).mean()
        call(loss.backward, what="Backward through your layer")

    def moved(t):
        return t is not None and bool(torch.isfinite(t).all()) and t.abs().max().item() > 0

    backward()
    B_init = [p for _, p in trainable(layer) if tuple(p.shape) in ((OUT, RANK), (RANK, OUT))]
    if not B_init or not moved(B_init[0].grad):
        fail("At init B must receive a gradient, or the adapter can never start learning.",
             "With B = 0, B's gradient is built from the rank-space features "
             + ("(A x) ⊙ (C p) + S p: if C and S (or A and S) start at zero it is zero too, and "
                "nothing ever moves. Start B at zero and A, C and S at random values." if v.shift
                else "(A x) ⊙ (C p): if A or C starts at zero it is zero too, and nothing ever "
                "moves. Start B at zero and A and C at random values."), key=v.key("init_gradient"))
    randomize_adapters(layer, seed=36)
    backward()
    still = [name for name, q in trainable(layer) if not moved(q.grad)]
    if still:
        fail(f"Once B is non-zero, the loss must send a gradient to every adapter matrix; "
             f"{', '.join(still)} got none. Is it part of the computation that forward returns "
             "(and not detached)?", key=v.key("gradients"))
    leaked = [n for n, q in base.named_parameters() if q.grad is not None]
    if leaked:
        fail("Gradients must never reach the frozen base layer.",
             f"base parameters with a grad: {leaked}", key=v.key("frozen"))
    _check_input_gradients(layer, v)
    _check_steps(cls, v)


def _check_input_gradients(layer, v: Variant) -> None:
    """dL/dx and dL/dp, for L = Σ g·layer(x, p), against central differences along a few random
    directions (float32, step 1e-2; exact for the contract's layer, which is affine in x and in p
    separately; tolerance 1e-3 of the scale): the layers before this one, and whatever produces
    p, learn through these gradients."""
    x = randn(1, 6, IN, seed=50).requires_grad_(True)
    p = randn(1, COND, seed=51).requires_grad_(True)
    g = randn(1, 6, OUT, seed=52)
    y = forward(layer, x, p, IN, OUT)
    call((y * g).sum().backward, what="Backward through your layer")
    grads = {"x": x.grad, "p": p.grad}
    x, p = x.detach(), p.detach()

    def loss(xx, pp) -> float:
        with torch.no_grad():
            return (forward(layer, xx, pp, IN, OUT).double() * g.double()).sum().item()

    eps = 1e-2
    for name, t in (("x", x), ("p", p)):
        got_all = grads[name]
        what = ("the input x: the layers before this one learn through it. Is the base path "
                "computed under torch.no_grad() or detached? Freeze the base *weights* "
                "(requires_grad=False) instead." if name == "x" else
                "the condition p: whatever produces p (an encoder of the operating condition, "
                "say) learns through it. Is the gate C p (or p itself) detached?")
        if got_all is None or got_all.abs().max() == 0:
            fail(f"The loss must send a gradient back to {what}",
                 f"dL/d{name}: " + ("None" if got_all is None else "all zeros"),
                 key=v.key("input_gradient" if name == "x" else "condition_gradient"))
        for k in range(3):
            u = randn(*t.shape, seed=60 + k + (10 if name == "p" else 0))
            plus = (x + eps * u, p) if name == "x" else (x, p + eps * u)
            minus = (x - eps * u, p) if name == "x" else (x, p - eps * u)
            want = (loss(*plus) - loss(*minus)) / (2 * eps)
            got = (got_all.double() * u.double()).sum().item()
            if abs(got - want) > 1e-3 * (1 + abs(want)):
                fail(f"The gradient with respect to {name} does not match how the output changes "
                     f"with {name}: part of the path from {name} to the output is detached or "
                     "computed under no_grad.",
                     f"along a random direction u: autograd's dL/d{name}·u = {got:.5g}, central "
                     f"differences give {want:.5g}",
                     key=v.key("input_gradient" if name == "x" else "condition_gradient"))


def _check_steps(cls, v: Variant, alpha: float = 2.0, seed: int = 53) -> None:
    """Three SGD steps; after each, the layer agrees with a freshly built one holding the same
    parameters (outputs in train and eval mode, gradients), for two conditions in one batch."""
    layer = make_layer(cls, v, alpha=alpha, seed=seed)
    x, p = randn(2, 4, IN, seed=seed + 2), randn(2, COND, seed=seed + 3)
    target = randn(2, 4, OUT, seed=seed + 4)
    shape = (2, 4, OUT)
    if handles(lambda: forward(layer, x, p, IN, OUT), shape) is None:
        x, p, target = x[:1], p[:1], target[:1]  # (B, T, in) with B > 1 is check_shapes's business

    def fresh():
        return with_concept("construct", build, cls, make_base(IN, OUT, seed=seed), seed=seed,
                            cond_dim=COND, rank=RANK, alpha=alpha)

    check_training_steps(layer, fresh, lambda m: forward(m, x, p, IN, OUT), target,
                         key=v.key("stale_state"))


def check_gradient_gating(cls, v: Variant) -> None:
    """∂L/∂A = scaling · diag(C p) Bᵀ Gᵀ X: A's gradient is gated by C p (zero at p = 0), and
    torch.autograd.gradcheck passes in float64."""
    alpha = float(RANK)  # scaling 1: the scale is check_scaling's business
    layer = make_layer(cls, v, alpha=alpha, seed=37)
    A, B = find_AB(layer)
    try:
        f = find_cond_factors(layer, v)
    except CheckFailure:
        f = None  # C's shape is check_frozen's and check_update's business
    s = alpha / RANK
    x = randn(1, 6, IN, seed=38)
    G = randn(1, 6, OUT, seed=39)
    p_one = randn(COND, seed=40)

    def grad_A(p_vec):
        layer.zero_grad(set_to_none=True)
        y = forward(layer, x, p_vec[None], IN, OUT)
        call((y * G).sum().backward, what="Backward through your layer")
        g = A.grad
        return torch.zeros_like(A.value) if g is None else g.clone()

    g0 = grad_A(torch.zeros(COND))
    if not close(g0, torch.zeros_like(g0), rtol=0, atol=1e-7):
        fail("At p = 0 the gate C p is zero, so A must get no gradient: the condition gates "
             "learning as well as the output.",
             f"A's gradient at p = 0 has norm {g0.norm().item():.3g}. Did you gate with 1 + C p?")
    got = grad_A(p_one)
    for a in (2.0, -0.5):
        if not close(grad_A(a * p_one), a * got, rtol=1e-3, atol=1e-5):
            fail("A's gradient must scale with the condition: it is scaling * diag(C p) Bᵀ "
                 "(∂L/∂y)ᵀ x, linear in p.", f"Multiplying p by {a:g} does not multiply A's "
                 "gradient by the same factor. Is the gate linear in p (C p, no offset)?")
    if f is not None:
        cp = f.C.value @ p_one                                       # (r,)
        want = s * cp[:, None] * (B.value.T @ G[0].T @ x[0])         # (r, in)
        if not close(got, want, rtol=1e-3, atol=1e-5):
            fail("A's gradient must be scaling * diag(C p) Bᵀ (∂L/∂y)ᵀ x: row k of ∂L/∂A is "
                 "gated by the k-th entry of C p.", "Yours scales with p, but not by C p row by "
                 "row. Check that the gate multiplies A x elementwise in rank space.")
    layer64 = call(copy.deepcopy, layer, what="copy.deepcopy(layer)")
    layer64 = layer64.double()
    x64 = randn(1, 4, IN, seed=41).double().requires_grad_(True)
    p64 = randn(1, COND, seed=42).double().requires_grad_(True)
    try:
        with _probe.time_limit(_probe.STEP_SECONDS, "torch.autograd.gradcheck on your layer"):
            ok = torch.autograd.gradcheck(lambda a, b: layer64(a, b), (x64, p64), eps=1e-6,
                                          atol=1e-5, rtol=1e-4, fast_mode=True,
                                          raise_exception=False)
    except CheckFailure:
        raise
    except Exception as e:
        fail("Your layer must also work in float64 (layer.double()), so that "
             "torch.autograd.gradcheck can compare its gradients with finite differences.",
             f"{type(e).__name__}: {e}. Create new tensors with the dtype and device of x "
             "(torch.zeros_like, x.new_zeros), not with a fixed dtype.")
    if not ok:
        fail("The gradient check fails: in float64, the gradients autograd computes for x and p "
             "differ from finite differences (torch.autograd.gradcheck). Is part of the forward "
             "detached, or computed with a custom backward?")


def _merge_diagnosis(v: Variant, merged, after, base_only, base_w, base_b, snap, p) -> str:
    """Why the merged layer's output is wrong; names only what it compared."""
    if close(after, base_only):
        return "The merged layer equals the base layer alone: the update was not added."
    mw = merged.weight.detach()
    mb = torch.zeros(OUT) if merged.bias is None else merged.bias.detach()
    if snap is None:
        return "Its output differs from the layer's for that p."
    s = 2.0 / RANK
    A, B, C, S = snap
    cp = C @ p
    W_right = base_w + s * B @ (cp[:, None] * A)
    b_base = torch.zeros(OUT) if base_b is None else base_b
    shift = s * B @ (S @ p) if S is not None else torch.zeros(OUT)
    b_right = b_base + shift
    w_ok, b_ok = close(mw, W_right), close(mb, b_right)
    if w_ok and b_ok:
        return ("Its weight W + scaling * B diag(C p) A and its bias are both right, yet its "
                "output differs: does the returned module compute x Wᵀ + b as nn.Linear does?")
    if not w_ok:
        if close(mw, base_w + s * B @ A):
            why = ("Its weight is W + scaling * B A: the gate is missing. For one condition the "
                   "update is the matrix scaling * B diag(C p) A.")
        elif close(mw, base_w + s * B @ ((1 + cp)[:, None] * A)):
            why = "Its weight uses diag(1 + C p): the gate is C p."
        elif close(mw, base_w + B @ (cp[:, None] * A)):
            why = "Its weight is W + B diag(C p) A: the scaling alpha/rank is missing."
        elif close(mw, base_w):
            why = "Its weight is the base weight W: the gated update is missing from it."
        else:
            why = (f"Its weight differs from W + scaling * B diag(C p) A (shape (out, in)) by up "
                   f"to {max_diff(mw, W_right)}: check the gate, the scaling and the order of the "
                   "factors.")
        return why + (" Its bias is right." if b_ok else " Its bias is wrong too.")
    # the weight is right, the bias is not
    if v.shift and close(mb, b_base):
        return ("Its weight is right but the shift is missing from the bias: for a fixed p, "
                "scaling * B S p is a constant added to every output — a conditional bias"
                + (" — and the base layer has no bias here, so the merged layer needs one of "
                   "its own." if base_b is None else "."))
    if v.shift and close(mb, b_base + shift / s):
        return ("Its weight is right, but its bias is b + B S p: the shift needs the scaling "
                "alpha/rank too, b + scaling * B S p.")
    return ("Its weight is right, but its bias is not: it must be "
            + ("b + scaling * B S p" if v.shift else "the base layer's b, unchanged"
               if base_b is not None else "zero or absent (the base layer has no bias)")
            + f"; largest difference {max_diff(mb, b_right)}.")


def check_merge(cls, merge_fn: Callable, v: Variant) -> None:
    """merge_fn(layer, p) returns an nn.Linear computing layer(x, p) for that p; bias kept
    (RSS: the shift goes into the bias, created when the base has none); no autograd history.
    The given layer still computes what it computed, for every condition — or, where the
    notebook allows merging in place (03), the merge returned layer.base_layer itself and the
    layer is its merged base plus its unchanged adapter."""
    name = getattr(merge_fn, "__name__", "merge")
    pending = []  # what the merge did to the given layer: judged once the merged layers are
    for bias in (True, False):
        for k, p_scale in enumerate((1.0, -2.0)):
            layer = make_layer(cls, v, alpha=2.0, bias=bias, seed=43 + k)
            p = randn(COND, seed=44 + k, scale=p_scale)
            p_other = randn(COND, seed=46 + k)
            x = randn(1, 6, IN, seed=45)
            where = "" if bias else " on a base layer without bias"

            def both(m, x=x, p=p, p_other=p_other):  # at the merge's p and at another condition
                return torch.cat([forward(m, x, p[None], IN, OUT),
                                  forward(m, x, p_other[None], IN, OUT)])

            with torch.no_grad():
                before_both = both(layer).detach().clone()
                before = before_both[:1]
                base = find_base(layer)
                base_w = base.weight.detach().clone()
                base_b = None if base.bias is None else base.bias.detach().clone()
                base_only = base(x).detach().clone()
            try:
                f = find_cond_factors(layer, v)
                snap = (f.A.value.clone(), f.B.value.clone(), f.C.value.clone(),
                        None if f.S is None else f.S.value.clone())
            except CheckFailure:
                snap = None  # the factors' shapes are check_frozen's business
            params0 = {n: q.detach().clone() for n, q in layer.named_parameters()}
            try:
                merged = call(merge_fn, layer, p.clone(),
                              what=f"{name}(layer, p) with p of shape ({COND},){where}")
            except TimedOut:
                raise
            except CheckFailure as e:
                hint = ("" if bias else
                        " The base layer has no bias here (base_layer.bias is None): "
                        + ("the shift scaling * B S p still needs one, so give the merged layer "
                           "its own, e.g. a new nn.Linear(in, out, bias=True)." if v.shift else
                           "fold the update into the weight only, and give the merged layer no "
                           "bias."))
                fail(f"Your {name} crashed{where}.{hint}", f"{e}", key=v.key("merge_crash"))
            if not isinstance(merged, nn.Linear):
                fail(f"Your {name} must return an nn.Linear, got {type(merged).__name__}.",
                     key=v.key("merge_type"))
            if (merged.in_features, merged.out_features) != (IN, OUT):
                fail(f"The merged layer must map {IN} -> {OUT} features, got "
                     f"{merged.in_features} -> {merged.out_features}.", key=v.key("merge_type"))
            for pname, t in (("weight", merged.weight), ("bias", merged.bias)):
                if t is not None and t.grad_fn is not None:
                    fail(f"The merged {pname} carries autograd history ({type(t.grad_fn).__name__}): "
                         "do the merge under torch.no_grad().", key=v.key("merge_history"))
            if bias and merged.bias is None:
                fail("The merged layer lost the base layer's bias.", key=v.key("merge_bias"))
            if v.shift and merged.bias is None:
                fail("For a fixed p the shift scaling * B S p is a constant vector: it belongs in the "
                     "bias. When the base layer has none, the merged layer must get one.",
                     key=v.key("merge_bias"))
            with torch.no_grad():
                after = merged(x)
            if not close(after, before):
                fail("The merged layer must compute exactly what the layer computes for that p.",
                     f"bias={bias}, p of shape ({COND},). "
                     + _merge_diagnosis(v, merged, after, base_only, base_w, base_b, snap, p),
                     key=v.key("merge_function"))
            pending.append((layer, merged, x, before_both, base_only, params0, both))
    for layer, merged, x, before_both, base_only, params0, both in pending:
        check_layer_after_merge(
            layer, merged, name, x, before_both, base_only, params0, run=both,
            in_place_ok=v.merge_in_place, key=v.key("merge_leaves_layer"),
            what="layer(x, p) (at the merge's p and at another condition)",
            not_in_place=(": the merge is for one condition p, so a layer merged in place is "
                          "wrong for every other p' (it adds the update for p on top of its own)"))


def check_not_reference(cls, merge_fn: Callable | None, v: Variant) -> None:
    """The submission implements the layer rather than subclassing or calling lorakit's."""
    _probe.assert_own_implementation(cls, v.cls_name, lambda: make_layer(cls, v, random=False),
                                     (merge_fn,))
