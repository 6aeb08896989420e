"""Behavioural checks for notebook 05 (DoRA).

Contract: ``DoRALinear(base_layer, rank=8, alpha=16)`` keeps ``self.base_layer``
and ``self.scaling = alpha / rank``; ``forward(x)`` takes x of shape (..., in_features) and
computes, with W (out, in) and b the frozen base's weight and bias::

    V = W + scaling * B A                    A (r, in), B (out, r)
    y = m ⊙ (V x) / n + b,   n_i = ‖V_i‖       (the norm of each *row* of V, i.e. dim=1)

The magnitude m has shape (out,) and starts at the row norms of W (so the layer starts as its
base); n is treated as a constant in backward (detached, DoRA paper §4.3 and PEFT); the bias
is added after the rescaling. Forming V explicitly is allowed.

DoRA is the family's equation with γ = 1, β = 0, f = 1 (``_dora_family``, which finds the parts
and holds the shared checks). A and B are found among the trainable parameters by shape
(nn.Parameter or nn.Linear, either orientation); m is the tensor with out_features entries
outside the base layer (a trainable parameter when there is one). Probe layers are non-square
with in, out and rank pairwise different, so every shape is unambiguous.

What the contract implies and the checks test as well: the layer computes the same function in
``eval()`` (there is no dropout), every call computes it from the parameters' current values (no
state survives a call: optimizer steps and eval-mode edits are compared with a freshly built
layer holding the same values), and gradients reach the input x; those of x and m are the
derivatives of the layer's own forward (gradcheck), those of A and B follow a reference that
detaches the norm. Checks other than the shapes check probe with 2-D x. Each check raises
``CheckFailure`` (an AssertionError) whose message names the concept and whose ``key`` is a
stable concept key, ``dora.<concept>``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from . import _dora_family as family
from ._dora_family import IN, OUT, RANK, Member, Parts, concept, find_magnitude, vectors
from ._dora_family import probe_base as _base
from ._probe import (
    CheckFailure,
    TimedOut,
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

ROW_NORM_HINT = ("nn.Linear stores W as (out_features, in_features): row i holds the weights of "
                 "output i, so DoRA's norm is taken over each row, W.norm(dim=1). (The paper writes "
                 "a column norm because it stores W as (in, out).)")


# --- building probe layers -------------------------------------------------------------------

def _build(cls, base: nn.Linear, rank: int, alpha: float, seed: int = 0) -> nn.Module:
    return family.build_layer(cls, base, seed=seed, rank=rank, alpha=alpha)


def _axis_hint(layer: nn.Module, in_f: int, out_f: int) -> str:
    """Explain a vector with in_features entries: the norm was taken over the wrong axis."""
    if in_f == out_f:
        return ""
    wrong = vectors(layer, in_f)
    if wrong:
        n, t, _ = wrong[0]
        return (f"Your layer has a vector {n} of shape {tuple(t.shape)}: one entry per *input* "
                f"feature, as W.norm(dim=0) gives. DoRA needs one magnitude per output, shape "
                f"({out_f},). " + ROW_NORM_HINT)
    return ""


def _run(layer: nn.Module, x: torch.Tensor, in_f: int = IN, out_f: int = OUT) -> torch.Tensor:
    """forward with a time limit; a crash caused by a norm over the wrong axis says so."""
    try:
        return family.run(layer, x)
    except TimedOut:
        raise
    except CheckFailure as e:
        hint = _axis_hint(layer, in_f, out_f)
        if hint:
            fail(str(e), hint, key=e.key)
        raise


def find_parts(layer: nn.Module, in_f: int = IN, out_f: int = OUT, rank: int = RANK) -> Parts:
    """The student's A (r, in), B (out, r) and m (out,), found by shape (see the module docstring)."""
    return family.find_parts(layer, in_f, out_f, rank)


def _random_values(base: nn.Linear, rank: int, seed: int):
    """Seeded non-zero A, B and a magnitude moved away from the row norms of W."""
    return family.random_values(base, rank, seed, scale=0.2)


