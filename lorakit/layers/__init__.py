"""Reference adapter layers, one family per file."""
from .base import AdapterLinear, MergeStateError
from .bilinear import BilinearLoRALinear, RSSBilinearLoRA
from .dora import DoRALinear
from .hylorada import HyLoRADALinear, HyLoRADAv2Linear
from .lora import LoRALinear

__all__ = ["AdapterLinear", "BilinearLoRALinear", "DoRALinear", "LoRALinear",
           "MergeStateError", "RSSBilinearLoRA"]
__all__ += ["HyLoRADALinear", "HyLoRADAv2Linear"]
