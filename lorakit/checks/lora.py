"""Behavioural checks for notebook 01 (the LoRALinear challenge).

Contract (DESIGN.md): ``cls(base_layer, rank=4, alpha=1)`` keeps ``self.base_layer`` and
``self.scaling = alpha / rank``; ``forward(x)`` takes x of shape (..., in_features).
``merge_lora(layer) -> nn.Linear`` computes what ``layer`` computed before the call.

Nothing else is assumed: the adapter matrices are found among the trainable parameters by
their shapes, so nn.Parameter or nn.Linear adapters, either orientation, einsum or ``@`` all
pass. Each check raises ``CheckFailure`` (an AssertionError) whose message names the concept.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ._probe import (BigIntermediates, assert_own_implementation, run_checks, call, build, close, effective_delta, fail, find_base,
                     find_factors, forward, make_base, randn, randomize_adapters, trainable)

# Probe layers: non-square with in, out and rank pairwise different, so shapes are unambiguous.
IN, OUT, RANK = 24, 10, 3


def _layer(cls, in_f=IN, out_f=OUT, rank=RANK, alpha=1.0, bias=True, seed=0, random=True):
    base = make_base(in_f, out_f, bias=bias, seed=seed)
    layer = build(cls, base, seed=seed, rank=rank, alpha=alpha)
    if random:
        randomize_adapters(layer, seed=seed + 1)
    return layer


def _shape_hint(in_f: int, out_f: int) -> str:
    return ("The adapter path must map in_features -> out_features with matrix products "
            "(first A, then B), exactly like nn.Linear does. An elementwise '*' between a weight "
            "matrix and x only works when the shapes broadcast by accident.")


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
                fail(f"{e}", _shape_hint(in_f, out_f))
            want = shape[:-1] + (out_f,)
            if tuple(y.shape) != want:
                fail(f"Wrong output shape: for x of shape {shape} a {in_f}->{out_f} layer must "
                     f"return {want}, got {tuple(y.shape)}.", _shape_hint(in_f, out_f))


def check_frozen(cls: type, in_f: int = IN, out_f: int = OUT, rank: int = RANK) -> None:
    """The base layer is frozen and exactly r*(in + out) parameters train."""
    layer = _layer(cls, in_f, out_f, rank, random=False)
    base = find_base(layer)
    unfrozen = [n for n, p in base.named_parameters() if p.requires_grad]
    if unfrozen:
        fail("The pretrained layer must be frozen: LoRA trains only the adapter.",
             f"base_layer parameters that still require grad: {unfrozen}")
    params = trainable(layer)
    n = sum(p.numel() for _, p in params)
    want = rank * (in_f + out_f)
    if n != want:
        listing = ", ".join(f"{name} {tuple(p.shape)}" for name, p in params) or "none"
        fail(f"LoRA trains exactly r*(in + out) = {rank}*({in_f} + {out_f}) = {want} parameters "
             f"(A is r x in, B is out x r); your layer trains {n}.",
             f"trainable parameters: {listing}")


def check_identity_at_init(cls: type) -> None:
    """At init the layer computes exactly what its base computes (B = 0)."""
    for bias in (True, False):
        layer = _layer(cls, bias=bias, random=False, seed=3)
        base = find_base(layer)
        for shape in [(5, IN), (2, 3, IN)]:
            x = randn(*shape, seed=4)
            y = forward(layer, x, IN, OUT)
            with torch.no_grad():
                want = base(x)
            if y.shape != want.shape or not close(y, want, rtol=0, atol=1e-6):
                diff = ((y - want).abs().max().item() if y.shape == want.shape
                        else f"shape {tuple(y.shape)} vs {tuple(want.shape)}")
                fail("At init the layer must equal the pretrained layer: start B at zero so "
                     "that the update B A is zero and fine-tuning starts from the pretrained "
                     "function.", f"x of shape {shape}, bias={bias}: largest difference {diff}")


def _update_diagnosis(layer, factors, in_f, out_f, alpha: float, rank: int) -> str:
    """Explain a wrong update by comparing it with common mistakes."""
    scaling = alpha / rank
    base = find_base(layer)
    M = effective_delta(layer, base, in_f, out_f)
    BA = factors.B @ factors.A
    x = randn(2, 3, in_f, seed=11)
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


def check_update(cls: type) -> None:
    """With B != 0: y = base(x) + (alpha/r) * B A x for 2-D, 3-D and 4-D x."""
    alpha, rank = 3.0, RANK
    layer = _layer(cls, rank=rank, alpha=alpha, seed=5)
    base = find_base(layer)
    factors = find_factors(layer, IN, OUT, rank)
    s = alpha / rank
    for shape in [(4, IN), (2, 3, IN), (2, 2, 3, IN)]:
        x = randn(*shape, seed=6)
        y = forward(layer, x, IN, OUT)
        with torch.no_grad():
            want = base(x) + s * (x @ factors.A.T) @ factors.B.T
        if not close(y, want):
            fail("With a non-zero B the layer must compute base(x) + (alpha/r) * B A x.",
                 f"x of shape {shape}. " + _update_diagnosis(layer, factors, IN, OUT, alpha, rank))


def check_scaling(cls: type) -> None:
    """self.scaling is alpha / rank, and the update is scaled by it."""
    for rank, alpha in [(RANK, 6.0), (2, 1.0)]:
        layer = _layer(cls, rank=rank, alpha=alpha, seed=7)
        want_s = alpha / rank
        s = getattr(layer, "scaling", None)
        if not isinstance(s, (int, float, torch.Tensor)) or abs(float(s) - want_s) > 1e-9:
            fail(f"The attribute self.scaling must be alpha / rank = {alpha:g}/{rank} = {want_s:g}, got {s!r}.")
        factors = find_factors(layer, IN, OUT, rank)
        M = effective_delta(layer, find_base(layer), IN, OUT)
        if not close(M, want_s * factors.B @ factors.A):
            fail(f"The update must be scaled by alpha/rank (here {alpha:g}/{rank} = {want_s:g}), "
                 "so that changing the rank does not force you to retune alpha or the learning rate.",
                 _update_diagnosis(layer, factors, IN, OUT, alpha, rank))


def check_low_rank_order(cls: type) -> None:
    """forward computes B(Ax) and never builds an in x out matrix such as B A."""
    in_f, out_f, rank = 64, 48, 4
    layer = _layer(cls, in_f, out_f, rank, seed=8)
    x = randn(2, 3, in_f, seed=9)  # 6 tokens: no honest intermediate reaches in*out elements
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
             f"in*out*r = {in_f * out_f * rank} to form B A first.")


def check_gradients(cls: type) -> None:
    """Gradients reach B at init, both factors once B != 0, never the base, and the input."""
    layer = _layer(cls, random=False, seed=10)
    base = find_base(layer)
    factors = find_factors(layer, IN, OUT, RANK)
    x, target = randn(2, 3, IN, seed=11), randn(2, 3, OUT, seed=12)

    def backward():
        layer.zero_grad(set_to_none=True)
        loss = (forward(layer, x, IN, OUT) - target).pow(2).mean()
        call(loss.backward, what="Backward through your layer")

    backward()
    gB = factors.B_param.grad
    if gB is None or not torch.isfinite(gB).all() or gB.abs().max() == 0:
        fail("At init B must receive a gradient, or the adapter can never start learning. "
             "With B = 0, A has to start random (not zero): B's gradient is built from A x.")
    randomize_adapters(layer, seed=13)
    backward()
    for name, p in (("A", factors.A_param), ("B", factors.B_param)):
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().max() == 0:
            fail(f"Once B is non-zero, the loss must send a gradient to {name}. "
                 "Is the adapter output part of what forward returns?")
    leaked = [n for n, p in base.named_parameters() if p.grad is not None]
    if leaked:
        fail("Gradients must never reach the frozen base layer.", f"base parameters with a grad: {leaked}")
    _check_input_gradient(layer)


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
             "dL/dx: " + ("None" if got is None else "all zeros"))
    err = (got - expected).abs().max().item()
    if err > 1e-4 * (1 + expected.abs().max().item()):
        fail("The gradient with respect to x does not match the layer's own linear map "
             "(W + s B A): part of the path to x is detached or computed under no_grad.",
             f"largest difference in dL/dx: {err:.3g}")


def check_merge(cls: type, merge_fn: Callable[[nn.Module], nn.Linear]) -> None:
    """merge_fn(layer) returns an nn.Linear computing what layer computed, bias kept, no history."""
    for bias in (True, False):
        layer = _layer(cls, alpha=2.0, bias=bias, seed=14)
        x = randn(2, 3, IN, seed=15)
        with torch.no_grad():
            before = forward(layer, x, IN, OUT).detach().clone()
            base_only = find_base(layer)(x).detach().clone()
        merged = call(merge_fn, layer, what=f"{getattr(merge_fn, '__name__', 'merge')}(layer)")
        if not isinstance(merged, nn.Linear):
            fail(f"merge_lora must return an nn.Linear, got {type(merged).__name__}.",
                 "If you merged in place into layer.base_layer, return layer.base_layer.")
        if (merged.in_features, merged.out_features) != (IN, OUT):
            fail(f"The merged layer must map {IN} -> {OUT} features, got "
                 f"{merged.in_features} -> {merged.out_features}.")
        for name, t in (("weight", merged.weight), ("bias", merged.bias)):
            if t is not None and t.grad_fn is not None:
                fail(f"The merged {name} carries autograd history ({type(t.grad_fn).__name__}): "
                     "do the merge under torch.no_grad().")
        if bias and merged.bias is None:
            fail("The merged layer lost the base layer's bias: W x + b + s B A x = (W + s B A) x + b.")
        with torch.no_grad():
            after = merged(x)
        if not close(after, before):
            if close(after, base_only):
                why = "The merged layer equals the base layer alone: the update was not added."
            else:
                why = ("It differs from the unmerged output. The merged weight is W + (alpha/r) * B A, "
                       "shape (out, in): check the scaling and the order of the factors.")
            fail("The merged layer must compute exactly what the LoRA layer computed before merging.",
                 f"bias={bias}. {why}")


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
