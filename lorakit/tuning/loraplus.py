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

import math

from torch import nn

from ..conditioning.encoders import StructureEncoder, TemporalStructureEncoder
from ..layers.dora import DoRALinear
from ..layers.hylorada import HyLoRADALinear, HyLoRADAv2Linear

__all__ = ["GROUPS", "loraplus_param_groups", "param_group_of"]

GROUPS = ("lora_A", "lora_B", "magnitude", "gates", "condition", "structure",
          "structure_scales", "bias", "other")
_NO_DECAY = {"magnitude", "gates", "structure_scales", "bias"}
_ENCODERS = (StructureEncoder, TemporalStructureEncoder)


def param_group_of(model: nn.Module, name: str) -> str:
    """The group (one of ``GROUPS``) of the parameter called ``name`` in ``model``."""
    return _group(dict(model.named_modules()), name)


def _group(modules: dict[str, nn.Module], name: str) -> str:
    owner_name, _, attr = name.rpartition(".")
    path = owner_name.split(".") if owner_name else []
    ancestors = [modules[".".join(path[:i])] for i in range(len(path) + 1)]   # root .. owner
    owner, parent = ancestors[-1], (ancestors[-2] if len(ancestors) > 1 else None)
    if any(isinstance(m, _ENCODERS) for m in ancestors):
        if attr == "gate":
            return "gates"
        return "structure_scales" if attr in ("freq_scale", "period_log_ratio") else "structure"
    for key in ("lora_A", "lora_B"):          # lorakit's Parameters, or PEFT's lora_A.default
        if attr == key or key in path:
            return key
    if attr in ("lora_C", "lora_S"):
        return "condition"
    if attr == "magnitude" and isinstance(owner, DoRALinear):
        return "magnitude"
    if attr in ("magnitude_gate", "residual_weight") and isinstance(owner, HyLoRADALinear):
        return "gates"
    if isinstance(parent, HyLoRADAv2Linear) and owner is parent.scale_from_structure:
        return "structure"
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
    for key, value, ok in (("lr", lr, lambda v: v > 0), ("ratio", ratio, lambda v: v > 0),
                           ("weight_decay", weight_decay, lambda v: v >= 0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not ok(value):
            raise ValueError(f"{key} must be a finite number {'>= 0' if key == 'weight_decay' else '> 0'}"
                             f", got {value!r}")
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
