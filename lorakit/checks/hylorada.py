"""Behavioural checks for notebook 06 (HyLoRADA, seed 003).

Contract: ``HyLoRADALinear(base_layer, rank=8, alpha=16)`` keeps ``self.base_layer``
and ``self.scaling = alpha / rank``; ``forward(x)`` takes x of shape (..., in_features) and
computes, with W (out, in) and b the frozen base's weight and bias::

    V     = W + s·B A                       A (r, in), B (out, r), s = alpha / rank
    n_i   = ‖V_i‖                            row norms, treated as constants in backward
    γ     = σ(g),   β = σ(b_res)             g, b_res: two trainable scalars (the logits)
    m_eff = γ·m + (1 − γ)·m_init             m (out,) trainable; m_init = ‖W_i‖, frozen
    y     = (1 − β)·[(m_eff / n) ⊙ (V x) + b] + β·[V x + b]      the DoRA and LoRA paths

At init A has orthonormal rows (``nn.init.orthogonal_``), B = 0 and m = m_init = ‖W‖_row, so
the layer equals its base. The initial values of the two logits are free (the seed's 0 and 0.1
are fine): the checks set them.

Nothing else is assumed. A and B are found among the trainable parameters by shape (either
orientation, nn.Parameter or nn.Linear); m is the trainable vector with out_features entries;
the two logits are the trainable parameters with one element (shape () or (1,)). Which scalar
is the gate and which the blend is found by behaviour: the forward check sets them to two
different values and accepts the reading that matches the definition. m_init may be a buffer,
a frozen tensor, or recomputed from W. Probe layers are non-square with in, out and rank pairwise
different, and their rows have norms far from 1. The orthogonal-init check tests what
"orthonormal rows" says, A Aᵀ = I (an orthogonal A rescaled, e.g. to Kaiming's row length, fails).

As for DoRA (``_dora_family`` holds the shared parts): eval() computes the same function, no
state survives a call, gradients reach x, and those of x, m and the two logits are the
derivatives of the layer's own forward (gradcheck). Checks other than the shapes check probe
with 2-D x. Each check raises ``CheckFailure`` (an AssertionError) whose message names the
concept and whose ``key`` is ``hylorada.<concept>``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from . import _dora_family as family
from ._dora_family import IN, OUT, RANK, Member, Parts, concept, find_magnitude, find_scalars
from ._dora_family import probe_base as _base
from ._probe import (
    CheckFailure,
    call,
    close,
    fail,
    find_base,
    make_base,
    randn,
    randomize_adapters,
    run_checks,
    trainable,
)

# The values the checks give the two logits (the gate and the blend, in either order).
LOGITS = ((0.8, -0.6), (-1.2, 0.5))

INIT_HINT = ("HyLoRADA starts as its base only if m_eff / ‖W + sBA‖ = 1 for every row at init: "
             "B = 0 and m = m_init = ‖W_i‖ = W.norm(dim=1), as in DoRA.")


# --- building probe layers -------------------------------------------------------------------

def _build(cls, base: nn.Linear, rank: int = RANK, alpha: float = 2.0 * RANK, seed: int = 0) -> nn.Module:
    return family.build_layer(cls, base, seed=seed, rank=rank, alpha=alpha)


def _run(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return family.run(layer, x)


def find_parts(layer: nn.Module, in_f: int = IN, out_f: int = OUT, rank: int = RANK) -> Parts:
    """The student's A (r, in), B (out, r), m (out,) and the two logits, found by shape."""
    return family.find_parts(layer, in_f, out_f, rank)


def _random_values(base: nn.Linear, rank: int, seed: int):
    """Seeded non-zero A, B and a magnitude moved away from the row norms of W."""
    return family.random_values(base, rank, seed, scale=0.3)


