"""Reference adapter layers, one family per file."""
from .base import AdapterLinear, MergeStateError
from .lora import LoRALinear

__all__ = ["AdapterLinear", "LoRALinear", "MergeStateError"]