def _prepared(cls, in_f=IN, out_f=OUT, rank=RANK, alpha=float(RANK), bias=True, seed=0,
              values=None):
    """A student layer with seeded non-zero A, B and a moved m (where m can be found)."""
    base = _base(in_f, out_f, bias=bias, seed=seed)
    layer = _build(cls, base, rank, alpha, seed=seed)
    parts = find_parts(layer, in_f, out_f, rank)
    A, B, m = values if values is not None else _random_values(parts.base, rank, seed + 1)
    parts.assign(A, B, m)
    return layer, parts


# --- the definition ---------------------------------------------------------------------------

def definition(W, b, A, B, m, s, x, *, s_norm=None, detach=True, bias_inside=False):
    """y = m ⊙ (W + sBA)x / ‖W + s_norm BA‖_row + b, in float64 (variants for diagnoses).

    DoRA is the family's equation with γ = 1, β = 0, f = 1 (see ``_dora_family``).
    """
    if not bias_inside:
        norm_of = None if s_norm is None else W.double() + s_norm * B.double() @ A.double()
        return family.family_output(W, b, A, B, s, x, m=m, detach=detach, norm_of=norm_of)
    W, A, B, m, x = (t.double() for t in (W, A, B, m, x))
    V = W + s * B @ A                                             # (out, in)
    n = family.row_norm(V if s_norm is None else W + s_norm * B @ A, detach)
    h = x @ V.T if b is None else x @ V.T + b.double()             # (..., out)
    return h * (m / n)


def _reference(parts: Parts, s: float, x: torch.Tensor, **kw) -> torch.Tensor:
    base = parts.base
    m = parts.m()
    if m is None:
        m = base.weight.detach().norm(dim=1)
    return definition(base.weight.detach(), None if base.bias is None else base.bias.detach(),
                      parts.A(), parts.B(), m, s, x, **kw)


def _member_prepare(layer: nn.Module, seed: int) -> Parts:
    parts = find_parts(layer)
    parts.assign(*_random_values(parts.base, RANK, seed))
    return parts


# How the family's shared checks (train/eval, optimizer steps, gradcheck) probe DoRA.
MEMBER = Member(
    title="DoRA",
    build=lambda cls, seed: _build(cls, _base(IN, OUT, seed=seed), RANK, 2.0 * RANK, seed=seed),
    prepare=_member_prepare,
    inputs=lambda seed: (randn(6, IN, seed=seed),),
    matches=lambda layer, parts, inputs: close(_run(layer, inputs[0]).detach(),
                                               _reference(parts, 2.0, inputs[0])),
)


# --- checks ---------------------------------------------------------------------------------
# Checks that are not about shapes probe with 2-D x, the simplest input: a forward that handles
# only 2-D input is charged once, by the shapes check.

@concept("dora.shapes")
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
            y = _run(layer, x, in_f, out_f)
            want = shape[:-1] + (out_f,)
            if tuple(y.shape) != want:
                fail(f"Wrong output shape: for x of shape {shape} a {in_f}->{out_f} layer must "
                     f"return {want}, got {tuple(y.shape)}.",
                     _axis_hint(layer, in_f, out_f) or
                     "The rescaling m / ‖W + sBA‖ has one entry per output feature and multiplies "
                     "the last dimension of the output.")
            if len(shape) > 2:
                flat = _run(layer, x.reshape(-1, in_f), in_f, out_f).reshape(want)
                if not close(y, flat):
                    fail(f"For x of shape {shape} the output has the right shape but not the values "
                         "the same rows give as a 2-D batch x.reshape(-1, in_features): the layer "
                         "must act on the last dimension only, every position on its own.",
                         f"{in_f}->{out_f} layer: largest difference {family.largest_difference(y, flat)}.")