def _prepared(cls, *, rank=RANK, alpha=2.0 * RANK, bias=False, seed=0, logits=LOGITS[0], values=None):
    """A student layer with seeded non-zero A, B, a moved m and the logits set to ``logits``."""
    base = _base(IN, OUT, bias=bias, seed=seed)
    layer = _build(cls, base, rank, alpha, seed=seed)
    parts = find_parts(layer, IN, OUT, rank)
    A, B, m = values if values is not None else _random_values(parts.base, rank, seed + 1)
    parts.assign(A, B, m, logits)
    return layer, parts


def _member_prepare(layer: nn.Module, seed: int) -> Parts:
    parts = find_parts(layer)
    parts.assign(*_random_values(parts.base, RANK, seed), LOGITS[0])
    return parts


# How the family's shared checks (train/eval, optimizer steps, gradcheck) probe HyLoRADA.
MEMBER = Member(
    title="HyLoRADA",
    build=lambda cls, seed: _build(cls, _base(IN, OUT, bias=False, seed=seed), seed=seed),
    prepare=_member_prepare,
    inputs=lambda seed: (randn(6, IN, seed=seed),),
    matches=lambda layer, parts, inputs: _match(layer, parts, 2.0, inputs[0])[0] is not None,
)


def _need_scalars(parts: Parts) -> None:
    if len(parts.scalars) != 2:
        found = ", ".join(f"{n} {tuple(p.shape)}" for n, p in parts.scalars) or "none"
        fail("HyLoRADA has two trainable scalars per layer: the gate logit g (γ = σ(g)) and the "
             "blend logit (β = σ(logit)), each an nn.Parameter of shape () or (1,).",
             f"trainable one-element parameters found: {found}")
    if parts.m_param is None or not parts.m_param.requires_grad:
        fail(f"HyLoRADA trains a magnitude m with one entry per output, shape ({OUT},), as DoRA "
             "does; no trainable vector of that size was found.")


# --- the definition ---------------------------------------------------------------------------

def row_factor(W, A, B, m, m0, gamma, beta, s, *, stale_norm=False, detach=True):
    """c = (1 − β)·m_eff / n + β and V = W + sBA, in float64 (variants for diagnoses).

    n = ‖W + sBA‖_row (``stale_norm``: ‖W‖_row), m_eff = γ·m + (1 − γ)·m0 (see ``_dora_family``).
    """
    W, A, B, m, m0 = (t.double() for t in (W, A, B, m, m0))
    V = W + s * B @ A                                             # (out, in)
    n = family.row_norm(W if stale_norm else V, detach)          # (out,)
    m_eff = gamma * m + (1 - gamma) * m0
    return 1 + (1 - beta) * (m_eff / n - 1), V


def definition(W, b, A, B, m, m0, g, blend_logit, s, x, **variant):
    """y = (1 − β)·DoRA(x) + β·LoRA(x) = c ⊙ (V x) + b with γ = σ(g), β = σ(blend_logit)."""
    def sig(v):
        return torch.sigmoid(torch.as_tensor(float(v), dtype=torch.float64))

    if not variant:
        return family.family_output(W, b, A, B, s, x, m=m, m0=m0, gamma=sig(g),
                                    beta=sig(blend_logit))
    c, V = row_factor(W, A, B, m, m0, sig(g), sig(blend_logit), s, **variant)
    y = (x.double() @ V.T) * c
    return y if b is None else y + b.double()


