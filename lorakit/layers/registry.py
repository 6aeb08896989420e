"""The adapter families lorakit's tools know: one registration line each.

Tools (save/load, LoRA+ groups, the cost model, the benchmark, PEFT interop) and the
layer-generic tests iterate over ``FAMILIES`` and read each class's ``ADAPTER`` declaration
(``base.AdapterSpec``); none of them names a family. See ARCHITECTURE.md, "Adding a family".
"""
from __future__ import annotations

import importlib

from .base import AdapterLinear, spec_of

_REGISTERED = (           # "<module in lorakit.layers>.<class>", in the order tools list them
    "lora.LoRALinear",
    "dora.DoRALinear",
    "hylorada.HyLoRADALinear",
    "hylorada.HyLoRADAv2Linear",
    "bilinear.BilinearLoRALinear",
    "bilinear.RSSBilinearLoRA",
    "lora_fa.LoRAFALinear",
)


def _load(path: str) -> type[AdapterLinear]:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    spec_of(cls, own=True)      # every registered family declares its own AdapterSpec
    return cls


FAMILIES: tuple[type[AdapterLinear], ...] = tuple(_load(p) for p in _REGISTERED)
BY_NAME: dict[str, type[AdapterLinear]] = {spec_of(c).name: c for c in FAMILIES}


def family(name: str) -> type[AdapterLinear]:
    """The registered class whose ``ADAPTER.name`` is ``name``."""
    if name not in BY_NAME:
        raise ValueError(f"unknown adapter family {name!r}; registered: {list(BY_NAME)}")
    return BY_NAME[name]


__all__ = ["BY_NAME", "FAMILIES", "family"]
