"""Behavioural checks for notebook 07 (HyLoRADA v2: structure-conditioned scaling).

Contract: ``HyLoRADAv2Linear(base_layer, rank=8, alpha=16, structure_dim=32)`` keeps
``self.base_layer`` and ``self.scaling = alpha / rank``; ``forward(x, structure_prior=None)``
takes x of shape (B, T, in_features) and a prior of shape (B, T, structure_dim) (the checks pass
it positionally, ``layer(x, prior)``). With W, b the frozen base's weight and bias::

    n     = ‖W + s·B A‖_row  (detached)          one norm per ROW of the weight, never per token
    c     = 1 + (1 − β)(m_eff / n − 1),  m_eff = m0 + γ (m − m0),  γ = σ(g),  β = σ(b_res)
    f_t   = 0.5 + σ(w · P_t)                     one factor per position t, w: (structure_dim,)
    y_t   = c ⊙ (W x_t + f_t · s·B(A x_t)) + b   f scales the adapter's update term only

v1 (notebook 06) is this with f = 1; without a prior the layer computes v1. m (out,) starts at
the row norms m0 = ‖W_i‖, B at zero, g at 0 and b_res at 0.1 (v1's inits, not checked here);
w is a bias-free projection to one value, initialised to zero, so v2 starts as v1 (f = 1).

Nothing else is assumed. A, B (either orientation), m (a trainable vector with out_features
entries) and w (the trainable tensor with structure_dim entries: (structure_dim,), (1,
structure_dim) or (structure_dim, 1)) are found by shape; the probe layers have in, out, rank
and structure_dim pairwise different. The gate and blend logits are the trainable scalars: the
checks set them all to one value, so either order passes.

A prior whose shape is not x.shape[:-1] + (structure_dim,) must raise, including the shapes
torch would broadcast silently: (1, T, sd), (B, 1, sd), (T, sd) and (sd,). As for v1
(``_dora_family`` holds the shared parts): with a prior, eval() computes the same function, no
state survives a call (nor a prior: a call without one after calls with one is v1), gradients
reach x and the prior, and those of x, the prior, m, the scalars and w are the derivatives of
the layer's own forward (gradcheck). Checks probe with x of shape (B, T, in), as the contract
says. Each check raises ``CheckFailure`` (an AssertionError) whose message names the concept and
whose ``key`` is ``hylorada_v2.<concept>``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from . import _dora_family as family
from ._dora_family import IN, OUT, RANK, Member, Parts, concept, probe_base
from ._probe import (
    CheckFailure,
    TimedOut,
    call,
    close,
    fail,
    find_base,
    generator,
    randn,
    run_checks,
    student_code,
    trainable,
)

# Probe layers: non-square; in, out, rank, structure_dim and T pairwise different.
SD = 7
BATCH, T = 2, 5
LOGIT = 0.4          # the value given to the gate and blend logits when weights are randomised

FORMULA = "c ⊙ (W x_t + f_t · s·B A x_t) + b with f_t = 0.5 + σ(w · P_t)"


# --- building probe layers -------------------------------------------------------------------

def _base(in_f: int = IN, out_f: int = OUT, *, bias: bool = True, seed: int = 0) -> nn.Linear:
    return probe_base(in_f, out_f, bias=bias, seed=seed)


def _build(cls, base: nn.Linear, rank: int = RANK, alpha: float = 2.0 * RANK, sd: int = SD,
           seed: int = 0) -> nn.Module:
    return family.build_layer(cls, base, seed=seed, rank=rank, alpha=alpha, structure_dim=sd)


def _run(layer: nn.Module, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """layer(x) or layer(x, prior), with a time limit; crashes become a CheckFailure."""
    return family.run(layer, x, prior)


def _prior(seed: int, batch: int = BATCH, t: int = T, sd: int = SD, scale: float = 2.0):
    return randn(batch, t, sd, seed=seed, scale=scale)


# --- finding the parts -----------------------------------------------------------------------

def _listing(layer: nn.Module) -> str:
    return ", ".join(f"{n} {tuple(p.shape)}" for n, p in trainable(layer)) or "none"


def find_w(layer: nn.Module, sd: int = SD) -> tuple[str, nn.Parameter] | None:
    """The projection w: the trainable tensor with structure_dim entries (a vector or 1 x sd)."""
    base = getattr(layer, "base_layer", None)
    skip = {id(p) for p in base.parameters()} if isinstance(base, nn.Module) else set()
    for n, p in trainable(layer):
        if id(p) not in skip and family.is_vector(p, sd):
            return n, p
    return None


def _need_w(layer: nn.Module, sd: int = SD) -> tuple[str, nn.Parameter]:
    found = find_w(layer, sd)
    if found is None:
        fail(f"No trainable projection w with structure_dim = {sd} entries was found. v2 adds one: "
             f"nn.Linear(structure_dim, 1, bias=False) (weight (1, {sd})) or an nn.Parameter of "
             f"shape ({sd},).", f"trainable parameters: {_listing(layer)}", key=family.key("w_missing"))
    return found


def find_parts(layer: nn.Module, in_f: int = IN, out_f: int = OUT, rank: int = RANK,
               sd: int = SD) -> Parts:
    """A (r, in), B (out, r), the trainable magnitude m (out,), w (sd,) and the scalar logits."""
    parts = family.find_parts(layer, in_f, out_f, rank, sd=sd)
    if parts.m_param is not None and not (isinstance(parts.m_param, nn.Parameter)
                                          and parts.m_param.requires_grad):
        parts.m_name = parts.m_param = None          # only a trainable m counts here
    return parts


def _m(parts: Parts) -> torch.Tensor:
    """m (out,), or the row norms of W when the layer has no trainable magnitude."""
    m = parts.m()
    return parts.base.weight.detach().norm(dim=1) if m is None else m


@torch.no_grad()
def randomize(parts: Parts, seed: int, *, w: bool = True, scalars: bool = True) -> None:
    """Non-zero A and B, m moved off the row norms, (scalars=True) every trainable scalar at
    LOGIT, and (w=True) a random w."""
    g = generator(seed)
    for p in (parts.A_param, parts.B_param):
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    if parts.m_param is not None:
        out_f = parts.base.out_features
        moved = torch.linspace(0.5, 1.6, out_f)[torch.randperm(out_f, generator=g)]   # (out,)
        parts.m_param.copy_((parts.base.weight.norm(dim=1) * moved).reshape(parts.m_param.shape))
    for _, p in parts.scalars if scalars else ():
        p.fill_(LOGIT)
    if w and parts.w_param is not None:
        parts.w_param.copy_(torch.randn(parts.w_param.shape, generator=g) * 0.7)


# --- the definition ---------------------------------------------------------------------------

def definition(parts: Parts, x: torch.Tensor, f: torch.Tensor | None = None,
               variant: str = "right") -> torch.Tensor:
    """The contract's output in float64 for factor f (…, 1) (None: f = 1), or a known mistake.

    variant: "right" (the family's equation, see ``_dora_family``); "whole" (f ⊙ (c ⊙ z + b));
    "whole, bias outside" (f ⊙ c ⊙ z + b); "base" (c ⊙ (f W x + s B A x) + b); "token norm"
    (n_t = ‖W + f_t s B A‖_row); "outside c" (c ⊙ W x + f s B A x + b).
    """
    base = parts.base
    W = base.weight.detach().double()
    b = None if base.bias is None else base.bias.detach().double()
    A, B = parts.A().double(), parts.B().double()
    m, m0 = _m(parts).double(), W.norm(dim=1)
    s = float(parts.layer.scaling)
    gamma = beta = torch.sigmoid(torch.tensor(LOGIT, dtype=torch.float64))   # see randomize
    if variant == "right":
        return family.family_output(W, b, A, B, s, x, m=m, m0=m0, gamma=gamma, beta=beta, f=f)
    x = x.double()
    f = torch.ones(*x.shape[:-1], 1, dtype=torch.float64) if f is None else f.double()
    m_eff = m0 + gamma * (m - m0)                              # (out,)
    wx = x @ W.T                                               # (..., out)
    u = s * (x @ A.T) @ B.T                                    # (..., out)
    if variant == "token norm":
        V = W + s * f[..., None] * (B @ A)                     # (..., out, in): one per token
        c = 1 + (1 - beta) * (m_eff / V.norm(dim=-1) - 1)
    else:
        c = 1 + (1 - beta) * (m_eff / (W + s * B @ A).norm(dim=1) - 1)
    bias = 0 if b is None else b
    if variant == "whole":
        return f * (c * (wx + u) + bias)
    if variant == "whole, bias outside":
        return f * c * (wx + u) + bias
    if variant == "base":
        return c * (f * wx + u) + bias
    if variant == "token norm":
        return c * (wx + f * u) + bias
    if variant == "outside c":
        return c * wx + f * u + bias
    raise ValueError(f"unknown variant {variant!r}")


def factor(parts: Parts, prior: torch.Tensor, offset: float = 0.5) -> torch.Tensor:
    """f = offset + σ(w · prior), (…, 1), float64."""
    return offset + torch.sigmoid(prior.double() @ parts.w().double())[..., None]


def _prepared(cls, *, seed: int, bias: bool = True, w: bool = True, scalars: bool = True):
    layer = _build(cls, _base(bias=bias, seed=seed), seed=seed)
    parts = find_parts(layer)
    randomize(parts, seed + 1, w=w, scalars=scalars)
    return layer, parts


def _member_prepare(layer: nn.Module, seed: int) -> Parts:
    parts = find_parts(layer)
    randomize(parts, seed)
    return parts


# How the family's shared checks (train/eval, optimizer steps, gradcheck) probe v2: always with
# a prior, the input the contract describes (x (B, T, in), prior (B, T, structure_dim)).
MEMBER = Member(
    title="HyLoRADA v2",
    build=lambda cls, seed: _build(cls, _base(seed=seed), seed=seed),
    prepare=_member_prepare,
    inputs=lambda seed: (randn(BATCH, T, IN, seed=seed), _prior(seed + 1)),
    input_names=("x", "structure_prior"),
    recomputed="the row norm ‖W + sBA‖ or the factor f",
    matches=lambda layer, parts, inputs: close(
        _run(layer, *inputs).detach(), definition(parts, inputs[0], factor(parts, inputs[1]))),
    optional_inputs=True,
)


# --- checks -----------------------------------------------------------------------------------

@concept("hylorada_v2.shapes")
def check_shapes(cls: type) -> None:
    """Output (B, T, out) with and without a prior, non-square and square layers."""
    for in_f, out_f, rank, sd in [(IN, OUT, RANK, SD), (16, 16, 4, 6)]:
        layer = _build(cls, _base(in_f, out_f, seed=1), rank=rank, sd=sd, seed=1)
        cases = [((BATCH, T, in_f), (BATCH, T, sd)), ((1, 3, in_f), (1, 3, sd)),
                 ((BATCH, T, in_f), None)]
        for xs, ps in cases:
            x = randn(*xs, seed=2)
            prior = None if ps is None else randn(*ps, seed=3)
            y = _run(layer, x, prior)
            want = xs[:-1] + (out_f,)
            if tuple(y.shape) != want:
                fail(f"Wrong output shape: for x of shape {xs}"
                     + ("" if ps is None else f" and a prior of shape {ps}")
                     + f" a {in_f}->{out_f} layer must return {want}, got {tuple(y.shape)}.",
                     "The factor f has shape (B, T, 1): one number per position, broadcast over "
                     "the output features. The row scale c has shape (out,).")


@concept("hylorada_v2.trainable")
def check_trainable(cls: type, in_f: int = IN, out_f: int = OUT, rank: int = RANK,
                    sd: int = SD) -> None:
    """The base is frozen; r(in + out) + out + 2 + structure_dim parameters train."""
    layer = _build(cls, _base(in_f, out_f, seed=2), rank=rank, sd=sd, seed=2)
    base = find_base(layer)
    unfrozen = [n for n, p in base.named_parameters() if p.requires_grad]
    if unfrozen:
        fail("The pretrained layer must be frozen: v2 trains only the adapter.",
             f"base_layer parameters that still require grad: {unfrozen}")
    n = sum(p.numel() for _, p in trainable(layer))
    v1 = rank * (in_f + out_f) + out_f + 2
    want = v1 + sd
    if n == want:
        return
    hint = f"trainable parameters: {_listing(layer)}"
    if n == want + 1:
        hint = ("One parameter too many: is the projection w an nn.Linear with a bias? The factor is "
                "0.5 + σ(w · P) with a bias-free w (bias=False), so a zero prior means f = 1. " + hint)
    elif n == v1:
        hint = "That is v1's count: the projection w with structure_dim entries is missing. " + hint
    fail(f"HyLoRADA v2 trains v1's r(in + out) + out + 2 parameters (A, B, the magnitude m, the "
         f"gate and blend logits) plus structure_dim for w: {rank}*({in_f} + {out_f}) + {out_f} + 2 "
         f"+ {sd} = {want}; your layer trains {n}.", hint)


@concept("hylorada_v2.w_init")
def check_w_init(cls: type) -> None:
    """w exists (structure_dim entries, trainable) and starts at zero."""
    layer = _build(cls, _base(seed=3), seed=3)
    name, w = _need_w(layer)
    if w.detach().abs().max() != 0:
        fail("The projection w must start at zero: then w · P = 0 and f = 0.5 + σ(0) = 1 for "
             "every prior, so v2 starts exactly as v1 and the pretrained behaviour is kept. "
             "nn.Linear initialises its weight randomly: call nn.init.zeros_ on it.",
             f"{name} has largest entry {w.detach().abs().max().item():.3g} at init.")


@concept("hylorada_v2.identity_init")
def check_identity_at_init(cls: type) -> None:
    """At init the layer equals its base, with and without a prior (B = 0, m = ‖W‖_row, w = 0)."""
    for bias in (True, False):
        layer = _build(cls, _base(bias=bias, seed=4), seed=4)
        base = find_base(layer)
        x = randn(BATCH, T, IN, seed=5)
        with torch.no_grad():
            want = base(x)
        for prior in (None, _prior(6)):
            y = _run(layer, x, prior)
            if y.shape == want.shape and close(y, want, rtol=1e-5, atol=1e-5):
                continue
            diff = ((y - want).abs().max().item() if y.shape == want.shape
                    else f"shape {tuple(y.shape)} vs {tuple(want.shape)}")
            why = ("At init B = 0 makes the update zero and m = ‖W‖_row makes c = 1, so the layer "
                   "must equal the pretrained layer.")
            if prior is not None:
                y0 = _run(layer, x)
                if close(y0, want, rtol=1e-5, atol=1e-5):
                    why += (" It does without a prior but not with one: at init the update s·B A x "
                            "is zero, so a factor that multiplies only the update cannot change "
                            "anything. Yours multiplies something else (the base output?).")
            fail("At init the layer must equal the pretrained layer, with or without a structure "
                 "prior.", f"bias={bias}, prior={'none' if prior is None else 'random'}: "
                           f"largest difference {diff}. {why}")


@concept("hylorada_v2.no_prior")
def check_no_prior_is_v1(cls: type) -> None:
    """Without a prior: y = c ⊙ (W x + s B A x) + b, v1's function of the same weights (w ignored)."""
    for bias in (True, False):
        layer, parts = _prepared(cls, seed=7, bias=bias)
        x = randn(BATCH, T, IN, seed=8)
        y = _run(layer, x)
        want = definition(parts, x)
        if close(y, want):
            continue
        detail = f"bias={bias}. "
        if parts.m_param is None:
            detail += f"No trainable magnitude m of shape ({OUT},) was found. "
        if len(parts.scalars) < 2:
            detail += (f"v1 has two trainable scalars, the gate and blend logits; found "
                       f"{len(parts.scalars)}. ")
        if close(y, definition(parts, x, variant="outside c")):
            detail += ("Your update s·B A x is added after the row scale c: in v1 (and v2) c scales "
                       "W x + s·B A x together, c ⊙ (W x + s·B A x) + b.")
        fail("Without a structure prior v2 must compute v1: c ⊙ (W x + s·B A x) + b, with "
             "c = 1 + (1 − β)(m_eff / ‖W + s·B A‖_row − 1). The projection w plays no part.",
             detail + f"trainable parameters: {_listing(layer)}")


@concept("hylorada_v2.starts_as_v1")
def _v1_references(layer: nn.Module, parts: Parts, x: torch.Tensor) -> list[torch.Tensor]:
    """What v1 is for this layer: its own output without a prior and, when that differs from
    v1's definition, the definition too, so that a bug of the no-prior path alone is charged
    once, by 'no prior is v1'. (The definition assumes every trainable scalar at LOGIT.)"""
    y0 = _run(layer, x)
    want = definition(parts, x)
    return [y0] if close(y0, want) else [y0, want]


def check_starts_as_v1(cls: type) -> None:
    """With w at its init and B != 0: any prior gives v1's output (f = 1 at init)."""
    layer, parts = _prepared(cls, seed=9, w=False, scalars=False)   # all but A, B, m at init
    if len(parts.scalars) == 2:          # v1's gate and blend logits: their inits are free
        with torch.no_grad():
            for _, p in parts.scalars:
                p.fill_(LOGIT)
    x = randn(BATCH, T, IN, seed=10)
    refs = _v1_references(layer, parts, x)
    priors = (_prior(11), _prior(12, scale=5.0))
    ys = [_run(layer, x, prior) for prior in priors]
    if any(all(close(y, ref) for y in ys) for ref in refs):
        return
    detail = "A and B were given non-zero values; w was left at its initial value."
    if parts.w_param is not None and parts.w().abs().max() != 0:
        detail += " Your w is not zero at init, so f ≠ 1."
    elif close(ys[0], ys[1]):
        detail += (" Your factor at init is the same for every prior but not 1 — 0.5 if it is "
                   "σ(w · P): σ(0) = 0.5, so the factor needs the offset, f = 0.5 + σ(w · P), to "
                   "be 1 at init and to range over (0.5, 1.5).")
    fail("A fresh v2 must compute v1: with w at its initial value (zero) the factor is "
         "f = 0.5 + σ(0) = 1 for every prior, so a trained v1 adapter keeps its function when "
         "the prior is switched on.", detail)


def _factor_diagnosis(layer, parts: Parts, x, prior) -> str:
    y = _run(layer, x, prior).double()
    f = factor(parts, prior)
    for variant, why in [
        ("whole", "Your factor multiplies the whole output (base, bias and update). It must "
                  "multiply only the adapter's update term s·B A x."),
        ("whole, bias outside", "Your factor multiplies c ⊙ (W x + s·B A x): the pretrained part "
                                "W x is scaled too. It must multiply only the update s·B A x."),
        ("base", "Your factor multiplies the pretrained part W x instead of the update s·B A x."),
        ("token norm", "Your row norm depends on the position: you normalise W + f_t·s·B A for "
                       "each token. The norm is per row of the weight W + s·B A, the same for "
                       "every token; f_t scales the update term after that."),
    ]:
        if close(y, definition(parts, x, f, variant)):
            return why
    if close(y, definition(parts, x, factor(parts, prior, offset=0.0))):
        return ("Your factor is σ(w · P), without the 0.5 offset: it lies in (0, 1) and is 0.5 "
                "at init. The seed's factor is 0.5 + σ(w · P) ∈ (0.5, 1.5).")
    zero = torch.zeros_like(prior)
    if not close(_run(layer, x, zero), _run(layer, x)):
        return ("A zero prior changes your output, so your factor is not 0.5 + σ(w · 0) = 1 there: "
                "is there a bias in the projection, or a different offset?")
    return f"The layer should compute {FORMULA}."


@concept("hylorada_v2.factor_on_update")
def check_factor_on_update(cls: type) -> None:
    """With B, m, w random and a prior that differs per position: y_t = c ⊙ (W x_t + f_t s B A x_t) + b."""
    for bias in (True, False):
        layer, parts = _prepared(cls, seed=13, bias=bias)
        _need_w(layer)
        x = randn(BATCH, T, IN, seed=14)
        prior = _prior(15, scale=3.0)
        y = _run(layer, x, prior)
        f = factor(parts, prior)
        if close(y, definition(parts, x, f)):
            continue
        if not close(_run(layer, x), definition(parts, x)):
            fail("The factor cannot be checked while the layer differs from v1: fix the 'no prior "
                 "is v1' check first.", f"bias={bias}: with the prior the output is not "
                 f"{FORMULA}, and without one it is not v1 either.")
        fail(f"With a structure prior P each position t must compute {FORMULA}: the factor "
             "multiplies the adapter's update term only, before the row scale c, whose norm "
             "stays per row.", f"bias={bias}. " + _factor_diagnosis(layer, parts, x, prior))


@concept("hylorada_v2.zero_prior")
def check_zero_prior(cls: type) -> None:
    """A zero prior gives f = 1 whatever the weights: w is bias-free, the offset is 0.5."""
    layer, parts = _prepared(cls, seed=16)   # every trainable scalar (a bias too) is non-zero
    x = randn(BATCH, T, IN, seed=18)
    refs = _v1_references(layer, parts, x)
    y = _run(layer, x, torch.zeros(BATCH, T, SD))
    if any(close(y, ref) for ref in refs):
        return
    detail = ""
    if parts.w_param is not None and close(y, definition(parts, x, torch.full_like(y[..., :1], 0.5))):
        detail = ("Your factor is 0.5 for a zero prior: the offset is missing, f = 0.5 + σ(w · P), "
                  "not σ(w · P).")
    elif len(parts.scalars) > 2:
        detail = ("Your layer has more trainable scalars than v1's gate and blend logits: is the "
                  "projection an nn.Linear with a bias? Use bias=False.")
    fail("For a zero prior the factor must be exactly 0.5 + σ(w · 0) = 1, whatever w is: w is a "
         "bias-free projection, so a prior that carries no signal leaves the update unscaled.",
         detail or "A zero prior changed the output.")


@concept("hylorada_v2.per_position")
def check_per_position(cls: type) -> None:
    """Changing the prior at one position changes that position's output only."""
    layer, parts = _prepared(cls, seed=19)
    x = randn(BATCH, T, IN, seed=20)
    prior = _prior(21)
    changed = prior.clone()
    changed[0, 2] = randn(SD, seed=22, scale=4.0)
    with torch.no_grad():
        y, y2 = _run(layer, x, prior).double(), _run(layer, x, changed).double()
    if y.shape != y2.shape or y.shape[:2] != (BATCH, T):
        fail("The output must have one row per position, shape (B, T, out).")
    diff = (y - y2).abs().amax(dim=-1)                          # (B, T)
    others = diff.clone()
    others[0, 2] = 0
    if others.max() > 1e-6:
        where = [(int(b), int(t)) for b, t in (others > 1e-6).nonzero()][:4]
        fail("The structure prior acts per position: changing the prior of one token may change "
             "only that token's output. Each f_t = 0.5 + σ(w · P_t) uses its own P_t, and the "
             "row norm ‖W + s·B A‖ is a property of the weight, shared by all tokens.",
             f"Changing the prior at (batch 0, position 2) changed the outputs at {where}: does a "
             "mean or norm over positions (or the batch) enter your factor or your norm?")
    if diff[0, 2] <= 1e-6:
        fail("Changing the prior at one position must change that position's output (once w and B "
             "are non-zero): is the prior used at all?")


@concept("hylorada_v2.prior_shape")
def check_prior_shape(cls: type) -> None:
    """A prior whose shape is not x.shape[:-1] + (structure_dim,) raises an error."""
    layer, _ = _prepared(cls, seed=23)
    x = randn(BATCH, T, IN, seed=24)
    # wrong sizes, wrong order, a missing dimension, and the shapes that broadcast silently
    bad = [(BATCH, T, SD + 1), (BATCH, T + 1, SD), (BATCH + 1, T, SD), (T, BATCH, SD),
           (BATCH, T), (1, T, SD), (BATCH, 1, SD), (T, SD), (SD,)]
    accepted = []
    for shape in bad:
        prior = randn(*shape, seed=25)
        what = f"Forward on x of shape {tuple(x.shape)} with a prior of shape {shape}"
        try:
            with student_code(what):
                y = layer(x, prior)
        except TimedOut:
            raise
        except Exception:
            continue
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        accepted.append(f"{shape} (returned {got})")
    if accepted:
        fail("A structure prior whose shape is not x.shape[:-1] + (structure_dim,) must raise an "
             "error: broadcasting or ignoring a wrong prior silently trains the wrong thing.",
             f"For x of shape ({BATCH}, {T}, {IN}) the prior must have shape ({BATCH}, {T}, {SD}), "
             f"one vector per position; your layer accepted without an error the priors of shape "
             f"{', '.join(accepted)}. Compare structure_prior.shape with the expected shape and "
             "raise a ValueError that says both.")


@concept("hylorada_v2.gradients")
def check_gradients(cls: type) -> None:
    """Once B != 0, a prior sends gradients to A, B, m and w (even at w = 0); never to the base."""
    layer, parts = _prepared(cls, seed=26, w=False)
    _need_w(layer)
    x, target = randn(BATCH, T, IN, seed=27), randn(BATCH, T, OUT, seed=28)
    layer.zero_grad(set_to_none=True)
    loss = (_run(layer, x, _prior(29)) - target).pow(2).mean()
    if not loss.requires_grad:
        fail("Your output carries no gradient: is forward computed under torch.no_grad() or "
             "detached?")
    call(loss.backward, what="Backward through your layer")

    def ok(p):
        return p is not None and p.grad is not None and torch.isfinite(p.grad).all() \
            and p.grad.abs().max() > 0

    for name, p in (("A", parts.A_param), ("B", parts.B_param), ("the magnitude m", parts.m_param),
                    ("w", parts.w_param)):
        if not ok(p):
            fail(f"With a prior and a non-zero B the loss must send a gradient to {name}.",
                 "w gets one even at w = 0: ∂f/∂w = σ'(0)·P = P/4 and the update it scales is "
                 "non-zero. Is every part of v2 in what forward returns (and not under no_grad)?")
    leaked = [n for n, p in find_base(layer).named_parameters() if p.grad is not None]
    if leaked:
        fail("Gradients must never reach the frozen base layer.",
             f"base parameters with a grad: {leaked}", key="hylorada_v2.base_gradient")


@concept("hylorada_v2.gradcheck")
def check_gradcheck(cls: type) -> None:
    """Gradients reach x and the structure prior, and the gradients of x, the prior, m, the
    scalars and w are the derivatives of the layer's own forward (a gradient check in
    float64 when the layer runs in float64). A and B: the row norm is detached by contract."""
    family.check_gradcheck(MEMBER, cls, seed=32)


@concept("hylorada_v2.eval_mode")
def check_train_eval(cls: type) -> None:
    """With a prior, eval() computes the same function, with the same gradients, as train()."""
    family.check_train_eval(MEMBER, cls, seed=30)


@concept("hylorada_v2.stale_state")
def check_training_steps(cls: type) -> None:
    """With a prior, after each of 3 Adam steps and after each edit of the parameters in eval(),
    the layer computes what a fresh layer holding the same parameter values computes."""
    family.check_training_steps(MEMBER, cls, seed=31)


# --- a submission must implement the layer, not borrow lorakit's ------------------------------

@concept("hylorada_v2.not_reference")
def check_not_reference(cls: type) -> None:
    """The submission implements v2 itself rather than subclassing or calling lorakit's layers."""
    family.not_reference(cls, "HyLoRADAv2Linear", lambda: _build(cls, _base()),
                         note=" (building on the notebook's HyLoRADAv1Linear is fine)")


# One entry per check the notebook's test cells call, named as the samples' headers name them;
# "factor on update" and "gradients" each hold the checks their cell adds.
CHECKS: dict[str, Callable] = {
    "shapes": check_shapes,
    "trainable parameters": check_trainable,
    "w init": check_w_init,
    "identity at init": check_identity_at_init,
    "no prior is v1": check_no_prior_is_v1,
    "starts as v1": check_starts_as_v1,
    "factor on update": family.all_of(check_factor_on_update, check_train_eval,
                                      check_training_steps),
    "zero prior": check_zero_prior,
    "per position": check_per_position,
    "prior shape": check_prior_shape,
    "gradients": family.all_of(check_gradients, check_gradcheck),
}


def report(cls: type, verbose: bool = True) -> dict[str, str | None]:
    """Run every check on ``cls`` and print a table; never raises.

    Returns {check name: None if passed, else the failure message}.
    """
    return run_checks(CHECKS, cls, verbose)


__all__ = ["CHECKS", "report", "check_not_reference", "definition", "factor", "find_parts",
           "find_w", "CheckFailure", "check_shapes", "check_trainable", "check_w_init",
           "check_identity_at_init", "check_no_prior_is_v1", "check_starts_as_v1",
           "check_factor_on_update", "check_zero_prior", "check_per_position",
           "check_prior_shape", "check_gradients", "check_gradcheck", "check_train_eval",
           "check_training_steps"]