def _variants(W, A, B, m, s):
    """(description, γ(g), β(l), m_init, s, extra kwargs) for the correct layer and common mistakes."""
    def sig(v):
        return torch.sigmoid(torch.as_tensor(float(v), dtype=torch.float64))

    rows, ones = W.double().norm(dim=1), torch.ones(W.shape[0], dtype=torch.float64)
    return [
        (None, sig, sig, rows, s, {}),
        ("β = σ(blend logit) is used without the sigmoid: the logit itself weighs the two paths. "
         "The seed's residual_weight = 0.1 is a sigmoid *input*, so β starts at σ(0.1) ≈ 0.525, "
         "not at 0.1.", sig, lambda v: float(v), rows, s, {}),
        ("γ = σ(g) is used without the sigmoid: the gate logit itself mixes m and m_init.",
         lambda v: float(v), sig, rows, s, {}),
        ("The gate weighs the wrong magnitude: m_eff must be σ(g)·m + (1 − σ(g))·m_init (the "
         "learned m gets the gate), your layer computes σ(g)·m_init + (1 − σ(g))·m.",
         lambda v: 1 - sig(v), sig, rows, s, {}),
        ("The blend weighs the wrong path: y = (1 − β)·DoRA(x) + β·LoRA(x) with β = σ(blend "
         "logit); your layer gives β to the DoRA path.", sig, lambda v: 1 - sig(v), rows, s, {}),
        ("The gate has no effect: your layer uses m itself, not m_eff = σ(g)·m + (1 − σ(g))·m_init.",
         lambda v: 1.0, sig, rows, s, {}),
        ("There is no LoRA path: your layer computes the gated DoRA output alone; "
         "y = (1 − β)·DoRA(x) + β·LoRA(x).", sig, lambda v: 0.0, rows, s, {}),
        ("m_init holds ones (seed 003's magnitude init): it must be the row norms of the "
         "pretrained weight, W.norm(dim=1), a frozen copy of m's initial value.",
         sig, sig, ones, s, {}),
        ("The scaling alpha/rank is missing from W + sBA.", sig, sig, rows, 1.0, {}),
        ("The row norm is that of the pretrained W (computed once at init?), not of the adapted "
         "weight W + sBA, recomputed in every forward.", sig, sig, rows, s, {"stale_norm": True}),
    ]


def _reference_logits(parts: Parts, order: tuple[int, int], logits) -> tuple[float, float]:
    """(gate logit, blend logit) for one reading of which scalar is which."""
    return logits[order[0]], logits[order[1]]


def _read_off(layer: nn.Module, parts: Parts) -> torch.Tensor:
    """The (out, in) matrix M with layer(x) = x Mᵀ (bias-free base), by feeding the identity."""
    with torch.no_grad():
        return _run(layer, torch.eye(IN)).double().T


def _match(layer: nn.Module, parts: Parts, s: float, x: torch.Tensor,
           logits=LOGITS[0]) -> tuple[tuple[int, int] | None, str]:
    """Which scalar is the gate: (order, "") if the layer matches the definition, else (None, why)."""
    W, A, B, m = parts.base.weight.detach(), parts.A(), parts.B(), parts.m()
    with torch.no_grad():
        y = _run(layer, x).double()
    orders = ((0, 1), (1, 0))
    for desc, gam, bet, m0, s_v, kw in _variants(W, A, B, m, s):
        for order in orders:
            g, blend = _reference_logits(parts, order, logits)
            c, V = row_factor(W, A, B, m, m0, gam(g), bet(blend), s_v, **kw)
            if close(y, (x.double() @ V.T) * c):
                return (order, "") if desc is None else (None, desc)
    M = _read_off(layer, parts)
    V = W.double() + s * B.double() @ A.double()
    if not close(y, x.double() @ M.T):
        return None, ("The output is not a linear map of x: the row factor depends on the weights "
                      "and the two scalars only (never normalise the activations).")
    if close(M, V):
        return None, "The layer computes W x + sBA x, plain LoRA: the DoRA path and the blend are missing."
    r = (M * V).sum(1) / (V * V).sum(1)
    if not close(M, r[:, None] * V):
        return None, ("The layer should rescale each row of W + sBA by one factor "
                      "c_i = (1 − β)·m_eff,i / n_i + β.")
    return None, ("Each row of W + sBA is rescaled, but not by (1 − β)·m_eff,i / n_i + β with "
                  "m_eff = σ(g)·m + (1 − σ(g))·m_init, n_i = ‖W_i + s(BA)_i‖ and β = σ(blend logit).")


# --- checks -----------------------------------------------------------------------------------

