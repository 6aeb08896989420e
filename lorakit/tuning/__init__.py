"""Model-level tools for any lorakit adapter, one job per file:

    inject.py      find target modules, inject adapters, freeze all but them, count parameters
    merge.py       merge / unmerge every adapter, merge_and_unload, unload
    checkpoint.py  save_adapter / load_adapter (safetensors + adapter_config.json)
    loraplus.py    LoRA+ optimiser parameter groups

    names = inject_adapters(model, LoRALinear, target_modules=["q_proj", "v_proj"], rank=8, alpha=16)
    mark_only_adapters_trainable(model)
    opt = torch.optim.AdamW(loraplus_param_groups(model, lr=2e-4, ratio=16))
    ...train...
    save_adapter(model, "run1"); load_adapter(fresh_model, "run1")
    plain = merge_and_unload(model)
"""
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, adapter_init_kwargs, adapter_state_dict, load_adapter, save_adapter
from .inject import (
    ALL_LINEAR,
    adapter_modules,
    find_target_modules,
    inject_adapters,
    mark_only_adapters_trainable,
    print_trainable_parameters,
    trainable_report,
)
from .loraplus import GROUPS, loraplus_param_groups, param_group_of
from .merge import merge_adapters, merge_and_unload, unload, unmerge_adapters

__all__ = [
    "ALL_LINEAR", "CONFIG_NAME", "GROUPS", "WEIGHTS_NAME",
    "adapter_modules", "adapter_init_kwargs", "find_target_modules", "inject_adapters",
    "mark_only_adapters_trainable", "trainable_report", "print_trainable_parameters",
    "merge_adapters", "unmerge_adapters", "merge_and_unload", "unload",
    "adapter_state_dict", "save_adapter", "load_adapter",
    "loraplus_param_groups", "param_group_of",
]