@concept("dora.frozen")
def check_frozen(cls: type, in_f: int = IN, out_f: int = OUT, rank: int = RANK) -> None:
    """The base layer is frozen and exactly r*(in + out) + out parameters train."""
    layer = _build(cls, _base(in_f, out_f, seed=2), rank, 2.0 * rank, seed=2)
    base = find_base(layer)
    unfrozen = [n for n, p in base.named_parameters() if p.requires_grad]
    if unfrozen:
        fail("The pretrained layer must be frozen: DoRA trains only A, B and the magnitude m.",
             f"base_layer parameters that still require grad: {unfrozen}")
    params = trainable(layer)
    n = sum(p.numel() for _, p in params)
    want = rank * (in_f + out_f) + out_f
    if n == want:
        return
    listing = ", ".join(f"{name} {tuple(p.shape)}" for name, p in params) or "none"
    head = (f"DoRA trains exactly r*(in + out) + out = {rank}*({in_f} + {out_f}) + {out_f} = "
            f"{want} parameters (A is r x in, B is out x r, the magnitude m has one entry per "
            f"output); your layer trains {n}.")
    mag = find_magnitude(layer, out_f)
    if n == rank * (in_f + out_f) and mag is not None and not mag[1].requires_grad:
        fail(head, f"The magnitude ({mag[0]!r}) does not train: make it an nn.Parameter (not a buffer, "
                   "not requires_grad=False). Learning m is half of DoRA.",
             key="dora.magnitude_trainable")
    hint = _axis_hint(layer, in_f, out_f)
    fail(head, (hint + "\n  " if hint else "") + f"trainable parameters: {listing}",
         key="dora.param_count")


def _init_diagnosis(layer: nn.Module, in_f: int, out_f: int, rank: int) -> str:
    base = find_base(layer)
    W = base.weight.detach()
    hint = _axis_hint(layer, in_f, out_f)
    if hint:
        return hint
    mag = find_magnitude(layer, out_f)
    if mag is None:
        return (f"No vector with {out_f} entries (one per output) outside the base layer: where "
                "is the magnitude m?")
    m = mag[1].detach().reshape(-1).double()
    rows, cols = W.norm(dim=1).double(), W.norm(dim=0).double()
    if close(m, torch.ones_like(m)):
        return ("The magnitude starts at ones, as in seed 003. Then each output i is multiplied "
                f"by 1/‖W_i‖ at init (here between {1 / rows.max():.2f} and {1 / rows.min():.2f}): "
                "the layer does not start as the pretrained layer. Start m at W.norm(dim=1).")
    if in_f == out_f and close(m, cols):
        return ("The magnitude holds the *column* norms of W, W.norm(dim=0). On a square layer the "
                "shapes hide this mistake, and at init it can even cancel out. " + ROW_NORM_HINT)
    if not close(m, rows):
        return "The magnitude must start at the row norms of W, W.norm(dim=1), shape (out,)."
    return ""


@concept("dora.magnitude_init")
def check_magnitude_init(cls: type) -> None:
    """m has out_features entries and starts at the row norms of W (dim=1), also on square layers."""
    for in_f, out_f, rank in [(IN, OUT, RANK), (16, 16, 4)]:
        layer = _build(cls, _base(in_f, out_f, seed=4), rank, 2.0 * rank, seed=4)
        W = find_base(layer).weight.detach()
        mag = find_magnitude(layer, out_f)
        if mag is None:
            fail(f"DoRA's magnitude m is a vector with one entry per output feature, shape "
                 f"({out_f},) for a {in_f}->{out_f} layer; none was found outside the base layer.",
                 _axis_hint(layer, in_f, out_f) or
                 "Store it as an nn.Parameter of shape (out_features,).")
        m = mag[1].detach().reshape(-1)
        if not close(m, W.norm(dim=1), rtol=1e-5, atol=1e-6):
            fail("The magnitude m must start at the row norms of the pretrained weight, "
                 "m_i = ‖W_i‖ = W.norm(dim=1): then m / ‖W‖ = 1 and the layer starts as its base.",
                 f"{in_f}->{out_f} layer, vector {mag[0]!r}. " +
                 _init_diagnosis(layer, in_f, out_f, rank))