@concept("hylorada.shapes")
def check_shapes(cls: type) -> None:
    """Output (..., out) for 2-D, 3-D and 4-D inputs, non-square and square layers, and the
    values of an N-D input are those of its rows as a 2-D batch."""
    cases = [(IN, OUT, RANK, [(5, IN), (2, 3, IN), (2, 3, 4, IN)]),
             (16, 16, 4, [(1, 16), (16, 16), (2, 16, 16), (3, 1, 5, 16)])]
    for in_f, out_f, rank, shapes in cases:
        layer = _build(cls, _base(in_f, out_f, seed=1), rank, 2.0 * rank, seed=1)
        randomize_adapters(layer, seed=2, scale=0.2)
        for shape in shapes:
            x = randn(*shape, seed=3)
            y = _run(layer, x)
            want = shape[:-1] + (out_f,)
            if tuple(y.shape) != want:
                fail(f"Wrong output shape: for x of shape {shape} a {in_f}->{out_f} layer must "
                     f"return {want}, got {tuple(y.shape)}.",
                     "The row factor c (one entry per output feature, shape (out,)) multiplies the "
                     "last dimension of W x + sBA x; the gate and the blend are single numbers.")
            if len(shape) > 2:
                flat = _run(layer, x.reshape(-1, in_f)).reshape(want)
                if not close(y, flat):
                    fail(f"For x of shape {shape} the output has the right shape but not the values "
                         "the same rows give as a 2-D batch x.reshape(-1, in_features): the layer "
                         "must act on the last dimension only, every position on its own.",
                         f"{in_f}->{out_f} layer: largest difference {family.largest_difference(y, flat)}.")


@concept("hylorada.frozen")
def check_frozen(cls: type, in_f: int = IN, out_f: int = OUT, rank: int = RANK) -> None:
    """The base is frozen and exactly r(in + out) + out + 2 parameters train."""
    layer = _build(cls, _base(in_f, out_f, seed=2), rank, 2.0 * rank, seed=2)
    base = find_base(layer)
    unfrozen = [n for n, p in base.named_parameters() if p.requires_grad]
    if unfrozen:
        fail("The pretrained layer must be frozen: HyLoRADA trains only A, B, m, the gate and the blend.",
             f"base_layer parameters that still require grad: {unfrozen}")
    params = trainable(layer)
    n = sum(p.numel() for _, p in params)
    want = rank * (in_f + out_f) + out_f + 2
    if n == want:
        return
    listing = ", ".join(f"{name} {tuple(p.shape)}" for name, p in params) or "none"
    head = (f"HyLoRADA trains exactly r(in + out) + out + 2 = {rank}·({in_f} + {out_f}) + {out_f} + 2 "
            f"= {want} parameters (A r×in, B out×r, the magnitude m (out,), and two scalars: the "
            f"gate logit and the blend logit); your layer trains {n}.")
    vectors = [name for name, p in params if p.numel() == out_f]
    scalars = find_scalars(layer)
    k = "hylorada.param_count"
    if len(vectors) == 2 and n == want + out_f:
        why = (f"Two trainable vectors of size {out_f} ({', '.join(vectors)}): m_init is the frozen "
               "reference magnitude (register it as a buffer), only m learns.")
        k = "hylorada.m_init_frozen"
    elif len(scalars) < 2 and n == want - 2 + len(scalars):
        why = ("The gate and blend logits must both be trainable scalars, nn.Parameter(torch.tensor(0.0)) "
               "(a Python float or a buffer does not learn).")
        k = "hylorada.scalars_trainable"
    elif len(vectors) > 1 and len(scalars) < 2:
        why = ("The seed's gate and blend are one scalar each per layer, not one per output "
               "feature.")
    else:
        why = ""
    fail(head, (why + "\n  " if why else "") + f"trainable parameters: {listing}", key=k)


