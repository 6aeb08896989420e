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
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch

_CONDITION: ContextVar[torch.Tensor | None] = ContextVar("lorakit_condition", default=None)


@contextmanager
def condition(p: torch.Tensor | None) -> Iterator[torch.Tensor | None]:
    """Within the block, conditioned layers called without p use this p."""
    if p is not None and not isinstance(p, torch.Tensor):
        raise TypeError(f"condition(p) needs a torch.Tensor (or None), got {type(p).__name__}")
    token = _CONDITION.set(p)
    try:
        yield p
    finally:
        _CONDITION.reset(token)


def current_condition() -> torch.Tensor | None:
    """The p of the innermost enclosing ``condition(p)`` block in this thread/task, or None."""
    return _CONDITION.get()


__all__ = ["condition", "current_condition"]