@concept("dora.identity_init")
def check_identity_at_init(cls: type) -> None:
    """At init the layer computes exactly what its base computes (B = 0, m = ‖W‖_row)."""
    for bias in (True, False):
        layer = _build(cls, _base(IN, OUT, bias=bias, seed=5), RANK, 2.0 * RANK, seed=5)
        base = find_base(layer)
        x = randn(5, IN, seed=6)
        y = _run(layer, x, IN, OUT)
        with torch.no_grad():
            want = base(x)
        if y.shape == want.shape and close(y, want, rtol=1e-5, atol=1e-5):
            continue
        diff = family.largest_difference(y, want)
        why = _init_diagnosis(layer, IN, OUT, RANK) or _column_norm_diagnosis(layer, base, x, y)
        if not why:
            try:
                B = find_parts(layer, IN, OUT, RANK).B()
                if B.abs().max() > 0:
                    why = ("B is not zero at init, so W + sBA differs from W. Start B at zero "
                           "(and A random), as in LoRA.")
            except CheckFailure as e:
                why = str(e)
        fail("At init the layer must equal the pretrained layer: B = 0 and m = ‖W‖_row make "
             "m ⊙ W x / ‖W‖_row = W x, so fine-tuning starts from the pretrained function.",
             f"x of shape {tuple(x.shape)}, bias={bias}: largest difference {diff}. {why}".rstrip())


def _column_norm_diagnosis(layer: nn.Module, base: nn.Linear, x: torch.Tensor,
                           y: torch.Tensor) -> str:
    """'' unless y = m ⊙ (W / ‖W‖_col) x + b: the norm taken over the columns (dim=0)."""
    try:
        m = find_parts(layer, IN, OUT, RANK).m()
    except CheckFailure:
        return ""
    if m is None:
        return ""
    m = m.reshape(-1, 1)                                                   # (out, 1)
    with torch.no_grad():
        W = base.weight.detach()                                           # (out, in)
        cols = m * W / W.norm(dim=0, keepdim=True)                         # (out, in)
        want = x @ cols.T + (0 if base.bias is None else base.bias.detach())
    if y.shape == want.shape and close(y, want, rtol=1e-4, atol=1e-5):
        return ("It equals m ⊙ (W / ‖W‖_col) x: the norm was taken over the columns (dim=0, one "
                "per input feature). DoRA divides each row of W + sBA (one per output) by its "
                "own norm: .norm(dim=1, keepdim=True).")
    return ""


def _effective(layer: nn.Module, in_f: int, out_f: int) -> torch.Tensor:
    """The (out, in) matrix M with layer(x) = M x, for a bias-free base."""
    with torch.no_grad():
        return _run(layer, torch.eye(in_f), in_f, out_f).T.double()


def _forward_diagnosis(layer: nn.Module, parts: Parts, s: float) -> str:
    base = parts.base
    in_f, out_f = base.in_features, base.out_features
    M = _effective(layer, in_f, out_f)
    x = randn(6, in_f, seed=21)
    with torch.no_grad():
        y = _run(layer, x, in_f, out_f).double()
    if not close(y, x.double() @ M.T, rtol=1e-4, atol=1e-5):
        return ("The output is not a linear map of x: the rescaling m / ‖W + sBA‖ depends on the "
                "weights only (never normalise the activations or the output).")
    W = base.weight.detach().double()
    V = W + s * parts.B().double() @ parts.A().double()
    m = parts.m()
    if close(M, V):
        return "The layer computes W x + sBA x, plain LoRA: the rescaling by m / ‖W + sBA‖ is missing."

    def dot(P, Q, d):
        return (P * Q).sum(d)

    r = dot(M, V, 1) / dot(V, V, 1)                 # row i of M = r_i V_i ?
    if close(M, r[:, None] * V):
        if m is None:
            return "Each row is rescaled, but no magnitude vector of shape (out,) was found."
        m = m.double()
        n, nW = V.norm(dim=1), W.norm(dim=1)
        for want, why in [(m / nW, "It divides by ‖W‖_row, the norm of the pretrained weight (a norm "
                                   "computed once at init?). The norm must be that of the adapted "
                                   "weight W + sBA, recomputed in every forward."),
                          (m, "It multiplies by m but never divides by the row norm ‖W + sBA‖."),
                          (1 / n, "It divides by the row norm but never multiplies by the magnitude m."),
                          (m * m / n, "It multiplies by m twice.")]:
            if close(r, want):
                return why
        return "Each row of W + sBA is rescaled, but not by m_i / ‖W_i + s(BA)_i‖."
    c = dot(M, V, 0) / dot(V, V, 0)                 # column j of M = c_j V_:j ?
    if close(M, V * c[None, :]):
        return "It rescales the *columns* of W + sBA (a norm over dim=0). " + ROW_NORM_HINT
    return ("The layer should compute m ⊙ (W + sBA) x / ‖W + sBA‖_row: the row norms of the adapted "
            "weight (dim=1), detached, with m of shape (out,).")