def _init_diagnosis(layer: nn.Module, bias: bool) -> str:
    base = find_base(layer)
    rows = base.weight.detach().norm(dim=1)
    mag = find_magnitude(layer, OUT)
    if mag is None:
        return f"No vector with {OUT} entries (one per output) outside the base layer: where is m?"
    m = mag[1].detach().reshape(-1)
    if close(m, torch.ones_like(m)):
        return (f"The magnitude starts at ones, as in seed 003. The DoRA path then scales output i "
                f"by m_eff,i / ‖W_i‖ = 1 / ‖W_i‖ (here between {1 / rows.max():.2f} and "
                f"{1 / rows.min():.2f}) and the blend lets about half of that through: the layer does "
                "not start as the pretrained layer unless every row of W has norm 1. Start m (and "
                "m_init) at W.norm(dim=1).")
    if not close(m, rows, rtol=1e-5, atol=1e-6):
        return "The magnitude m must start at the row norms of W, W.norm(dim=1), shape (out,). " + INIT_HINT
    try:
        parts = find_parts(layer)
    except CheckFailure as e:
        return str(e)
    if parts.B().abs().max() > 0:
        return "B is not zero at init, so W + sBA differs from W. Start B at zero (and A orthogonal)."
    if bias:
        return ("Without a bias the layer starts right: with one it does not. The bias must be added "
                "once, outside the rescaling: both paths add b, so (1 − β)·b + β·b = b.")
    M = _read_off(layer, parts)                    # (out, in): layer(x) = x Mᵀ, bias-free base
    W = base.weight.detach().double()
    r = (M * W).sum(1) / (W * W).sum(1)             # (out,): the best factor per row
    if not close(M, r[:, None] * W):                # not one factor per row
        return ("Your layer rescales the weights of one output row by different factors for "
                "different inputs: the norm is over the wrong axis. nn.Linear stores W as (out, in), "
                "so the norm of each output's weights is W.norm(dim=1), one per row (the paper's "
                "column norm is for W stored as (in, out)).")
    return ("m starts at ‖W‖_row and B = 0, yet each row is rescaled: m_eff = σ(g)·m + (1 − σ(g))·"
            "m_init must equal ‖W_i‖ at init, so both m and m_init start at W.norm(dim=1) and both "
            "terms of m_eff are there. " + INIT_HINT)


@concept("hylorada.identity_init")
def check_identity_at_init(cls: type) -> None:
    """At init the layer computes exactly what its base computes (B = 0, m = m_init = ‖W‖_row)."""
    for bias in (False, True):
        layer = _build(cls, _base(IN, OUT, bias=bias, seed=5), seed=5)
        base = find_base(layer)
        x = randn(5, IN, seed=6)
        y = _run(layer, x)
        with torch.no_grad():
            want = base(x)
        if y.shape == want.shape and close(y, want, rtol=1e-5, atol=1e-5):
            continue
        fail("At init the layer must equal the pretrained layer, so that fine-tuning starts "
             "from the pretrained function: B = 0 and m = m_init = ‖W‖_row make both paths "
             "return W x + b.",
             f"x of shape {tuple(x.shape)}, bias={bias}: largest difference "
             f"{family.largest_difference(y, want)}. " + _init_diagnosis(layer, bias))


