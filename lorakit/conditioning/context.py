"""Handing the condition vector p to every conditioned layer of a model.

Conditioned layers (``BilinearLoRALinear``, ``RSSBilinearLoRA``) take p explicitly,
``layer(x, p)``: the primary, torch.compile-friendly path. A whole model, though, calls its
layers itself, with x alone. For that, set p for the duration of a call:

    with lorakit.condition(p):      # p: (B, cond_dim), one row per sample, or (cond_dim,)
        y = model(x)

Every conditioned layer that gets no explicit p reads this one. The seed kept p in a shared
mutable ``_conditioning_ref`` buffer on the model; here it lives in a ``contextvars.ContextVar``:

- each thread, and each asyncio task, sees its own value (two threads serving two requests
  cannot read each other's p); under DDP each process has its own anyway;
- blocks nest: the inner p wins inside, the outer one is back on exit, also on an exception;
- nothing is left behind: outside every block there is no condition, and a layer given none
  says so instead of reusing a stale p.

``condition(None)`` hides an outer condition for the inner block.

Structure priors (HyLoRADA v2) work the same way, in a context of their own:

    prior = encoder(positions, depths)           # (B, T, structure_dim)
    with lorakit.conditioning.structure_prior(prior):
        logits = model(idx)                      # every HyLoRADAv2Linear called without a
                                                 # prior uses this one
An explicit ``layer(x, structure_prior=...)`` wins over the context. Outside every block a v2
layer without a prior computes v1 (f = 1), as it always did. The prior must match each layer's
input, x.shape[:-1] + (structure_dim,): one vector per position, the same for every layer.
``structure_prior(None)`` hides an outer prior. The two contexts are independent: a model with
both kinds of layer can use both blocks.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch

# How many blocks of each kind are open right now, in any thread. While none is, current_*()
# answers None without reading the ContextVar: torch.compile (dynamo) cannot trace
# ContextVar.get (a graph break), but it traces, and guards on, this plain dict, so a layer
# called outside every block compiles as one graph (inside a block it recompiles and reads the
# ContextVar, so each thread still sees only its own value).
_OPEN_BLOCKS = {"condition": 0, "structure_prior": 0}
_OPEN_LOCK = threading.Lock()


@contextmanager
def _counted(kind: str) -> Iterator[None]:
    with _OPEN_LOCK:
        _OPEN_BLOCKS[kind] += 1
    try:
        yield
    finally:
        with _OPEN_LOCK:
            _OPEN_BLOCKS[kind] -= 1

_CONDITION: ContextVar[torch.Tensor | None] = ContextVar("lorakit_condition", default=None)


@contextmanager
def condition(p: torch.Tensor | None) -> Iterator[torch.Tensor | None]:
    """Within the block, conditioned layers called without p use this p."""
    if p is not None and not isinstance(p, torch.Tensor):
        raise TypeError(f"condition(p) needs a torch.Tensor (or None), got {type(p).__name__}")
    with _counted("condition"):
        token = _CONDITION.set(p)
        try:
            yield p
        finally:
            _CONDITION.reset(token)


def current_condition() -> torch.Tensor | None:
    """The p of the innermost enclosing ``condition(p)`` block in this thread/task, or None."""
    if not _OPEN_BLOCKS["condition"]:
        return None
    return _CONDITION.get()


_STRUCTURE_PRIOR: ContextVar[torch.Tensor | None] = ContextVar("lorakit_structure_prior",
                                                               default=None)


@contextmanager
def structure_prior(prior: torch.Tensor | None) -> Iterator[torch.Tensor | None]:
    """Within the block, HyLoRADA v2 layers called without a structure prior use this one.

    ``prior``: (B, T, structure_dim) (in general x.shape[:-1] + (structure_dim,) for the layers'
    inputs x), or None to hide an outer prior.
    """
    if prior is not None and not isinstance(prior, torch.Tensor):
        raise TypeError(f"structure_prior(prior) needs a torch.Tensor of shape "
                        f"(B, T, structure_dim) (or None), got {type(prior).__name__}")
    with _counted("structure_prior"):
        token = _STRUCTURE_PRIOR.set(prior)
        try:
            yield prior
        finally:
            _STRUCTURE_PRIOR.reset(token)


def current_structure_prior() -> torch.Tensor | None:
    """The prior of the innermost enclosing ``structure_prior(prior)`` block, or None."""
    if not _OPEN_BLOCKS["structure_prior"]:
        return None
    return _STRUCTURE_PRIOR.get()


__all__ = ["condition", "current_condition", "structure_prior", "current_structure_prior"]
