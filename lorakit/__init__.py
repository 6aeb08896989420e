"""lorakit: small, readable, fast reference implementations of LoRA and its relatives.

The package is laid out by role (layers/, conditioning/, tuning/, interop/, lm/, datasets/,
notebook/, checks/, experiments/, tools/); ARCHITECTURE.md at the repository root draws the
parts and who may import whom.
"""
from __future__ import annotations

import torch

from .conditioning import StructureEncoder, TemporalStructureEncoder, condition, structure_prior
from .layers import (
    AdapterLinear,
    BilinearLoRALinear,
    DoRALinear,
    HyLoRADALinear,
    HyLoRADAv2Linear,
    LoRALinear,
    MergeStateError,
    RSSBilinearLoRA,
)

__version__ = "0.1.0"


def default_device() -> torch.device:
    """The device notebooks run on: the first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


__all__ = ["AdapterLinear", "BilinearLoRALinear", "DoRALinear", "HyLoRADALinear",
           "HyLoRADAv2Linear", "LoRALinear", "MergeStateError", "RSSBilinearLoRA",
           "StructureEncoder", "TemporalStructureEncoder", "condition", "default_device",
           "structure_prior"]
