"""Behavioural checks for notebook 01 (the LoRALinear challenge).

Contract: ``cls(base_layer, rank=4, alpha=1)`` keeps ``self.base_layer`` and
``self.scaling = alpha / rank``; ``forward(x)`` takes x of shape (..., in_features).
``merge_lora(layer) -> nn.Linear`` computes what ``layer`` computed before the call, with no
autograd history. It either builds a new layer and leaves ``layer`` as it was, or (as the seed
does) updates ``layer.base_layer`` in place and returns that very module; then ``layer`` is
spent: its base holds the update, so ``layer`` itself computes the merged layer *plus* its
adapter (the update counted twice) unless the merge also switched the adapter off.

Checks about one concept probe with the simplest input first (2-D x); an input of another
shape that the layer cannot handle is skipped there and charged once, by ``check_shapes``.
Every failure carries a concept key ``lora.<concept>`` (``CheckFailure.key``).

Nothing else is assumed: the adapter matrices are found among the trainable parameters by
their shapes, so nn.Parameter or nn.Linear adapters, either orientation, einsum or ``@`` all
pass. Each check raises ``CheckFailure`` (an AssertionError) whose message names the concept.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from . import _probe
from ._common import check_layer_after_merge, check_training_steps, handles, keyed, max_diff, rekey
from ._probe import (
    BigIntermediates,
    assert_own_implementation,
    call,
    close,
    effective_delta,
    fail,
    make_base,
    randn,
    randomize_adapters,
    run_checks,
    trainable,
)
from ._probe import TimedOut as _TimedOut

# the probe helpers, their failures keyed by concept
build = rekey("lora.construct", _probe.build)
forward = rekey("lora.forward_crash", _probe.forward)
find_base = rekey("lora.base_layer", _probe.find_base)
find_factors = rekey("lora.adapters", _probe.find_factors)
effective_delta = rekey("lora.forward_crash", effective_delta)

# Probe layers: non-square with in, out and rank pairwise different, so shapes are unambiguous.
IN, OUT, RANK = 24, 10, 3


def _layer(cls, in_f=IN, out_f=OUT, rank=RANK, alpha=1.0, bias=True, seed=0, random=True):
    base = make_base(in_f, out_f, bias=bias, seed=seed)
    layer = build(cls, base, seed=seed, rank=rank, alpha=alpha)
    if random:
        randomize_adapters(layer, seed=seed + 1)
    return layer


def _shape_hint(in_f: int, out_f: int, error: str = "") -> str:
    if "must be a matrix" in error or "2D" in error or "2-D" in error:
        return ("forward must take x of shape (..., in_features), any number of leading dims, "
                "as nn.Linear does: torch.mm and torch.addmm take 2-D matrices only; use @, "
                "torch.matmul or F.linear, which broadcast over the leading dims.")
    return (f"The adapter path must map in_features ({in_f}) -> out_features ({out_f}) with matrix "
            "products (first A, then B), exactly like nn.Linear does. An elementwise '*' between a weight "
            "matrix and x only works when the shapes broadcast by accident.")


# words of PyTorch's errors about sizes that do not fit
_SHAPE_ERRORS = ("size of tensor", "must match", "broadcast", "shape", "mat1 and mat2",
                 "must be a matrix", "dimension", "size mismatch")


def _outputs(layer, shapes, seed: int, in_f=IN, out_f=OUT):
    """(x, layer(x)) for each shape: the first (the simplest, 2-D) must work; a later shape the
    layer cannot handle (a crash, a wrong output shape) is skipped — check_shapes charges it."""
    for k, shape in enumerate(shapes):
        x = randn(*shape, seed=seed)
        run = functools.partial(forward, layer, x, in_f, out_f)
        y = run() if k == 0 else handles(run, tuple(shape[:-1]) + (out_f,))
        if y is not None:
            yield shape, x, y


@keyed("lora.shapes")
def check_shapes(cls: type) -> None:
    """Output shape (..., out) for 2-D, 3-D and 4-D inputs, non-square and square layers."""
    cases = [(IN, OUT, RANK, [(5, IN), (2, 3, IN), (2, 3, 4, IN)]),
             (16, 16, 4, [(1, 16), (16, 16), (2, 16, 16), (3, 1, 5, 16)])]
    for in_f, out_f, rank, shapes in cases:
        layer = _layer(cls, in_f, out_f, rank, seed=1)
        for shape in shapes:
            x = randn(*shape, seed=2)
            try:
                y = forward(layer, x, in_f, out_f)
            except AssertionError as e:
                about_shapes = any(k in str(e).split(" raised ", 1)[-1] for k in _SHAPE_ERRORS)
                fail(f"{e}", _shape_hint(in_f, out_f, str(e)) if about_shapes else "",
                     key="lora.shapes")
            want = shape[:-1] + (out_f,)
            if tuple(y.shape) != want:
                fail(f"Wrong output shape: for x of shape {shape} a {in_f}->{out_f} layer must "
                     f"return {want}, got {tuple(y.shape)}.", _shape_hint(in_f, out_f),
                     key="lora.shapes")


@keyed("lora.frozen")
def check_frozen(cls: type, in_f: int = IN, out_f: int = OUT, rank: int = RANK) -> None:
    """The base layer is frozen and exactly r*(in + out) parameters train."""
    layer = _layer(cls, in_f, out_f, rank, random=False)
    base = find_base(layer)
    unfrozen = [n for n, p in base.named_parameters() if p.requires_grad]
    if unfrozen:
        fail("The pretrained layer must be frozen: LoRA trains only the adapter.",
             f"base_layer parameters that still require grad: {unfrozen}", key="lora.frozen")
    params = trainable(layer)
    n = sum(p.numel() for _, p in params)
    want = rank * (in_f + out_f)
    if n != want:
        listing = ", ".join(f"{name} {tuple(p.shape)}" for name, p in params) or "none"
        fail(f"LoRA trains exactly r*(in + out) = {rank}*({in_f} + {out_f}) = {want} parameters "
             f"(A is r x in, B is out x r); your layer trains {n}.",
             f"trainable parameters: {listing}", key="lora.param_count")


@keyed("lora.identity_at_init")
def check_identity_at_init(cls: type) -> None:
    """At init the layer computes exactly what its base computes (B = 0)."""
    for bias in (True, False):
        layer = _layer(cls, bias=bias, random=False, seed=3)
        base = find_base(layer)
        for shape, x, y in _outputs(layer, [(5, IN), (2, 3, IN)], seed=4):
            with torch.no_grad():
                want = base(x)
            if not close(y, want, rtol=0, atol=1e-6):
                fail("At init the layer must equal the pretrained layer: start B at zero so "
                     "that the update B A is zero and fine-tuning starts from the pretrained "
                     "function.", f"x of shape {shape}, bias={bias}: largest difference "
                     f"{max_diff(y, want)}", key="lora.identity_at_init")


def _update_diagnosis(layer, factors, in_f, out_f, alpha: float, rank: int) -> str:
    """Explain a wrong update by comparing it with common mistakes."""
    scaling = alpha / rank
    base = find_base(layer)
    M = effective_delta(layer, base, in_f, out_f)
    BA = factors.B @ factors.A
    x = randn(6, in_f, seed=11)
    with torch.no_grad():
        linear = close(forward(layer, x, in_f, out_f), base(x) + x @ M.T)
    if not linear:
        return ("The update is not a linear map of x: compute it with matrix products, "
                "B(Ax), not with an elementwise '*'.")
    for c, why in [(1.0, "the scaling alpha/rank is missing"),
                   (alpha, "it is scaled by alpha instead of alpha/rank"),
                   (rank / alpha, "it is scaled by rank/alpha instead of alpha/rank")]:
        if abs(c - scaling) > 1e-9 and close(M, c * BA):
            return f"The update equals {c:g}*B A x: {why}."
    if close(M, torch.zeros_like(M)):
        return "The update is zero even though B is not: is the adapter path added to the output?"
    return "The update should be scaling * B A x with A of shape (r, in) and B of shape (out, r)."


@keyed("lora.update")
def check_update(cls: type) -> None:
    """With B != 0: y = base(x) + (alpha/r) * B A x for 2-D (then 3-D and 4-D) x, in train and
    in eval mode, and after the parameters change in eval mode (nothing cached)."""
    alpha, rank = 3.0, RANK
    layer = _layer(cls, rank=rank, alpha=alpha, seed=5)
    base = find_base(layer)
    factors = find_factors(layer, IN, OUT, rank)
    s = alpha / rank

    def want_for(x):
        with torch.no_grad():
            return base(x) + s * (x @ factors.A.T) @ factors.B.T

    for shape, x, y in _outputs(layer, [(4, IN), (2, 3, IN), (2, 2, 3, IN)], seed=6):
        if not close(y, want_for(x)):
            fail("With a non-zero B the layer must compute base(x) + (alpha/r) * B A x.",
                 f"x of shape {shape}. " + _update_diagnosis(layer, factors, IN, OUT, alpha, rank),
                 key="lora.update")
    x = randn(4, IN, seed=6)
    layer.eval()
    try:
        y = forward(layer, x, IN, OUT)
        want = want_for(x)
        if not close(y, want):
            with torch.no_grad():
                base_only = base(x)
            why = ("In eval mode it returns base(x) alone: the adapter is skipped. LoRA has no "
                   "train-only part (dropout aside), so a trained adapter must act at inference."
                   if close(y, base_only) else
                   f"Largest difference from base(x) + (alpha/r) B A x: {max_diff(y, want)}.")
            fail("After layer.eval() the layer must compute what it computes in train mode: "
                 "base(x) + (alpha/r) * B A x.", why, key="lora.eval_mode")
        randomize_adapters(layer, seed=8)  # new values while in eval mode (a loaded checkpoint)
        y = forward(layer, x, IN, OUT)
        want = want_for(x)
        if not close(y, want):
            fail("After the adapter's parameters change (here in eval mode, as when a checkpoint "
                 "is loaded), the next forward must use the new values.",
                 f"largest difference from base(x) + (alpha/r) B A x with the new A and B: "
                 f"{max_diff(y, want)}. Does forward cache a product (B A, say) from an earlier "
                 "call?", key="lora.stale_state")
    finally:
        layer.train()


@keyed("lora.scaling")
def check_scaling(cls: type) -> None:
    """self.scaling is alpha / rank, and the update is scaled by it."""
    for rank, alpha in [(RANK, 6.0), (2, 1.0)]:
        layer = _layer(cls, rank=rank, alpha=alpha, seed=7)
        want_s = alpha / rank
        s = getattr(layer, "scaling", None)
        if not isinstance(s, (int, float, torch.Tensor)) or abs(float(s) - want_s) > 1e-9:
            fail(f"The attribute self.scaling must be alpha / rank = {alpha:g}/{rank} = "
                 f"{want_s:g}, got {s!r}.", key="lora.scaling_attribute")
        factors = find_factors(layer, IN, OUT, rank)
        M = effective_delta(layer, find_base(layer), IN, OUT)
        if not close(M, want_s * factors.B @ factors.A):
            fail(f"The update must be scaled by alpha/rank (here {alpha:g}/{rank} = {want_s:g}), "
                 "so that changing the rank does not force you to retune alpha or the learning rate.",
                 _update_diagnosis(layer, factors, IN, OUT, alpha, rank), key="lora.scaling")


@keyed("lora.low_rank_order")
def check_low_rank_order(cls: type) -> None:
    """forward computes B(Ax) and never builds an in x out matrix such as B A."""
    in_f, out_f, rank = 64, 48, 4
    layer = _layer(cls, in_f, out_f, rank, seed=8)
    x = randn(6, in_f, seed=9)  # 6 tokens: no honest intermediate reaches in*out elements
    with BigIntermediates(limit=1):  # the first dispatch mode pays a one-off import: not the student's time
        torch.zeros(1) + 1
    probe = BigIntermediates(limit=in_f * out_f)
    with probe:
        forward(layer, x, in_f, out_f)
    if probe.seen:
        op, shape = probe.seen[0]
        fail(f"Your forward builds a {shape} tensor (by {op}) for a {in_f}->{out_f} layer: that is the "
             "size of the full weight matrix. Apply the factors one after the other, B(Ax): "
             f"r*(in + out) = {rank * (in_f + out_f)} multiply-adds per token instead of "
             f"in*out*r = {in_f * out_f * rank} to form B A first.", key="lora.low_rank_order")


@keyed("lora.gradients")
def check_gradients(cls: type) -> None:
    """Gradients reach B at init, both factors once B != 0, never the base, and the input x; a
    few optimizer steps later the layer still computes and differentiates like a fresh one."""
    layer = _layer(cls, random=False, seed=10)
    base = find_base(layer)
    factors = find_factors(layer, IN, OUT, RANK)
    x, target = randn(6, IN, seed=11), randn(6, OUT, seed=12)

    def backward():
        layer.zero_grad(set_to_none=True)
        loss = (forward(layer, x, IN, OUT) - target).pow(2).mean()
        call(loss.backward, what="Backward through your layer")

    backward()
    gB = factors.B_param.grad
    if gB is None or not torch.isfinite(gB).all() or gB.abs().max() == 0:
        s = getattr(layer, "scaling", None)
        if factors.A.abs().max() == 0:
            why = "With B = 0, A has to start random (not zero): B's gradient is built from A x."
        elif isinstance(s, (int, float, torch.Tensor)) and float(s) == 0:
            why = (f"A is random, but self.scaling is {float(s):g}: the update, and with it B's "
                   "gradient, is multiplied by zero. Is alpha / rank computed with // (integer "
                   "division)?")
        else:
            why = ("A is random, so B's gradient (built from A x) should not vanish: is the "
                   "adapter's output added to what forward returns, without detach()?")
        fail("At init B must receive a gradient, or the adapter can never start learning.",
             why, key="lora.init_gradient")
    randomize_adapters(layer, seed=13)
    backward()
    for name, p in (("A", factors.A_param), ("B", factors.B_param)):
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().max() == 0:
            fail(f"Once B is non-zero, the loss must send a gradient to {name}. "
                 "Is the adapter output part of what forward returns?", key="lora.gradients")
    leaked = [n for n, p in base.named_parameters() if p.grad is not None]
    if leaked:
        fail("Gradients must never reach the frozen base layer.",
             f"base parameters with a grad: {leaked}", key="lora.frozen")
    _check_input_gradient(layer)
    _check_steps(cls)


def _check_input_gradient(layer: nn.Module) -> None:
    """dL/dx through the layer equals g M, where M is the layer's own linear map (its columns
    measured as forward(e_i) - forward(0)): the frozen base path must pass gradients on to
    whatever comes before the layer, even though its weights do not learn."""
    g = randn(3, OUT, seed=16)
    x = randn(3, IN, seed=17).requires_grad_(True)
    y = forward(layer, x, IN, OUT)
    call((y * g).sum().backward, what="Backward through your layer")
    with torch.no_grad():
        eye = torch.cat([torch.zeros(1, IN), torch.eye(IN)])
        out = forward(layer, eye, IN, OUT)
        M = (out[1:] - out[:1]).T                      # (OUT, IN): y = M x + c
    expected = g @ M                                   # (3, IN)
    got = x.grad
    if got is None or got.abs().max() == 0:
        fail("The loss must send a gradient back to the input x: layers before this one learn "
             "through it. Is the base path computed under torch.no_grad() or detached? Freeze "
             "the base *weights* (requires_grad=False) instead.",
             "dL/dx: " + ("None" if got is None else "all zeros"), key="lora.input_gradient")
    err = (got - expected).abs().max().item()
    if err > 1e-4 * (1 + expected.abs().max().item()):
        fail("The gradient with respect to x does not match how the layer's output changes "
             "with x (its linear map, measured from its outputs): part of the path to x is "
             "detached or computed under no_grad.",
             f"largest difference in dL/dx: {err:.3g}", key="lora.input_gradient")


def _check_steps(cls, alpha: float = 2.0, seed: int = 18) -> None:
    """Three SGD steps; after each, the layer agrees with a freshly built one holding the same
    parameters (outputs in train and eval mode, gradients)."""
    layer = _layer(cls, alpha=alpha, seed=seed)
    x, target = randn(6, IN, seed=seed + 2), randn(6, OUT, seed=seed + 3)

    def fresh():
        return build(cls, make_base(IN, OUT, seed=seed), seed=seed, rank=RANK, alpha=alpha)

    check_training_steps(layer, fresh, lambda m: forward(m, x, IN, OUT), target,
                         key="lora.stale_state")


# --- merging ------------------------------------------------------------------------------------

def _merge_diagnosis(merged, before, after, base_only, W0, b0, delta) -> str:
    """Why the merged layer's output is wrong; names only what was compared."""
    if close(after, base_only):
        return "The merged layer equals the base layer alone: the update was not added."
    mw = merged.weight.detach()
    mb = torch.zeros(mw.shape[0]) if merged.bias is None else merged.bias.detach()
    b_want = torch.zeros(mw.shape[0]) if b0 is None else b0
    b_ok = close(mb, b_want)
    bias_note = ("" if b_ok else
                 " Its bias is wrong too: with a base without bias the merged bias must be zero or "
                 f"absent (largest entry {mb.abs().max().item():.3g})" if b0 is None else
                 f" Its bias differs from the base layer's bias (largest difference "
                 f"{max_diff(mb, b_want)}).")
    if delta is None:
        return "Its output differs from the unmerged layer's." + bias_note
    if close(mw, W0 + delta):
        if b_ok:
            return ("Its weight W + (alpha/r) B A and its bias are both right, yet its output "
                    "differs: does the returned module compute x Wᵀ + b as nn.Linear does?")
        return ("Its weight W + (alpha/r) B A is right, but its bias is not: "
                + ("the base layer has no bias, so the merged layer must have none (or zeros); "
                   f"yours has entries up to {mb.abs().max().item():.3g} — a fresh nn.Linear's "
                   "random init?" if b0 is None else
                   f"it must be the base layer's bias b, unchanged (largest difference "
                   f"{max_diff(mb, b_want)})."))
    if close(mw, W0 + 2 * delta):
        why = "Its weight is W + 2 (alpha/r) B A: the update was added twice."
    elif close(mw, W0):
        why = "Its weight is the base weight W: the update is missing from it."
    else:
        why = (f"Its weight differs from W + (alpha/r) B A, shape (out, in), by up to "
               f"{max_diff(mw, W0 + delta)}: check the scaling and the order of the factors.")
    return why + bias_note


