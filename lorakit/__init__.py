"""lorakit: small, readable, fast reference implementations of LoRA and its relatives."""
from __future__ import annotations

import torch

from .conditioning import condition
from .layers import (AdapterLinear, BilinearLoRALinear, DoRALinear, LoRALinear,
                     MergeStateError, RSSBilinearLoRA)
from .layers import HyLoRADALinear, HyLoRADAv2Linear
from .structure import StructureEncoder, TemporalStructureEncoder

__version__ = "0.1.0"


def default_device() -> torch.device:
    """The device notebooks run on: the first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


__all__ = ["AdapterLinear", "BilinearLoRALinear", "DoRALinear", "LoRALinear",
           "MergeStateError", "RSSBilinearLoRA", "condition", "default_device"]
__all__ += ["HyLoRADALinear", "HyLoRADAv2Linear", "StructureEncoder", "TemporalStructureEncoder"]
