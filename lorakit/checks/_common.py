"""Behaviour checks shared by the notebooks' suites (01–04): concept keys, the simplest-input
rule, training steps against a freshly built layer, and what a merge may do to its input.

Generic helpers that are not part of ``_probe`` (which the grading pipeline owns):

- :func:`keyed` gives every keyless ``CheckFailure`` raised inside a check that check's concept
  key, so a crash or a failure from a shared helper (``find_factors``, ``build``) is still
  reported under the concept the check is about.
- :func:`rekey` wraps a ``_probe`` helper so that its failures carry a finer key
  (``<topic>.construct``, ``<topic>.forward_crash``, ``<topic>.adapters``, ``<topic>.timeout``).
- :func:`handles` runs a forward on an input of a *secondary* shape and returns None when the
  layer crashes or returns the wrong shape there: that is the shapes check's business, so a
  check about another concept skips that input instead of charging the shape bug again.
- :func:`check_training_steps`: a few SGD steps, and after each, the layer must compute (train
  and eval mode) and differentiate exactly like a freshly built layer given the same parameters
  — so nothing forward uses may be cached across calls.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from ._probe import CheckFailure, TimedOut, call, close, fail, trainable


def keyed(key: str):
    """Decorator: a keyless CheckFailure raised inside the check gets ``key``."""
    def wrap(check):
        @functools.wraps(check)
        def run(*args, **kwargs):
            try:
                return check(*args, **kwargs)
            except CheckFailure as e:
                if getattr(e, "key", None) is None:
                    e.key = key
                raise
        run.key = key
        return run
    return wrap


def rekey(key: str, fn: Callable) -> Callable:
    """``fn`` whose keyless failures get ``key`` (a time-out: ``<topic>.timeout``), e.g.
    ``forward = rekey("lora.forward_crash", _probe.forward)``."""
    topic = key.split(".", 1)[0]

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TimedOut as e:
            e.key = e.key or f"{topic}.timeout"
            raise
        except CheckFailure as e:
            e.key = e.key or key
            raise
    return run


def handles(run: Callable[[], torch.Tensor], want_shape: tuple[int, ...]) -> torch.Tensor | None:
    """``run()``'s output, or None when it crashes or has the wrong shape (an endless loop still
    fails: it would cost every later call its time limit)."""
    try:
        y = run()
    except TimedOut:
        raise
    except CheckFailure:
        return None
    return y if tuple(y.shape) == tuple(want_shape) else None


def max_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    return f"{(a.double() - b.double()).abs().max().item():.3g}"


@torch.no_grad()
def copy_trainable(src: nn.Module, dst: nn.Module) -> None:
    """Give ``dst``'s trainable parameters ``src``'s values (same class: same names)."""
    mine, theirs = dict(trainable(src)), trainable(dst)
    if sorted(mine) != sorted(n for n, _ in theirs) or any(
            tuple(mine[n].shape) != tuple(p.shape) for n, p in theirs):
        fail("Two layers built with the same arguments must have the same trainable parameters.",
             f"{sorted((n, tuple(p.shape)) for n, p in mine.items())} vs "
             f"{sorted((n, tuple(p.shape)) for n, p in theirs)}")
    for n, p in theirs:
        p.copy_(mine[n])


def check_training_steps(layer: nn.Module, fresh: Callable[[], nn.Module],
                         run: Callable[[nn.Module], torch.Tensor], target: torch.Tensor, *,
                         key: str, steps: int = 3, lr: float = 0.1) -> None:
    """SGD steps on ``layer`` (loss: mean squared error to ``target``). Before the first and after
    every step, ``fresh()`` builds the same layer anew and ``copy_trainable`` gives it ``layer``'s
    current parameters: both must agree exactly in train and in eval mode, and their gradients
    must agree too. A layer that caches anything computed from its parameters (or from an
    earlier input) drifts away from the fresh one as soon as the parameters move."""
    params = [p for _, p in trainable(layer)]
    if not params:
        return  # the parameter count is check_frozen's business
    opt = torch.optim.SGD(params, lr=lr)
    hint = ("Does forward keep something across calls — a product, gate or norm computed once "
            "and reused? Everything forward uses must be recomputed from the current parameters "
            "(and the current input) on every call.")
    for step in range(steps + 1):
        ref = fresh()
        copy_trainable(layer, ref)
        for training in (True, False):
            layer.train(training)
            ref.train(training)
            with torch.no_grad():
                y, want = run(layer), run(ref)
            if not close(y, want):
                fail(f"After {step} optimizer step{'s' if step != 1 else ''} your layer "
                     f"({'train' if training else 'eval'} mode) computes something other than a "
                     "freshly built layer holding the same parameters.",
                     f"largest difference {max_diff(y, want)}. {hint}", key=key)
        if step == steps:
            break
        layer.train()
        ref.train()
        grads = []
        for m in (layer, ref):
            m.zero_grad(set_to_none=True)
            loss = (run(m) - target).pow(2).mean()
            try:
                call(loss.backward, what="Backward through your layer")
            except TimedOut:
                raise
            except CheckFailure as e:
                if m is ref or step == 0:
                    raise
                fail(f"After {step} optimizer step{'s' if step != 1 else ''} backward through "
                     "your layer fails, though it worked before the first step.",
                     f"{e}. {hint}", key=key)
            grads.append({n: p.grad for n, p in trainable(m)})
        for n, g in grads[0].items():
            g_ref = grads[1][n]
            if (g is None) != (g_ref is None) or (g is not None and not close(g, g_ref)):
                fail(f"After {step} optimizer step{'s' if step != 1 else ''} the gradient of "
                     f"{n} differs from a freshly built layer's with the same parameters.",
                     ("one of them is None" if g is None or g_ref is None
                      else f"largest difference {max_diff(g, g_ref)}") + ". " + hint, key=key)
        opt.step()
    layer.train()
