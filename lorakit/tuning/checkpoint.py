"""Save and load adapters: ``adapter_model.safetensors`` + ``adapter_config.json``.

    save_adapter(model, "run1")                  # the adapters' tensors and how to rebuild them
    load_adapter(fresh_model, "run1")            # validates everything before it touches the model

Saved adapter config (lorakit's own format; see ``lorakit.interop.peft`` for PEFT's)::

    {"format": "lorakit-adapter", "format_version": 1, "lorakit_version": "0.1.0",
     "adapter_class": "lorakit.layers.lora.LoRALinear",
     "adapter_kwargs": {"rank": 8, "alpha": 16.0, "dropout": 0.0},   # the layers' __init__ args
     "module_kwargs": {},           # per-module values that differ from adapter_kwargs
     "target_modules": ["layers.0.q_proj", ...],                     # full dotted names
     "bias": "none", ...}           # plus any extra fields passed as ``config=``

An adapter's ``__init__`` arguments (after ``base_layer``) are read back from the attributes
its class declares in ``ADAPTER.init_kwargs`` (``layers/base.py``, ``AdapterSpec``).
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
from typing import Mapping

import torch
from torch import nn

from ..layers.base import AdapterLinear, MergeStateError, spec_of
from .inject import BIAS_MODES, adapter_modules, bias_param_names, build_adapters, inside_adapter, set_submodule

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "adapter_init_kwargs", "adapter_state_dict", "load_adapter",
           "save_adapter"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "lorakit-adapter"
FORMAT_VERSION = 1
_OWN_CONFIG_KEYS = ("format", "format_version", "lorakit_version", "adapter_class",
                    "adapter_kwargs", "module_kwargs", "target_modules", "bias")


# --------------------------------------------------------------------------------------------
# adapter state: what an adapter is (class + init kwargs) and what it holds (tensors)
# --------------------------------------------------------------------------------------------
_SCALARS = (bool, int, float, str, type(None))


def adapter_init_kwargs(adapter: AdapterLinear) -> dict:
    """The ``__init__`` arguments (after base_layer) that rebuild ``adapter``, as JSON scalars.

    Read from the attributes the class declares in ``ADAPTER.init_kwargs``. Raises TypeError
    when the declaration does not name exactly the ``__init__`` arguments (a subclass that
    adds one must declare its own ``AdapterSpec``) or a value is not a JSON scalar.
    """
    cls = type(adapter)
    spec = spec_of(cls)
    params = [prm.name for prm in list(inspect.signature(cls.__init__).parameters.values())[2:]
              if prm.kind not in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD)]
    if set(params) != set(spec.init_kwargs):
        raise TypeError(f"{cls.__name__}.__init__ takes {params} after base_layer, but its AdapterSpec "
                        f"declares init_kwargs {list(spec.init_kwargs)}: declare "
                        f"{cls.__name__}.ADAPTER = AdapterSpec(...) with one entry per argument")
    out = {}
    for arg in params:
        value = getattr(adapter, spec.init_kwargs[arg])
        if not isinstance(value, _SCALARS):
            raise TypeError(f"{cls.__name__}.{spec.init_kwargs[arg]} (the value of __init__ argument "
                            f"{arg!r}) is a {type(value).__name__}, not a number, str or bool")
        out[arg] = value
    return out


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub] + _all_subclasses(sub)
    return out


def _resolve_class(path: str) -> type:
    """An AdapterLinear subclass from its dotted path. Only lorakit's own modules are imported;
    any other class must already be imported (configs never trigger arbitrary imports)."""
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"adapter_class must be a dotted class path, got {path!r}")
    module_name, _, qualname = path.rpartition(".")
    if module_name == "lorakit" or module_name.startswith("lorakit."):
        try:
            importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"adapter_class {path!r}: cannot import {module_name}: {exc}") from exc
    for cls in _all_subclasses(AdapterLinear):
        if _class_path(cls) == path:
            return cls
    raise ValueError(f"adapter_class {path!r} is not a known lorakit adapter class (classes "
                     "outside lorakit must be imported before loading)")


def adapter_state_dict(model: nn.Module, bias: str = "none") -> dict[str, torch.Tensor]:
    """The adapters' tensors only (keys as in ``model.state_dict()``), detached.

    bias: also include "all" biases or the "adapter_only" biases (as trained with
    ``mark_only_adapters_trainable(model, bias)``).
    """
    adapters = adapter_modules(model)
    if not adapters:
        raise ValueError("the model has no lorakit adapters")
    keep = bias_param_names(model, bias)
    out = {}
    for name, adapter in adapters.items():
        prefix = name + "." if name else ""
        for key, value in adapter.state_dict().items():
            if not key.startswith("base_layer."):
                out[prefix + key] = value.detach()
    full = model.state_dict(keep_vars=False)
    for key in sorted(keep):
        out[key] = full[key].detach()
    return out


def _model_config(model: nn.Module, bias: str) -> dict:
    adapters = adapter_modules(model)
    if not adapters:
        raise ValueError("the model has no lorakit adapters to save")
    classes = {_class_path(type(a)) for a in adapters.values()}
    if len(classes) != 1:
        raise ValueError(f"save_adapter supports one adapter class per model, found {sorted(classes)}")
    kwargs = {name: adapter_init_kwargs(a) for name, a in adapters.items()}
    first = next(iter(kwargs.values()))
    common = {k: v for k, v in first.items() if all(kw.get(k, object()) == v for kw in kwargs.values())}
    module_kwargs = {name: {k: v for k, v in kw.items() if common.get(k, object()) != v}
                     for name, kw in kwargs.items()}
    from .. import __version__
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "lorakit_version": __version__,
            "adapter_class": classes.pop(), "adapter_kwargs": common,
            "module_kwargs": {n: kw for n, kw in module_kwargs.items() if kw},
            "target_modules": list(adapters), "bias": bias}


def save_adapter(model: nn.Module, path: str | os.PathLike, config: Mapping | None = None,
                 bias: str = "none") -> None:
    """Write ``path/adapter_model.safetensors`` (``adapter_state_dict``) and
    ``path/adapter_config.json`` (class, init kwargs, target names, lorakit version).

    config: extra JSON fields to record (base model name, notes, ...); they may not replace
    lorakit's own keys. The adapters' tensors are saved as they are (dtype included).
    """
    from safetensors.torch import save_file
    cfg = _model_config(model, bias)
    for key, value in (config or {}).items():
        if key in _OWN_CONFIG_KEYS:
            raise ValueError(f"config key {key!r} is written by lorakit itself; use another name")
        cfg[key] = value
    text = json.dumps(cfg, indent=2, sort_keys=False)  # fails here, before writing, if not JSON
    tensors = {k: v.contiguous().cpu() for k, v in adapter_state_dict(model, bias).items()}
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})
    with open(os.path.join(path, CONFIG_NAME), "w", encoding="utf-8") as f:
        f.write(text + "\n")


def _read_config(path) -> dict:
    file = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(file):
        raise ValueError(f"no {CONFIG_NAME} in {os.fspath(path)!r}")
    with open(file, encoding="utf-8") as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        hint = " (this looks like a PEFT adapter: use lorakit.interop.peft.from_peft)" \
            if isinstance(cfg, dict) and "peft_type" in cfg else ""
        raise ValueError(f"{file} is not a lorakit adapter config{hint}")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{file}: unsupported format_version {cfg.get('format_version')!r} "
                         f"(this lorakit reads {FORMAT_VERSION})")
    for key, kind in (("adapter_class", str), ("adapter_kwargs", dict), ("module_kwargs", dict),
                      ("target_modules", list), ("bias", str)):
        if not isinstance(cfg.get(key), kind):
            raise ValueError(f"{file}: {key!r} missing or not a {kind.__name__}")
    return cfg


def _expected_shapes(model: nn.Module, plan: Mapping[str, tuple[type, dict]] | None,
                     bias: str) -> dict[str, torch.Size]:
    """Key -> shape of what loading must provide, for the model as it is (plan=None) or as it
    will be once the planned adapters are injected (computed on meta stand-ins)."""
    if plan is None:
        return {k: v.shape for k, v in adapter_state_dict(model, bias).items()}
    out = {}
    for name, adapter in build_adapters(model, plan, meta=True).items():
        for key, value in adapter.state_dict().items():
            if not key.startswith("base_layer."):
                out[f"{name}.{key}"] = value.shape
    params = dict(model.named_parameters())
    if bias == "all":
        for key, value in params.items():
            if key.rsplit(".", 1)[-1] == "bias":
                owner = key[:-len(".bias")]
                out[f"{owner}.base_layer.bias" if owner in plan else key] = value.shape
    elif bias == "adapter_only":
        for name in plan:
            if f"{name}.bias" in params:
                out[f"{name}.base_layer.bias"] = params[f"{name}.bias"].shape
    return out


def load_adapter(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load an adapter written by ``save_adapter`` into ``model``; returns the adapted names.

    ``model`` is either the plain base model (adapters are injected as recorded) or a model
    that already carries the *same* adapters (same class, init kwargs and target names; to
    switch between adapters trained on one base). The config, every key, and every shape are
    checked before the model is touched: on any ValueError the model is unchanged.
    Tensors are copied into the model's own dtype and device.
    """
    from safetensors import safe_open
    cfg = _read_config(path)
    if cfg["bias"] not in BIAS_MODES:
        raise ValueError(f"adapter config: bias must be one of {BIAS_MODES}, got {cfg['bias']!r}")
    cls = _resolve_class(cfg["adapter_class"])
    targets = cfg["target_modules"]
    if not targets or len(set(targets)) != len(targets):
        raise ValueError(f"adapter config: target_modules must be distinct names, got {targets}")
    bad_overrides = set(cfg["module_kwargs"]) - set(targets)
    if bad_overrides:
        raise ValueError(f"adapter config: module_kwargs for non-targets {sorted(bad_overrides)}")
    wanted = {n: {**cfg["adapter_kwargs"], **cfg["module_kwargs"].get(n, {})} for n in targets}

    existing = adapter_modules(model)
    if existing:
        plan = None
        if set(existing) != set(targets):
            raise ValueError(
                "the model's adapters do not match the saved ones: only in the model "
                f"{sorted(set(existing) - set(targets))[:5]}, only saved "
                f"{sorted(set(targets) - set(existing))[:5]}")
        for name, adapter in existing.items():
            if type(adapter) is not cls:
                raise ValueError(f"{name}: the model has a {type(adapter).__name__}, the adapter "
                                 f"was saved from {cfg['adapter_class']}")
            have = adapter_init_kwargs(adapter)
            if have != wanted[name]:
                diff = {k: (have.get(k), wanted[name].get(k))
                        for k in set(have) | set(wanted[name]) if have.get(k) != wanted[name].get(k)}
                raise ValueError(f"{name}: adapter settings differ (model, saved): {diff}")
            if adapter.merged:
                raise MergeStateError(f"{name} is merged; unmerge before loading new weights")
    else:
        modules = dict(model.named_modules())
        for name in targets:
            module = modules.get(name)
            if module is None:
                raise ValueError(f"the model has no module {name!r} (saved target)")
            if not isinstance(module, nn.Linear) or inside_adapter(name, existing):
                raise ValueError(f"saved target {name!r} is a {type(module).__name__}, "
                                 "not an nn.Linear")
        plan = {n: (cls, wanted[n]) for n in targets}
    expected = _expected_shapes(model, plan, cfg["bias"])

    with safe_open(os.path.join(path, WEIGHTS_NAME), framework="pt") as f:
        keys = set(f.keys())
        missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
        if missing or extra:
            raise ValueError(f"adapter weights do not match the model: missing keys {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}, unexpected keys {extra[:5]}"
                             f"{' ...' if len(extra) > 5 else ''}")
        tensors = {k: f.get_tensor(k) for k in sorted(keys)}
    wrong = [f"{k}: saved {tuple(t.shape)}, model expects {tuple(expected[k])}"
             for k, t in tensors.items() if t.shape != expected[k]]
    if wrong:
        raise ValueError("adapter weights have the wrong shape: " + "; ".join(wrong[:5]))
    not_finite = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if not_finite:
        raise ValueError(f"adapter weights contain NaN or Inf: {not_finite[:5]}")

    # --- everything checked: now change the model ----------------------------------------
    if plan is not None:
        for name, adapter in build_adapters(model, plan).items():
            set_submodule(model, name, adapter)
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in tensors.items():
            state[key].copy_(value)
    return list(targets)
