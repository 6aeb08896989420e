"""Interoperability with other libraries' adapter formats (PEFT)."""
from .peft import PEFT_MAPPINGS, PeftMapping, from_peft, register_peft_mapping, to_peft

__all__ = ["PEFT_MAPPINGS", "PeftMapping", "from_peft", "register_peft_mapping", "to_peft"]
