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
- :func:`check_layer_after_merge`: after ``merge(layer)`` the given layer computes what it
  computed, or — only where the contract allows merging in place into ``layer.base_layer`` and
  the merge returned that very module — the merged base plus its unchanged adapter.
- :func:`check_training_steps`: a few SGD steps, and after each, the layer must compute (train
  and eval mode) and differentiate exactly like a freshly built layer given the same parameters
  — so nothing forward uses may be cached across calls.
"""
from __future__ import annotations

import contextvars
import functools
from typing import Callable

import torch
from torch import nn

from ._probe import CheckFailure, TimedOut, call, close, fail, trainable

TOPIC: contextvars.ContextVar[str] = contextvars.ContextVar("topic", default="checks")


def concept_key(concept: str) -> str:
    """``<topic>.<concept>`` for the check that is running (its topic set by :func:`keyed`)."""
    return f"{TOPIC.get()}.{concept}"


def keyed(key: str):
    """Decorator: a keyless CheckFailure raised inside the check gets ``key``; while the check
    runs, :func:`concept_key` names concepts of ``key``'s topic."""
    def wrap(check):
        @functools.wraps(check)
        def run(*args, **kwargs):
            token = TOPIC.set(key.split(".", 1)[0])
            try:
                return check(*args, **kwargs)
            except CheckFailure as e:
                if getattr(e, "key", None) is None:
                    e.key = key
                raise
            finally:
                TOPIC.reset(token)
        run.key = key
        return run
    return wrap


def with_concept(concept: str, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``; a keyless failure gets :func:`concept_key` (``concept``), a
    time-out ``<topic>.timeout``."""
    try:
        return fn(*args, **kwargs)
    except TimedOut as e:
        e.key = e.key or concept_key("timeout")
        raise
    except CheckFailure as e:
        e.key = e.key or concept_key(concept)
        raise


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


# --- what a merge may do to the layer it was given ----------------------------------------------

MERGE_RULE = ("Either build a new nn.Linear and leave layer as it was, or update layer.base_layer "
              "in place and return that very module (then layer is spent: its base holds the "
              "update).")


def check_layer_after_merge(layer, merged, name, x, before, base_only, params0, *,
                            run, in_place_ok: bool, key: str, what: str,
                            not_in_place: str = "") -> None:
    """The given layer computes what it computed — or, after a documented in-place merge (the
    result *is* layer.base_layer, where the contract allows it), the merged layer plus its
    unchanged adapter (or exactly what it computed, if the merge also switched the adapter off)."""
    try:
        with torch.no_grad():
            now = run(layer)
    except TimedOut:
        raise
    except AssertionError as e:
        fail(f"After your {name}, the layer it was given no longer runs.", f"{e}", key=key)
    if close(now, before):
        return
    changed = [n for n, p in layer.named_parameters()
               if n not in params0 or p.shape != params0[n].shape
               or not torch.equal(p.detach(), params0[n])]
    changed_txt = f" Parameters it changed: {changed}." if changed else ""
    in_place = merged is getattr(layer, "base_layer", None)
    if in_place and in_place_ok:
        changed = [n for n in changed if not n.startswith("base_layer.")]
        changed_txt = f" Parameters besides the base that it changed: {changed}." if changed else ""
        with torch.no_grad():
            spent = merged(x) + (before - base_only)
        if close(now, spent):
            return
        fail(f"Your {name} merged into layer.base_layer in place (allowed), but it also changed the "
             "rest of the layer.", f"Afterwards {what} is neither what it computed before nor the "
             f"merged layer plus the unchanged adapter.{changed_txt}", key=key)
    if in_place:
        fail(f"Your {name} must leave the layer it was given unchanged{not_in_place}.",
             f"It updated layer.base_layer in place and returned it; afterwards {what} differs "
             f"from before by up to {max_diff(now, before)}.{changed_txt} Build a new nn.Linear "
             "from copies (or merge a copy.deepcopy(layer)).", key=key)
    base_hit = any(n.startswith("base_layer.") for n in changed)
    fail(f"Your {name} returned a new layer but also changed the layer it was given.",
         f"Afterwards {what} differs from before by up to {max_diff(now, before)}.{changed_txt}"
         + (" It wrote into layer.base_layer, which layer keeps using, so layer now counts the "
            "update twice. " if base_hit else " ")
         + (MERGE_RULE if in_place_ok else
            "Build the new nn.Linear from copies (base.weight + ..., .clone()) and leave layer "
            "as it was."), key=key)