@concept("dora.forward")
def check_forward(cls: type) -> None:
    """With non-zero A, B and a moved m: y = m ⊙ (W + sBA)x / ‖W + sBA‖_row (bias-free base)."""
    rank = RANK
    layer, parts = _prepared(cls, rank=rank, alpha=float(rank), bias=False, seed=7)
    x = randn(4, IN, seed=8)
    y = _run(layer, x, IN, OUT)
    want = _reference(parts, 1.0, x)
    if not close(y, want):
        fail("With non-zero A, B and a trained magnitude the layer must compute "
             "m ⊙ (W + sBA) x / ‖W + sBA‖_row: the direction W + sBA with each row scaled to "
             "length m_i.",
             f"x of shape {tuple(x.shape)}, bias-free base. " + _forward_diagnosis(layer, parts, 1.0))


@concept("dora.eval_mode")
def check_train_eval(cls: type) -> None:
    """eval() computes the same function, with the same gradients, as train() (no dropout)."""
    family.check_train_eval(MEMBER, cls, seed=30)


@concept("dora.stale_state")
def check_training_steps(cls: type) -> None:
    """After each of 3 Adam steps, and after each edit of the parameters in eval(), the layer
    computes what a fresh layer holding the same parameter values computes."""
    family.check_training_steps(MEMBER, cls, seed=31)


@concept("dora.bias")
def check_bias(cls: type) -> None:
    """The bias is added after the rescaling: layer_b(x) - layer_no_bias(x) = b."""
    rank = RANK
    with_b, parts = _prepared(cls, rank=rank, alpha=float(rank), bias=True, seed=9)
    base = parts.base
    no_b_base = make_base(IN, OUT, bias=False)
    with torch.no_grad():
        no_b_base.weight.copy_(base.weight)
    without = _build(cls, no_b_base, rank, float(rank), seed=9)
    find_parts(without, IN, OUT, rank).assign(parts.A(), parts.B(), parts.m())
    x = randn(6, IN, seed=10)
    with torch.no_grad():
        diff = (_run(with_b, x, IN, OUT) - _run(without, x, IN, OUT)).double()
    b = base.bias.detach().double().expand_as(diff)
    if close(diff, b):
        return
    V = base.weight.detach().double() + parts.B().double() @ parts.A().double()
    m = parts.m()
    msg = ("The bias must be added after the rescaling: y = m ⊙ (W + sBA)x / ‖W + sBA‖_row + b. "
           "DoRA rescales the weight, not the bias (PEFT adds the DoRA term to base_layer(x), "
           "bias included, unchanged).")
    if m is not None and close(diff, (m.double() / V.norm(dim=1)).expand_as(diff) * b):
        fail(msg, "Your layer scales the bias too (is base_layer(x), bias included, inside the "
                  "rescaling?). At init m / ‖W‖ = 1 hides this; once m or B move, the bias drifts "
                  "with them and merging would have to change b as well.")
    if close(diff, torch.zeros_like(diff)):
        fail(msg, "Your layer ignores the base layer's bias.")
    fail(msg, "Adding a bias to the base changes your output by something other than b: largest "
              f"difference from b {family.largest_difference(diff, b)}.")