@concept("hylorada.orthogonal_init")
def check_orthogonal_init(cls: type) -> None:
    """At init A (r, in) has orthonormal rows: A Aᵀ = I (largest entry of |A Aᵀ − I| ≤ 1e-4)."""
    for in_f, out_f, rank, seed in [(IN, OUT, RANK, 7), (40, 7, 5, 8), (40, 7, 5, 9)]:
        layer = _build(cls, _base(in_f, out_f, seed=seed), rank, 2.0 * rank, seed=seed)
        A = family.find_parts(layer, in_f, out_f, rank).A().double()     # (r, in)
        G = A @ A.T                                                       # (r, r)
        eye = torch.eye(rank, dtype=G.dtype)
        err = (G - eye).abs().max().item()
        if err <= 1e-4:
            continue
        d = G.diagonal()
        where = f"{in_f}->{out_f} layer, rank {rank}"
        if d.min() <= 1e-12:
            fail("A must start random with orthonormal rows (nn.init.orthogonal_), not at zero: "
                 "with B = 0 as well, B would receive no gradient and nothing could learn.",
                 f"{where}: a row of A is zero.")
        cos = G / torch.sqrt(d[:, None] * d[None, :])
        off = (cos - eye).abs().max().item()
        norms = d.sqrt()
        head = ("HyLoRADA's first change to DoRA: A starts with orthonormal rows, A Aᵀ = I "
                "(nn.init.orthogonal_ on the (rank, in) matrix, gain 1), instead of LoRA's "
                "Kaiming-uniform rows, which point in random directions with norm ≈ 0.58.")
        observed = (f"{where}: largest entry of |A Aᵀ − I| {err:.3g}; largest |cosine| between two "
                    f"rows {off:.3g} (0 for orthogonal rows); row norms {norms.min():.3f} to "
                    f"{norms.max():.3f} (1 for orthonormal rows).")
        if off <= 1e-4:
            fail(head, observed + " The rows are orthogonal but do not have norm 1: is A rescaled "
                                  "after the orthogonal init (a gain, or a factor like 1/√in)? "
                                  "Orthonormal means both orthogonal and of unit length.")
        fail(head, observed)


@concept("hylorada.forward")
def check_forward(cls: type) -> None:
    """With non-zero A, B, a moved m and moved logits: y = (1 − β)·DoRA(x) + β·LoRA(x)."""
    rank, alpha = RANK, 2.0 * RANK
    layer, parts = _prepared(cls, rank=rank, alpha=alpha, bias=False, seed=9)
    got = getattr(layer, "scaling", None)
    if not isinstance(got, (int, float, torch.Tensor)) or abs(float(got) - alpha / rank) > 1e-9:
        fail(f"The attribute self.scaling must be alpha / rank = {alpha:g}/{rank} = {alpha / rank:g}, "
             f"got {got!r}.", key="hylorada.scaling_attribute")
    _need_scalars(parts)
    s = alpha / rank
    order = None
    x = randn(4, IN, seed=10)
    for logits in LOGITS:
        parts.assign(parts.A(), parts.B(), parts.m(), logits)
        found, why = _match(layer, parts, s, x, logits)
        if found is None or (order is not None and found != order):
            if found is not None:
                why = ("The gate and the blend swap roles between calls: each scalar must keep "
                       "its meaning.")
            fail("With non-zero A, B, a trained magnitude and moved logits the layer must compute "
                 "y = (1 − β)·[(m_eff / n) ⊙ (W + sBA)x + b] + β·[(W + sBA)x + b], with "
                 "m_eff = σ(g)·m + (1 − σ(g))·m_init, β = σ(blend logit) and n the detached row "
                 "norms of W + sBA.",
                 f"x of shape {tuple(x.shape)}, bias-free base, the two scalar parameters set to "
                 f"{logits[0]:g} and {logits[1]:g}. {why}")
        order = found


@concept("hylorada.eval_mode")
def check_train_eval(cls: type) -> None:
    """eval() computes the same function, with the same gradients, as train() (no dropout)."""
    family.check_train_eval(MEMBER, cls, seed=30)


@concept("hylorada.stale_state")
def check_training_steps(cls: type) -> None:
    """After each of 3 Adam steps, and after each edit of the parameters in eval(), the layer
    computes what a fresh layer holding the same parameter values computes."""
    family.check_training_steps(MEMBER, cls, seed=31)


