"""Fold adapters into their base weights, or take them out again.

    merge_adapters(model)            # every layer.merge(): W <- W + delta_weight()
    unmerge_adapters(model)          # every layer.unmerge()
    plain = merge_and_unload(model)  # nn.Linear everywhere again, same function
    base = unload(model)             # adapters removed unmerged: the base function

Conditioned layers (``ADAPTER.condition == "p"``, see ``layers/base.py``) can only be merged for one
condition ``p`` at a time, so ``merge_adapters`` / ``merge_and_unload`` ask for it explicitly.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..layers.base import AdapterLinear, MergeStateError, spec_of
from .inject import adapter_modules, set_submodule

__all__ = ["merge_adapters", "merge_and_unload", "unload", "unmerge_adapters"]


# --------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------
def _needs_p(adapter: AdapterLinear) -> bool:
    """Whether the layer's merge takes a condition vector p (its declared ``condition``)."""
    return spec_of(adapter).condition == "p"


def _merge_all(adapters: Mapping[str, AdapterLinear], p) -> list[AdapterLinear]:
    """Merge every unmerged adapter; all or nothing (merged ones are unmerged on failure)."""
    conditioned = [n for n, a in adapters.items() if not a.merged and _needs_p(a)]
    if conditioned and p is None:
        raise ValueError(
            f"conditioned layers {conditioned[:4]}{' ...' if len(conditioned) > 4 else ''} can "
            "only be merged for one condition: pass p= (a vector of shape (cond_dim,))")
    done = []
    try:
        for a in adapters.values():
            if a.merged:
                continue
            if _needs_p(a):
                a.merge(p)
            else:
                a.merge()
            done.append(a)
    except Exception:
        for a in reversed(done):
            a.unmerge()
        raise
    return done


def merge_adapters(model: nn.Module, p: torch.Tensor | None = None) -> nn.Module:
    """Merge every adapter into its base weight (``layer.merge()``); conditioned layers need p.

    Layers that are already merged are left as they are. If one merge fails (NaN/Inf, say)
    the ones merged by this call are unmerged again and the error is raised.
    """
    adapters = adapter_modules(model)
    if not adapters:
        raise ValueError("the model has no lorakit adapters to merge")
    _merge_all(adapters, p)
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Undo ``merge_adapters``: unmerge every merged adapter."""
    adapters = adapter_modules(model)
    if not any(a.merged for a in adapters.values()):
        raise MergeStateError("no adapter in the model is merged; nothing to unmerge")
    for a in adapters.values():
        if a.merged:
            a.unmerge()
    return model


def merge_and_unload(model: nn.Module, p: torch.Tensor | None = None) -> nn.Module:
    """Replace every adapter by a plain ``nn.Linear`` holding the merged weight.

    The base layer is reused (merged in place), so no extra memory is needed; its parameters
    stay frozen as the adapter left them. Conditioned layers are merged for the one condition
    ``p``. An already merged adapter keeps what it merged. Returns ``model``.
    """
    adapters = adapter_modules(model)
    if not adapters:
        raise ValueError("the model has no lorakit adapters to merge")
    _merge_all(adapters, p)
    for name, adapter in adapters.items():
        if name == "":
            raise ValueError("the model itself is an adapter; call layer.to_linear() instead")
        set_submodule(model, name, adapter.base_layer)
    return model


def unload(model: nn.Module) -> nn.Module:
    """Remove every adapter without merging: the model computes its base function again.

    Merged adapters are unmerged first. Returns ``model``.
    """
    adapters = adapter_modules(model)
    if not adapters:
        raise ValueError("the model has no lorakit adapters to unload")
    for name, adapter in adapters.items():
        if name == "":
            raise ValueError("the model itself is an adapter; use layer.base_layer instead")
        if adapter.merged:
            adapter.unmerge()
        set_submodule(model, name, adapter.base_layer)
    return model