@concept("dora.scaling")
def check_scaling(cls: type) -> None:
    """self.scaling is alpha / rank and the update is s·BA, in the direction and in the norm."""
    for rank, alpha in [(RANK, 2.0 * RANK), (2, 1.0)]:
        layer, parts = _prepared(cls, rank=rank, alpha=alpha, bias=False, seed=11)
        s = alpha / rank
        got = getattr(layer, "scaling", None)
        if not isinstance(got, (int, float, torch.Tensor)) or abs(float(got) - s) > 1e-9:
            fail(f"The attribute self.scaling must be alpha / rank = {alpha:g}/{rank} = {s:g}, got {got!r}.",
                 key="dora.scaling_attribute")
        # the same layer at scaling 1 with B replaced by s*B must compute the same function
        A, B, m = parts.A(), parts.B(), parts.m()
        one, _ = _prepared(cls, rank=rank, alpha=float(rank), bias=False, seed=11, values=(A, s * B, m))
        x = randn(6, IN, seed=12)
        with torch.no_grad():
            y, y1 = _run(layer, x, IN, OUT), _run(one, x, IN, OUT)
        if close(y, y1):
            continue
        why = "Check that both W + sBA and its row norm use s = alpha / rank."
        if close(y, _reference(parts, s, x)):
            why = (f"It is right at alpha/rank = {s:g}, but with alpha = rank and B replaced by "
                   f"{s:g}*B it computes something else: scaling must enter only as s*B A.")
        else:
            for s_num, s_norm, text in [(1.0, 1.0, "the scaling alpha/rank is missing"),
                                        (alpha, alpha, "it is scaled by alpha instead of alpha/rank"),
                                        (s, 1.0, "the norm is taken of W + BA, without the scaling"),
                                        (1.0, s, "the direction uses W + BA, without the scaling, "
                                                 "while the norm has it")]:
                if close(y, _reference(parts, s_num, x, s_norm=s_norm)):
                    why = f"The layer behaves as if {text}."
                    break
        fail(f"The update must be scaled by alpha/rank (here {alpha:g}/{rank} = {s:g}) everywhere: "
             "V = W + (alpha/r) B A, then its row norm.", why)


@concept("dora.norm_detached")
def check_norm_detached(cls: type) -> None:
    """Gradients of A and B equal those of the definition with the row norm detached.

    (m's gradient does not depend on detaching; the gradients check compares it with the
    derivative of the layer's own forward.)"""
    rank = RANK
    layer, parts = _prepared(cls, rank=rank, alpha=float(rank), bias=False, seed=13)
    x, g = randn(6, IN, seed=14), randn(6, OUT, seed=15)
    layer.zero_grad(set_to_none=True)
    y = _run(layer, x, IN, OUT)
    if not close(y, _reference(parts, 1.0, x)):
        fail("The gradients cannot match DoRA's while the forward does not: fix the 'forward' "
             "check first.", _forward_diagnosis(layer, parts, 1.0))
    if parts.m_param is None:
        fail(f"No magnitude vector of shape ({OUT},) was found: DoRA trains one magnitude per output.",
             _axis_hint(layer, IN, OUT))
    if not y.requires_grad:
        fail("Your output carries no gradient, so A and B cannot learn: is forward computed under "
             "torch.no_grad() or detached?")
    call(lambda: (y * g).sum().backward(), what="Backward through your layer")
    got = parts.grad("A"), parts.grad("B")

    def ref(detach: bool):
        A = parts.A().double().requires_grad_()
        B = parts.B().double().requires_grad_()
        out = definition(parts.base.weight.detach(), None, A, B, parts.m(), 1.0, x, detach=detach)
        (out * g.double()).sum().backward()
        return A.grad, B.grad

    want, full = ref(True), ref(False)
    for name, a in zip("AB", got, strict=False):
        if a is None:
            fail(f"{name} received no gradient: A, B and the magnitude m all train.")
    if all(close(a, w, rtol=1e-3, atol=1e-6) for a, w in zip(got, want, strict=False)):
        return
    msg = ("DoRA treats the row norm ‖W + sBA‖ as a constant in backward (paper §4.3, and PEFT): "
           "compute it under torch.no_grad() or call .detach() on it.")
    if all(close(a, f, rtol=1e-3, atol=1e-6) for a, f in zip(got, full, strict=False)):
        fail(msg, "Your gradients of A and B are those of the un-detached norm: autograd "
                  "differentiates through the norm, which costs memory and time and is not DoRA's "
                  "update rule. (The forward values are the same either way; only the gradients differ.)")
    bad = [(n, a, w) for n, a, w in zip("AB", got, want, strict=False) if not close(a, w, rtol=1e-3, atol=1e-6)]
    fail(msg, "The gradients of " + ", ".join(f"{n} (largest difference {family.largest_difference(a, w)})"
                                              for n, a, w in bad)
         + " differ from those of the detached-norm definition.")