@concept("hylorada.bias")
def check_bias(cls: type) -> None:
    """The bias is added once, after the rescaling and outside the blend: y(with b) − y(without) = b."""
    with_b, parts = _prepared(cls, bias=True, seed=11)
    base = parts.base
    no_b_base = make_base(IN, OUT, bias=False)
    with torch.no_grad():
        no_b_base.weight.copy_(base.weight)
    without = _build(cls, no_b_base, seed=11)
    find_parts(without).assign(parts.A(), parts.B(), parts.m(), LOGITS[0])
    x = randn(6, IN, seed=12)
    with torch.no_grad():
        diff = (_run(with_b, x) - _run(without, x)).double()
    b = base.bias.detach().double()
    if close(diff, b.expand_as(diff)):
        return
    msg = ("The bias must be added once, outside the rescaling and the blend: both paths return "
           "... + b, so (1 − β)·b + β·b = b — the merged layer keeps the base's bias unchanged.")
    ratio = (diff[0] / b).double()
    if close(diff, torch.zeros_like(diff)):
        fail(msg, "Your layer ignores the base layer's bias.")
    if close(ratio, ratio.mean().expand_as(ratio)) and close(diff, (ratio.mean() * b).expand_as(diff)):
        fail(msg, f"Your layer multiplies the bias by {ratio.mean():.3f}: is the bias missing from one "
                  "of the two paths (then the blend weighs it by β or 1 − β)?")
    fail(msg, "Your layer rescales the bias row by row (is base_layer(x), bias included, inside the "
              "DoRA rescaling?). With m = ‖W‖_row the factor is 1 at init and hides this; once m or "
              "B move, the bias drifts with them.")


@concept("hylorada.norm_detached")
def check_norm_detached(cls: type) -> None:
    """The gradients of A and B are those of c ⊙ (W + sBA)x with the row factor c held constant."""
    s = 2.0
    layer, parts = _prepared(cls, bias=False, seed=13)
    M = _read_off(layer, parts)
    W = parts.base.weight.detach().double()
    A0, B0 = parts.A().double(), parts.B().double()
    V = W + s * B0 @ A0
    c = (M * V).sum(1) / (V * V).sum(1)
    if not close(M, c[:, None] * V):
        fail("The gradients can only be checked once forward rescales the rows of W + sBA: fix the "
             "'forward' check first.")
    x, g = randn(6, IN, seed=14), randn(6, OUT, seed=15)
    layer.zero_grad(set_to_none=True)
    y = _run(layer, x)
    if not y.requires_grad:
        fail("Your output carries no gradient, so A and B cannot learn: is forward computed under "
             "torch.no_grad() or detached?")
    call(lambda: (y * g).sum().backward(), what="Backward through your layer")
    got = parts.grad("A"), parts.grad("B")
    if got[0] is None or got[1] is None:
        fail("A and B must both receive a gradient once B is non-zero.")
    A, B = A0.clone().requires_grad_(), B0.clone().requires_grad_()
    ((x.double() @ (W + s * B @ A).T * c) * g.double()).sum().backward()
    if all(close(a.double(), w, rtol=1e-3, atol=1e-6) for a, w in zip(got, (A.grad, B.grad), strict=False)):
        return
    why = ""
    try:
        order, _ = _match(layer, parts, s, x)
        if order is not None and parts.m() is not None:
            gl, bl = _reference_logits(parts, order, LOGITS[0])
            A2, B2 = A0.clone().requires_grad_(), B0.clone().requires_grad_()
            W_, m_ = parts.base.weight.detach(), parts.m()
            out = definition(W_, None, A2, B2, m_, W_.norm(dim=1), gl, bl, s, x, detach=False)
            (out * g.double()).sum().backward()
            if all(close(a.double(), w, rtol=1e-3, atol=1e-6) for a, w in zip(got, (A2.grad, B2.grad), strict=False)):
                why = ("Your gradients of A and B are those of the un-detached norm: autograd "
                       "differentiates through ‖W + sBA‖. The forward values are the same either "
                       "way; only the update rule differs.")
    except CheckFailure:
        pass
    fail("As in DoRA (paper §4.3, and PEFT), the row norm ‖W + sBA‖ is a constant in backward: "
         "compute it under torch.no_grad() or call .detach() on it.", why)