@keyed("lora.merge")
def check_merge(cls: type, merge_fn: Callable[[nn.Module], nn.Linear]) -> None:
    """merge_fn(layer) returns an nn.Linear computing what layer computed, bias kept, no history;
    layer itself is left as it was, or (in-place merge) is its merged base plus its adapter."""
    name = getattr(merge_fn, "__name__", "merge_lora")
    pending = []  # what the merge did to the given layer: judged once the merged layers are
    for bias in (True, False):
        layer = _layer(cls, alpha=2.0, bias=bias, seed=14)
        base = find_base(layer)
        x = randn(6, IN, seed=15)
        where = "" if bias else " on a base layer without bias"
        with torch.no_grad():
            before = forward(layer, x, IN, OUT).detach().clone()
            base_only = base(x).detach().clone()
            W0 = base.weight.detach().clone()
            b0 = None if base.bias is None else base.bias.detach().clone()
        try:
            f = find_factors(layer, IN, OUT, RANK)
            delta = (2.0 / RANK) * (f.B @ f.A).clone()
        except AssertionError:
            delta = None  # the factors' shapes are check_frozen's business
        params0 = {n: p.detach().clone() for n, p in layer.named_parameters()}
        try:
            merged = call(merge_fn, layer, what=f"{name}(layer){where}")
        except _TimedOut:
            raise
        except AssertionError as e:
            hint = ("" if bias else " The base layer has no bias here (base_layer.bias is None): "
                    "fold the update into the weight only, and give the merged layer no bias.")
            fail(f"Your {name} crashed{where}.{hint}", f"{e}", key="lora.merge_crash")
        if not isinstance(merged, nn.Linear):
            fail(f"Your {name} must return an nn.Linear, got {type(merged).__name__}.",
                 "If you merged in place into layer.base_layer, return layer.base_layer.",
                 key="lora.merge_type")
        if (merged.in_features, merged.out_features) != (IN, OUT):
            fail(f"The merged layer must map {IN} -> {OUT} features, got "
                 f"{merged.in_features} -> {merged.out_features}.", key="lora.merge_type")
        for pname, t in (("weight", merged.weight), ("bias", merged.bias)):
            if t is not None and t.grad_fn is not None:
                fail(f"The merged {pname} carries autograd history ({type(t.grad_fn).__name__}): "
                     "do the merge under torch.no_grad().", key="lora.merge_history")
        if bias and merged.bias is None:
            fail("The merged layer lost the base layer's bias: W x + b + s B A x = (W + s B A) x + b.",
                 key="lora.merge_bias")
        with torch.no_grad():
            after = merged(x)
        if not close(after, before):
            fail("The merged layer must compute exactly what the LoRA layer computed before merging.",
                 f"bias={bias}. " + _merge_diagnosis(merged, before, after, base_only, W0, b0, delta),
                 key="lora.merge_function")
        pending.append((layer, merged, x, before, base_only, params0))
    for layer, merged, x, before, base_only, params0 in pending:
        check_layer_after_merge(layer, merged, name, x, before, base_only, params0,
                                run=lambda m, x=x: forward(m, x, IN, OUT), in_place_ok=True,
                                key="lora.merge_leaves_layer", what="layer(x)")


# --- a submission must implement the layer, not borrow lorakit's ------------------------------

def check_not_reference(cls: type, merge_fn: Callable | None = None) -> None:
    """The submission implements LoRA itself rather than subclassing or calling lorakit's."""
    assert_own_implementation(cls, "LoRA", lambda: _layer(cls, random=False), (merge_fn,))


CHECKS: dict[str, Callable] = {
    "shapes": check_shapes,
    "frozen": check_frozen,
    "identity at init": check_identity_at_init,
    "update": check_update,
    "scaling": check_scaling,
    "low-rank order": check_low_rank_order,
    "gradients": check_gradients,
}


def report(cls: type, merge_fn: Callable | None = None, verbose: bool = True) -> dict[str, str | None]:
    """Run every check on ``cls`` (and ``merge_fn``) and print a table; never raises.

    Returns {check name: None if passed, else the failure message}.
    """
    checks = dict(CHECKS)
    if merge_fn is not None:
        checks["merge"] = lambda c: check_merge(c, merge_fn)
    return run_checks(checks, cls, verbose)