@concept("dora.gradients")
def check_gradients(cls: type) -> None:
    """Gradients reach B and m at init, A, B and m once B != 0, and never the base."""
    layer = _build(cls, _base(IN, OUT, seed=16), RANK, 2.0 * RANK, seed=16)
    base = find_base(layer)
    parts = find_parts(layer, IN, OUT, RANK)
    x, target = randn(6, IN, seed=17), randn(6, OUT, seed=18)

    def backward():
        layer.zero_grad(set_to_none=True)
        if parts.m_param is not None:
            parts.m_param.grad = None
        loss = (_run(layer, x, IN, OUT) - target).pow(2).mean()
        if not loss.requires_grad:
            fail("Your output carries no gradient: is forward computed under torch.no_grad() "
                 "or detached?")
        call(loss.backward, what="Backward through your layer")

    def has_grad(t):
        return t is not None and torch.isfinite(t).all() and t.abs().max() > 0

    if parts.m_param is not None and not parts.m_param.requires_grad:
        fail("The magnitude m must be trainable (an nn.Parameter): DoRA learns each row's length "
             "through m and its direction through B A.", f"{parts.m_name} does not require grad.",
             key="dora.magnitude_trainable")
    backward()
    gA, gB, gm = parts.grads()
    if not has_grad(gB):
        fail("At init B must receive a gradient, or the adapter can never start learning. "
             "With B = 0, A has to start random (not zero).")
    if parts.m_param is not None and not has_grad(gm):
        fail("At init the magnitude m must receive a gradient: is m part of what forward returns?")
    A, B, m = _random_values(parts.base, RANK, 19)
    parts.assign(A, B, m)
    backward()
    for name, gr in zip(("A", "B", "m"), parts.grads(), strict=False):
        if name == "m" and parts.m_param is None:
            continue
        if not has_grad(gr):
            fail(f"Once B is non-zero, the loss must send a gradient to {name}. "
                 "Is every part of the adapter in what forward returns?")
    leaked = [n for n, p in base.named_parameters() if p.grad is not None]
    if leaked:
        fail("Gradients must never reach the frozen base layer.", f"base parameters with a grad: {leaked}",
             key="dora.base_gradient")


@concept("dora.gradcheck")
def check_gradcheck(cls: type) -> None:
    """dL/dx reaches the input, and the gradients of x and m are the derivatives of the layer's
    own forward (a gradient check in float64 when the layer runs in float64). A and B
    are the 'norm detached' check's: their gradients follow a reference that detaches."""
    family.check_gradcheck(MEMBER, cls, seed=32)


# --- a submission must implement the layer, not borrow lorakit's ------------------------------

@concept("dora.not_reference")
def check_not_reference(cls: type) -> None:
    """The submission implements DoRA itself rather than subclassing or calling lorakit's."""
    family.not_reference(cls, "DoRA", lambda: _build(cls, _base(IN, OUT), RANK, 2.0 * RANK))


# One entry per graded test cell of the notebook, named as the samples' headers name them.
CHECKS: dict[str, Callable] = {
    "shapes": check_shapes,
    "frozen": check_frozen,
    "identity at init": check_identity_at_init,
    "magnitude init": check_magnitude_init,
    "forward": family.all_of(check_forward, check_train_eval, check_training_steps),
    "bias": check_bias,
    "scaling": check_scaling,
    "norm detached": check_norm_detached,
    "gradients": family.all_of(check_gradients, check_gradcheck),
}


def report(cls: type, verbose: bool = True) -> dict[str, str | None]:
    """Run every check on ``cls`` and print a table; never raises.

    Returns {check name: None if passed, else the failure message}.
    """
    return run_checks(CHECKS, cls, verbose)