@concept("hylorada.gradients")
def check_gradients(cls: type) -> None:
    """Gradients reach B and m at init; A, B, m, gate and blend once moved; never the base."""
    layer = _build(cls, _base(IN, OUT, seed=16), seed=16)
    base = find_base(layer)
    parts = find_parts(layer)
    x, target = randn(6, IN, seed=17), randn(6, OUT, seed=18)

    def backward():
        layer.zero_grad(set_to_none=True)
        for _, p in parts.scalars:
            p.grad = None
        if parts.m_param is not None:
            parts.m_param.grad = None
        loss = (_run(layer, x) - target).pow(2).mean()
        if not loss.requires_grad:
            fail("Your output carries no gradient: is forward computed under torch.no_grad() "
                 "or detached?")
        call(loss.backward, what="Backward through your layer")

    def has_grad(t):
        return t is not None and bool(torch.isfinite(t).all()) and t.abs().max() > 0

    if parts.m_param is None or not parts.m_param.requires_grad:
        fail(f"The magnitude m (one entry per output, shape ({OUT},)) must be trainable, an nn.Parameter.",
             key="hylorada.magnitude_trainable")
    backward()
    if not has_grad(parts.grad("B")):
        fail("At init B must receive a gradient, or the adapter can never start learning. "
             "With B = 0, A has to start non-zero (orthogonal).")
    if not has_grad(parts.grad("m")):
        fail("At init the magnitude m must receive a gradient: is m (through m_eff) part of what "
             "forward returns?")
    A, B, m = _random_values(parts.base, RANK, 19)
    parts.assign(A, B, m, LOGITS[0])
    backward()
    for name in ("A", "B", "m"):
        if not has_grad(parts.grad(name)):
            fail(f"Once B and m have moved, the loss must send a gradient to {name}. "
                 "Is every part of the adapter in what forward returns?")
    for name, p in parts.scalars:
        if not has_grad(p.grad):
            fail(f"Once B and m have moved, the scalar {name!r} must receive a gradient: the gate "
                 "and the blend logits enter forward through σ(·).",
                 "(At init both get exactly zero: the two paths agree and m = m_init — see the notebook.)")
    leaked = [n for n, p in base.named_parameters() if p.grad is not None]
    if leaked:
        fail("Gradients must never reach the frozen base layer.", f"base parameters with a grad: {leaked}",
             key="hylorada.base_gradient")


@concept("hylorada.gradcheck")
def check_gradcheck(cls: type) -> None:
    """dL/dx reaches the input, and the gradients of x, m, the gate and the blend are the
    derivatives of the layer's own forward (a gradient check in float64 when the layer
    runs in float64). A and B are the 'norm detached' check's."""
    family.check_gradcheck(MEMBER, cls, seed=32)


# --- a submission must implement the layer, not borrow lorakit's ------------------------------

@concept("hylorada.not_reference")
def check_not_reference(cls: type) -> None:
    """The submission implements HyLoRADA itself rather than subclassing or calling lorakit's."""
    family.not_reference(cls, "HyLoRADA", lambda: _build(cls, _base(IN, OUT)))


# One entry per graded test cell of the notebook, named as the samples' headers name them.
CHECKS: dict[str, Callable] = {
    "shapes": check_shapes,
    "frozen": check_frozen,
    "identity at init": check_identity_at_init,
    "orthogonal init": check_orthogonal_init,
    "forward": family.all_of(check_forward, check_train_eval, check_training_steps),
    "bias": check_bias,
    "norm detached": check_norm_detached,
    "gradients": family.all_of(check_gradients, check_gradcheck),
}


def report(cls: type, verbose: bool = True) -> dict[str, str | None]:
    """Run every check on ``cls`` and print a table; never raises.

    Returns {check name: None if passed, else the failure message}.
    """
    return run_checks(CHECKS, cls, verbose)
