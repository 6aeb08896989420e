"""Export lorakit adapters to PEFT's adapter format, and import PEFT LoRA adapters.

PEFT stores an adapter as a directory with two files (what ``PeftModel.save_pretrained`` writes
and ``PeftModel.from_pretrained(base_model, path)`` reads):

    adapter_config.json          {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                  "target_modules": ["q_proj", "v_proj"], "use_dora": false, ...}
    adapter_model.safetensors    base_model.model.<module name>.lora_A.weight   (r, in)
                                 base_model.model.<module name>.lora_B.weight   (out, r)

PEFT's LoRA computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` with
``scaling = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``): the same equation,
shapes and orientation as ``LoRALinear`` (A: (r, in), B: (out, r)), so the weights are copied
as they are. Per-module ranks/alphas travel in ``rank_pattern`` / ``alpha_pattern``.

Neither function imports ``peft``: they read and write the files directly. What lorakit cannot
represent (PEFT's ``lora_bias``, trained biases, ``modules_to_save``, Conv1D layers,
LoftQ/PiSSA-style inits that rewrite the base weights, ...) is rejected with a clear error.

Which lorakit class maps to which PEFT flavour is ``PEFT_MAPPINGS``: one ``PeftMapping`` per
adapter class, built from what each registered family declares (``ADAPTER.peft``, a
``PeftFlavour``: the config flags that select it in PEFT, LoRA's ``use_dora: false``, DoRA's
``use_dora: true``, and the layer attribute behind each stored tensor). Classes outside lorakit
can add theirs with ``register_peft_mapping``.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from ..layers.base import AdapterLinear, PeftFlavour, spec_of
from ..layers.registry import FAMILIES
from ..tuning.inject import adapter_modules, build_adapters, inside_adapter, set_submodule

__all__ = ["PEFT_MAPPINGS", "PeftMapping", "register_peft_mapping", "to_peft", "from_peft"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."


@dataclass(frozen=True)
class PeftMapping:
    """How one lorakit adapter class corresponds to a PEFT LoRA flavour.

    adapter_cls: the lorakit class (matched exactly, not by subclass).
    flags: the adapter_config.json values that select this flavour in PEFT.
    suffixes: the tensor-name suffixes PEFT stores per module (after ``<module name>.``).
    export: adapter -> {suffix: tensor}.
    load: (adapter, {suffix: tensor}) -> None, copies the tensors into a freshly built adapter.
    kwargs: (rank, alpha, dropout) -> the adapter's __init__ kwargs.
    """
    adapter_cls: type
    flags: Mapping[str, object]
    suffixes: tuple[str, ...]
    export: Callable[[AdapterLinear], dict]
    load: Callable[[AdapterLinear, dict], None]
    kwargs: Callable[[int, float, float], dict] = field(
        default=lambda rank, alpha, dropout: {"rank": rank, "alpha": alpha, "dropout": dropout})


PEFT_MAPPINGS: dict[type, PeftMapping] = {}


def register_peft_mapping(mapping: PeftMapping) -> PeftMapping:
    """Add (or replace) the PEFT mapping of ``mapping.adapter_cls``."""
    PEFT_MAPPINGS[mapping.adapter_cls] = mapping
    return mapping


def _mapping(cls: type, flavour: PeftFlavour) -> PeftMapping:
    """The PeftMapping of a family from its declared flavour: each PEFT tensor is the Parameter
    (or buffer) the flavour names, exported as it is and copied back on load."""
    tensors = dict(flavour.tensors)

    def export(layer: AdapterLinear) -> dict:
        return {suffix: getattr(layer, attr) for suffix, attr in tensors.items()}

    @torch.no_grad()
    def load(layer: AdapterLinear, found: dict) -> None:
        for suffix, attr in tensors.items():
            getattr(layer, attr).copy_(found[suffix])

    return PeftMapping(cls, dict(flavour.flags), tuple(tensors), export, load)


for _cls in FAMILIES:   # in registration order: on import, the first family with PEFT's flags wins
    if spec_of(_cls).peft is not None:
        register_peft_mapping(_mapping(_cls, spec_of(_cls).peft))


# --------------------------------------------------------------------------------------------
# PEFT's pattern lookup (peft.utils.other.get_pattern_key), reimplemented to avoid the import
# --------------------------------------------------------------------------------------------
def _pattern_value(patterns: Mapping[str, object], name: str, default):
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", name):
            return patterns[key]
    return default


def _json_number(x: float):
    return int(x) if float(x).is_integer() else float(x)


def _plain_module_names(model: nn.Module, adapters: Mapping[str, AdapterLinear]) -> list[str]:
    """Module names the model has once its adapters are unloaded (what PEFT will see)."""
    return [n for n, _ in model.named_modules() if n and not inside_adapter(n, adapters)]


def _target_modules(model: nn.Module, adapters: Mapping[str, AdapterLinear]) -> list[str]:
    """Short names (["q_proj", "v_proj"]) when they select exactly the adapted layers under
    PEFT's suffix rule, else the full dotted names."""
    short = sorted({n.rsplit(".", 1)[-1] for n in adapters})
    selected = {n for n in _plain_module_names(model, adapters)
                if any(n == k or n.endswith("." + k) for k in short)}
    return short if selected == set(adapters) else sorted(adapters)


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------
def to_peft(model: nn.Module, path: str | os.PathLike, base_model_name_or_path: str | None = None,
            task_type: str | None = None) -> dict:
    """Write ``model``'s lorakit adapters as a PEFT LoRA adapter directory; returns the config.

    ``PeftModel.from_pretrained(base_model, path)`` on the same base model then computes the
    same function. ``model`` must hold adapters of one registered class (``PEFT_MAPPINGS``)
    with one dropout; ranks and alphas may differ per layer (written as ``rank_pattern`` /
    ``alpha_pattern``). Only adapter tensors are exported: biases trained with
    ``mark_only_adapters_trainable(model, bias=...)`` are not. Merged adapters are exported
    as adapters (their base weight is not touched).
    """
    from safetensors.torch import save_file
    adapters = adapter_modules(model)
    if not adapters:
        raise ValueError("the model has no lorakit adapters to export")
    if "" in adapters:
        raise ValueError("the model itself is an adapter; PEFT needs a model that contains them")
    unknown = sorted({type(a).__name__ for a in adapters.values() if type(a) not in PEFT_MAPPINGS})
    if unknown:
        raise ValueError(f"{unknown} have no PEFT equivalent (exportable: "
                         f"{[c.__name__ for c in PEFT_MAPPINGS]}); conditioned layers compute a "
                         "different function for every p, which PEFT's LoRA cannot represent")
    mappings = {type(a): PEFT_MAPPINGS[type(a)] for a in adapters.values()}
    flag_sets = {tuple(sorted(m.flags.items())) for m in mappings.values()}
    if len(flag_sets) != 1:
        raise ValueError(f"one PEFT adapter has one flavour, the model mixes {sorted(c.__name__ for c in mappings)}")
    dropouts = {float(getattr(a, "dropout_p", 0.0)) for a in adapters.values()}
    if len(dropouts) != 1:
        raise ValueError(f"PEFT has one lora_dropout per adapter, the layers use {sorted(dropouts)}")

    ranks = {n: a.rank for n, a in adapters.items()}
    alphas = {n: float(a.alpha) for n, a in adapters.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    rank_pattern = {re.escape(n): v for n, v in ranks.items() if v != r}
    alpha_pattern = {re.escape(n): _json_number(v) for n, v in alphas.items() if v != alpha}
    for n in adapters:  # PEFT matches pattern keys as suffixes: make sure each resolves to its own
        if (_pattern_value(rank_pattern, n, r) != ranks[n]
                or float(_pattern_value(alpha_pattern, n, alpha)) != alphas[n]):
            raise ValueError(f"cannot express the rank/alpha of {n!r} unambiguously in PEFT's "
                             "rank_pattern/alpha_pattern (another module name ends with it)")

    config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "r": r,
        "lora_alpha": _json_number(alpha),
        "lora_dropout": dropouts.pop(),
        "target_modules": _target_modules(model, adapters),
        "exclude_modules": None,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "fan_in_fan_out": False,
        "bias": "none",
        "lora_bias": False,
        "use_rslora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        **dict(next(iter(mappings.values())).flags),
    }
    tensors = {}
    for name, a in adapters.items():
        for suffix, t in PEFT_MAPPINGS[type(a)].export(a).items():
            tensors[f"{PREFIX}{name}.{suffix}"] = t.detach().contiguous().cpu()
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})
    with open(os.path.join(path, CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return config


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------
# Config keys from_peft understands; any other key must hold a neutral value (below).
_HANDLED = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode",
            "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules",
            "rank_pattern", "alpha_pattern", "use_rslora", "use_dora", "layers_to_transform",
            "layers_pattern", "peft_version", "auto_mapping", "init_lora_weights",
            "ensure_weight_tying", "runtime_config"}
_NEUTRAL = {"bias": "none", "qalora_group_size": 16, "megatron_core": "megatron.core"}
_WHY = {
    "fan_in_fan_out": "it targets Conv1D (GPT-2 style) layers; lorakit wraps nn.Linear",
    "bias": "PEFT trained biases (bias='all'/'lora_only'); lorakit imports adapter weights only",
    "lora_bias": "lora_B has a bias (lora_bias=True); LoRALinear has none",
    "modules_to_save": "it carries full copies of modules (modules_to_save)",
    "loftq_config": "LoftQ rewrites the base weights",
    "layer_replication": "it duplicates base layers (layer_replication)",
    "trainable_token_indices": "it trains embedding rows (trainable_token_indices)",
    "target_parameters": "it adapts nn.Parameters directly (target_parameters)",
    "alora_invocation_tokens": "activated LoRA (aLoRA) depends on the input tokens",
}


def _unsupported(cfg: Mapping) -> list[str]:
    problems = []
    for key, value in cfg.items():
        if key in _HANDLED:
            continue
        if key in _NEUTRAL and value == _NEUTRAL[key]:
            continue
        if value in (None, False, {}, [], ""):
            continue
        problems.append(f"{key}={value!r}" + (f": {_WHY[key]}" if key in _WHY else ""))
    init = cfg.get("init_lora_weights", True)
    if not (init in (True, False) or (isinstance(init, str) and init.lower() == "gaussian")):
        problems.append(f"init_lora_weights={init!r}: this init rewrites the base weights, so the "
                        "adapter alone does not describe the model (save it with PEFT's "
                        "path_initial_model_for_weight_conversion)")
    return problems


def _read_peft_config(path) -> dict:
    file = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(file):
        raise ValueError(f"no {CONFIG_NAME} in {os.fspath(path)!r}")
    with open(file, encoding="utf-8") as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        found = cfg.get("peft_type") if isinstance(cfg, dict) else None
        hint = " (a lorakit adapter: use lorakit.tuning.load_adapter)" \
            if isinstance(cfg, dict) and cfg.get("format") == "lorakit-adapter" else ""
        raise ValueError(f"{file}: only PEFT LoRA adapters can be imported, peft_type={found!r}{hint}")
    problems = _unsupported(cfg)
    if problems:
        raise ValueError("this PEFT adapter uses options lorakit cannot represent:\n  "
                         + "\n  ".join(problems))
    for key in ("r", "lora_alpha"):
        if isinstance(cfg.get(key), bool) or not isinstance(cfg.get(key), (int, float)):
            raise ValueError(f"{file}: {key} must be a number, got {cfg.get(key)!r}")
    return cfg


def from_peft(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a PEFT LoRA adapter directory into ``model`` (the plain base model) as lorakit
    adapters; returns the adapted module names.

    The adapted modules are read from the tensor names (so PEFT's target_modules,
    layers_to_transform, ... need no re-interpretation); ranks from the tensors' shapes, checked
    against ``r``/``rank_pattern``; alphas from ``lora_alpha``/``alpha_pattern``. With
    ``use_rslora`` (scaling alpha/sqrt(r)) the lorakit alpha is set to lora_alpha*sqrt(r), equal
    up to float rounding. Everything is checked before the model is touched.
    """
    from safetensors import safe_open
    cfg = _read_peft_config(path)
    flags = {k: cfg.get(k, False) for k in ("use_dora",)}
    mapping = next((m for m in PEFT_MAPPINGS.values()
                    if all(bool(flags.get(k, False)) == bool(v) for k, v in m.flags.items())), None)
    if mapping is None:
        raise ValueError(f"no lorakit adapter is registered for PEFT flags {flags} "
                         "(DoRA needs a DoRALinear registered in lorakit.interop.peft.PEFT_MAPPINGS)")
    weights = os.path.join(path, WEIGHTS_NAME)
    if not os.path.isfile(weights):
        raise ValueError(f"no {WEIGHTS_NAME} in {os.fspath(path)!r} (pickled adapter_model.bin "
                         "files are not read; re-save with safe_serialization=True)")

    with safe_open(weights, framework="pt") as f:
        raw = {k: f.get_tensor(k) for k in f.keys()}
    per_module: dict[str, dict] = {}
    stray = []
    for key, t in raw.items():
        suffix = next((s for s in mapping.suffixes if key.endswith("." + s)), None)
        if not key.startswith(PREFIX) or suffix is None:
            stray.append(key)
            continue
        per_module.setdefault(key[len(PREFIX):-len(suffix) - 1], {})[suffix] = t
    if stray:
        raise ValueError(f"unexpected tensors in the PEFT adapter (lorakit reads "
                         f"{PREFIX}<module>.{{{', '.join(mapping.suffixes)}}}): {sorted(stray)[:5]}")
    if not per_module:
        raise ValueError(f"{weights} holds no LoRA tensors")

    existing = adapter_modules(model)
    modules = dict(model.named_modules())
    plan, problems = {}, []
    for name, tensors in sorted(per_module.items()):
        missing = [s for s in mapping.suffixes if s not in tensors]
        module = modules.get(name)
        if missing:
            problems.append(f"{name}: missing {missing}")
            continue
        if module is None:
            problems.append(f"{name}: the model has no such module")
            continue
        if not isinstance(module, nn.Linear) or inside_adapter(name, existing):
            problems.append(f"{name}: is a {type(module).__name__}, not a plain nn.Linear")
            continue
        A, B = tensors["lora_A.weight"], tensors["lora_B.weight"]
        rank = A.shape[0] if A.dim() == 2 else -1
        want_rank = _pattern_value(cfg.get("rank_pattern") or {}, name, cfg["r"])
        if A.shape != (want_rank, module.in_features) or B.shape != (module.out_features, want_rank):
            problems.append(f"{name}: lora_A {tuple(A.shape)}, lora_B {tuple(B.shape)}; expected "
                            f"({want_rank}, {module.in_features}) and "
                            f"({module.out_features}, {want_rank})")
            continue
        odd = [f"{s} {tuple(t.shape)}" for s, t in tensors.items()
               if s not in ("lora_A.weight", "lora_B.weight") and t.shape != (module.out_features,)]
        if odd:   # per-output-row vectors such as DoRA's magnitude
            problems.append(f"{name}: {odd}; expected ({module.out_features},)")
            continue
        alpha = float(_pattern_value(cfg.get("alpha_pattern") or {}, name, cfg["lora_alpha"]))
        if cfg.get("use_rslora"):
            alpha = alpha * math.sqrt(rank)       # lorakit's alpha/r == PEFT's alpha/sqrt(r)
        plan[name] = (mapping.adapter_cls,
                      mapping.kwargs(rank, alpha, float(cfg.get("lora_dropout") or 0.0)))
    if problems:
        raise ValueError("the PEFT adapter does not fit this model:\n  " + "\n  ".join(problems[:8]))
    build_adapters(model, plan, meta=True)      # argument checks (rank, alpha) without touching

    for name, adapter in build_adapters(model, plan).items():
        set_submodule(model, name, adapter)
        mapping.load(adapter, per_module[name])
    return sorted(plan)
