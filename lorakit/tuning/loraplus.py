"""LoRA+ parameter groups (Hayou et al., 2024): train B faster than A.

    opt = torch.optim.AdamW(loraplus_param_groups(model, lr=2e-4, ratio=16))

LoRA+ gives every B matrix (``lora_B``, (out, r)) the learning rate lr·ratio and every A matrix
(``lora_A``, (r, in)) lr. The paper's default ratio is 2⁴ = 16; seed 003 uses 10.

Everything else that is trainable goes, by name, into one of these groups (each trainable
parameter lands in exactly one; shared parameters are counted once):

    group               lr          weight decay   what
    "lora_A"            lr          weight_decay   every ``lora_A``
    "lora_B"            lr·ratio    weight_decay   every ``lora_B``
    "magnitude"         lr          0              DoRA / HyLoRADA magnitude m (decay would pull
                                                   m towards 0, not towards ‖W‖)
    "gates"             lr          0              HyLoRADA's gate logit ``magnitude_gate`` and
                                                   blend logit ``residual_weight``; the
                                                   structure encoders' output ``gate``
    "condition"         lr          weight_decay   bilinear C (``lora_C``) and RSS S (``lora_S``)
    "structure"         lr          weight_decay   HyLoRADA v2's projection w
                                                   (``scale_from_structure``) and the structure
                                                   encoders' embeddings and projections
    "structure_scales"  lr          0              the encoders' learned frequencies
                                                   (``freq_scale``) and periods
                                                   (``period_log_ratio``)
    "bias"              lr          0              trainable biases (none by default: lorakit
                                                   freezes the base layers, biases included)
    "other"             lr          weight_decay   any other trainable parameter (e.g. a base
                                                   weight you unfroze) — look at its
                                                   ``param_names``

Only non-empty groups are returned. Each group is a dict with "name", "params", "param_names"
(the parameters' names in ``model.named_parameters()``), "lr" and "weight_decay"; torch
optimisers keep the extra keys, so ``opt.param_groups`` says which group is which.
"""
from __future__ import annotations

from torch import nn

from ..layers.base import AdapterLinear, spec_of
from ..validate import check_real

__all__ = ["GROUPS", "loraplus_param_groups", "param_group_of"]

GROUPS = ("lora_A", "lora_B", "magnitude", "gates", "condition", "structure",
          "structure_scales", "bias", "other")
_NO_DECAY = {"magnitude", "gates", "structure_scales", "bias"}


def param_group_of(model: nn.Module, name: str) -> str:
    """The group (one of ``GROUPS``) of the parameter called ``name`` in ``model``."""
    return _group(dict(model.named_modules()), name)


def _group(modules: dict[str, nn.Module], name: str) -> str:
    """Declared first: an adapter's ``ADAPTER.param_groups`` (for its own Parameters and its
    submodules), a structure encoder's ``PARAM_GROUPS``; then PEFT's module names
    (``lora_A.default.weight``); then biases; everything else is "other"."""
    owner_name, _, attr = name.rpartition(".")
    path = owner_name.split(".") if owner_name else []
    ancestors = [modules[".".join(path[:i])] for i in range(len(path) + 1)]   # root .. owner
    for depth, module in enumerate(ancestors):
        declared = getattr(type(module), "PARAM_GROUPS", None)          # the structure encoders
        if declared is not None:
            key = path[depth] if depth < len(path) else attr
            return declared.get(key if key in declared else attr, declared["*"])
    owner, parent = ancestors[-1], (ancestors[-2] if len(ancestors) > 1 else None)
    if isinstance(owner, AdapterLinear) and attr in spec_of(owner).param_groups:
        return spec_of(owner).param_groups[attr]
    if isinstance(parent, AdapterLinear) and path[-1] in spec_of(parent).param_groups:
        return spec_of(parent).param_groups[path[-1]]
    for key in ("lora_A", "lora_B"):          # PEFT's modules: lora_A.default.weight
        if attr == key or key in path:
            return key
    if attr == "bias":
        return "bias"
    return "other"


def loraplus_param_groups(model: nn.Module, lr: float, ratio: float = 16.0,
                          weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups for LoRA+: B at lr·ratio, everything else at lr.

    See the module docstring for the groups, their learning rates and weight decay. Frozen
    parameters are left out. Raises ValueError for a non-positive lr or ratio, a negative
    weight_decay, or a model with no trainable parameters.
    """
    check_real("lr", lr, low=0, low_open=True)
    check_real("ratio", ratio, low=0, low_open=True)
    check_real("weight_decay", weight_decay, low=0)
    modules = dict(model.named_modules())
    buckets: dict[str, list] = {g: [] for g in GROUPS}
    for name, p in model.named_parameters():            # shared parameters come once
        if p.requires_grad:
            buckets[_group(modules, name)].append((name, p))
    if not any(buckets.values()):
        raise ValueError("the model has no trainable parameters (did you forget "
                         "mark_only_adapters_trainable, or freeze everything?)")
    groups = []
    for g in GROUPS:
        if buckets[g]:
            groups.append({"name": g,
                           "params": [p for _, p in buckets[g]],
                           "param_names": [n for n, _ in buckets[g]],
                           "lr": lr * ratio if g == "lora_B" else lr,
                           "weight_decay": 0.0 if g in _NO_DECAY else weight_decay})
    return groups
