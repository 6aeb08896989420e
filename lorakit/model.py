"""Model-level tools: put adapters into a model, train only them, merge, save and load.

Every function works with any lorakit adapter (any ``AdapterLinear`` subclass), in the spirit of
PEFT's ``target_modules`` / ``merge_and_unload`` and loralib's ``mark_only_lora_as_trainable``:

    names = inject_adapters(model, LoRALinear, target_modules=["q_proj", "v_proj"], rank=8, alpha=16)
    mark_only_adapters_trainable(model)          # base frozen, adapters trainable
    print_trainable_parameters(model)            # trainable params: ... || all params: ... || trainable%: ...
    ...train...
    save_adapter(model, "run1")                  # adapter_model.safetensors + adapter_config.json
    load_adapter(fresh_model, "run1")            # validates everything before it touches the model
    plain = merge_and_unload(model)              # nn.Linear everywhere again, same function

Conditioned layers (whose ``merge`` takes a condition vector ``p``) can only be merged for one
``p`` at a time, so ``merge_adapters`` / ``merge_and_unload`` ask for it explicitly.

Saved adapter config (``adapter_config.json``, lorakit's own format; see ``lorakit.interop.peft``
for PEFT's)::

    {"format": "lorakit-adapter", "format_version": 1, "lorakit_version": "0.1.0",
     "adapter_class": "lorakit.layers.lora.LoRALinear",
     "adapter_kwargs": {"rank": 8, "alpha": 16.0, "dropout": 0.0},   # the layers' __init__ args
     "module_kwargs": {},           # per-module values that differ from adapter_kwargs
     "target_modules": ["layers.0.q_proj", ...],                     # full dotted names
     "bias": "none", ...}           # plus any extra fields passed as ``config=``

An adapter's ``__init__`` arguments (after ``base_layer``) are read back from the attributes of
the same name (or ``<name>_p``, as ``LoRALinear`` stores ``dropout_p``); a class can instead
define ``adapter_init_kwargs(self) -> dict``.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import re
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from .layers.base import AdapterLinear, MergeStateError
from .layers.lora import LoRALinear

__all__ = [
    "ALL_LINEAR", "CONFIG_NAME", "WEIGHTS_NAME",
    "adapter_modules", "adapter_init_kwargs", "find_target_modules", "inject_adapters",
    "mark_only_adapters_trainable", "trainable_report", "print_trainable_parameters",
    "merge_adapters", "unmerge_adapters", "merge_and_unload", "unload",
    "adapter_state_dict", "save_adapter", "load_adapter",
]

ALL_LINEAR = "all-linear"
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "lorakit-adapter"
FORMAT_VERSION = 1
BIAS_MODES = ("none", "all", "adapter_only")
_OWN_CONFIG_KEYS = ("format", "format_version", "lorakit_version", "adapter_class",
                    "adapter_kwargs", "module_kwargs", "target_modules", "bias")
# nn.MultiheadAttention reads out_proj.weight directly instead of calling out_proj(x), so
# wrapping it would silently do nothing.
_UNWRAPPABLE_LINEARS = (nn.modules.linear.NonDynamicallyQuantizableLinear,)


# --------------------------------------------------------------------------------------------
# finding modules
# --------------------------------------------------------------------------------------------
def adapter_modules(model: nn.Module) -> dict[str, AdapterLinear]:
    """{dotted name: adapter} for every lorakit adapter in ``model`` (in module order)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLinear)}


def _inside_adapter(name: str, adapters: Iterable[str]) -> bool:
    return any(name.startswith(a + ".") for a in adapters if a) or (
        "" in adapters and name != "")


def _matches(name: str, keys: str | Sequence[str]) -> bool:
    """PEFT's rule: a string is a regex that must match the whole name; a list entry matches the
    name exactly or as a suffix after a dot."""
    if isinstance(keys, str):
        return re.fullmatch(keys, name) is not None
    return any(name == k or name.endswith("." + k) for k in keys)


def _output_head_names(model: nn.Module) -> set[str]:
    """Names of the output head that "all-linear" leaves alone.

    Detected as PEFT does, through transformers' ``model.get_output_embeddings()`` (the
    ``lm_head`` of a causal LM); for a model without that method, any Linear whose own name is
    ``lm_head``.
    """
    head = None
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        try:
            head = getter()
        except (NotImplementedError, AttributeError):
            head = None
    names = set()
    for name, module in model.named_modules():
        if (head is not None and module is head) or (
                head is None and name.rsplit(".", 1)[-1] == "lm_head"):
            names.add(name)
    return names


def _check_keys_arg(arg_name: str, keys) -> str | list[str]:
    if isinstance(keys, str):
        try:
            re.compile(keys)
        except re.error as exc:
            raise ValueError(f"{arg_name} {keys!r} is not a valid regular expression: {exc}") from exc
        return keys
    if isinstance(keys, Iterable):
        keys = list(keys)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"{arg_name} must be a non-empty list of module names, a regex "
                             f"string or {ALL_LINEAR!r}, got {keys!r}")
        return keys
    raise TypeError(f"{arg_name} must be a list of module names or a regex string, "
                    f"got {type(keys).__name__}")


def find_target_modules(model: nn.Module, target_modules: str | Sequence[str],
                        exclude_modules: str | Sequence[str] | None = None) -> list[str]:
    """The dotted names ``inject_adapters`` would replace (nothing is changed).

    ``target_modules``: a list of names, each matching a module name exactly or as its last
    dotted parts ("q_proj" matches "layers.0.attn.q_proj"); a regex string matched against the
    whole name; or "all-linear": every ``nn.Linear`` except the output head (see
    ``_output_head_names``). ``exclude_modules`` uses the same rules (list or regex).
    Modules inside existing adapters are never matched.

    Raises ValueError when nothing matches or a match is not an ``nn.Linear``.
    """
    all_linear = isinstance(target_modules, str) and target_modules.lower() == ALL_LINEAR
    if not all_linear:
        target_modules = _check_keys_arg("target_modules", target_modules)
    if exclude_modules is not None:
        exclude_modules = _check_keys_arg("exclude_modules", exclude_modules)
    existing = set(adapter_modules(model))
    heads = _output_head_names(model) if all_linear else set()
    found, not_linear, already = [], [], []
    for name, module in model.named_modules():
        if not name or _inside_adapter(name, existing):
            continue
        if exclude_modules is not None and _matches(name, exclude_modules):
            continue
        if all_linear:
            if (isinstance(module, nn.Linear) and name not in heads
                    and not isinstance(module, _UNWRAPPABLE_LINEARS)):
                found.append(name)
            continue
        if not _matches(name, target_modules):
            continue
        if isinstance(module, AdapterLinear):
            already.append(name)
        elif not isinstance(module, nn.Linear) or isinstance(module, _UNWRAPPABLE_LINEARS):
            not_linear.append(f"{name} ({type(module).__name__})")
        else:
            found.append(name)
    if already:
        raise ValueError(f"these modules already carry an adapter: {already}; unload() or "
                         "merge_and_unload() the model first")
    if not_linear:
        raise ValueError(
            "lorakit adapters wrap nn.Linear layers only, but target_modules also matched "
            f"{not_linear}; name the Linear layers themselves (for example 'q_proj')")
    if not found:
        linears = [n for n, m in model.named_modules()
                   if isinstance(m, nn.Linear) and not _inside_adapter(n, existing)]
        sample = ", ".join(linears[:8]) + (", ..." if len(linears) > 8 else "")
        raise ValueError(
            f"target_modules={target_modules!r} (exclude_modules={exclude_modules!r}) matched "
            f"no nn.Linear in this model. Linear layers it has: [{sample or 'none'}]")
    return found


# --------------------------------------------------------------------------------------------
# injection
# --------------------------------------------------------------------------------------------
def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _build_adapters(model: nn.Module, plan: Mapping[str, tuple[type, dict]],
                    meta: bool = False) -> dict[str, AdapterLinear]:
    """Construct one adapter per planned name without changing the model.

    meta=True builds them around shape-only stand-ins (on the meta device) to learn their
    parameter shapes; otherwise around the real layers (constructing freezes the base, so the
    base's requires_grad flags are restored if any construction fails).
    """
    built, flags = {}, {}
    try:
        for name, (cls, kwargs) in plan.items():
            base = model.get_submodule(name)
            if meta:
                base = nn.Linear(base.in_features, base.out_features,
                                 bias=base.bias is not None, device="meta")
            else:
                flags[name] = [p.requires_grad for p in base.parameters()]
            try:
                built[name] = cls(base, **kwargs)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"cannot build {cls.__name__}({kwargs}) on {name} "
                                 f"({base.in_features}->{base.out_features}): {exc}") from exc
            built[name]._lorakit_init_kwargs = dict(kwargs)   # for adapter_init_kwargs
    except Exception:
        for name, fl in flags.items():
            for p, f in zip(model.get_submodule(name).parameters(), fl, strict=True):
                p.requires_grad_(f)
        raise
    return built


def inject_adapters(model: nn.Module, adapter_cls: type = LoRALinear,
                    target_modules: str | Sequence[str] = ("q_proj", "v_proj"),
                    exclude_modules: str | Sequence[str] | None = None,
                    **adapter_kwargs) -> list[str]:
    """Replace the matching ``nn.Linear`` layers of ``model`` by ``adapter_cls(layer, **kwargs)``.

    Matching follows PEFT's ``target_modules`` (see ``find_target_modules``). All adapters are
    built before any is put in place, so a bad argument (a rank too large for one layer, say)
    leaves the model unchanged. Returns the replaced names.

        inject_adapters(model, LoRALinear, ["q_proj", "v_proj"], rank=8, alpha=16)
        inject_adapters(model, LoRALinear, r".*\\.mlp\\..*_proj", rank=4)
        inject_adapters(model, LoRALinear, "all-linear", exclude_modules=["gate"], rank=4)
    """
    if not (isinstance(adapter_cls, type) and issubclass(adapter_cls, AdapterLinear)):
        raise TypeError(f"adapter_cls must be a lorakit AdapterLinear subclass (LoRALinear, ...), "
                        f"got {adapter_cls!r}")
    names = find_target_modules(model, target_modules, exclude_modules)
    built = _build_adapters(model, {n: (adapter_cls, dict(adapter_kwargs)) for n in names})
    for name, adapter in built.items():
        _set_submodule(model, name, adapter)
    return names


# --------------------------------------------------------------------------------------------
# trainable parameters
# --------------------------------------------------------------------------------------------
def _adapter_param_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that belong to adapters (not to their base layers)."""
    out = set()
    for name, adapter in adapter_modules(model).items():
        prefix = name + "." if name else ""
        for pname, _ in adapter.named_parameters():
            if not pname.startswith("base_layer."):
                out.add(prefix + pname)
    return out


def _bias_param_names(model: nn.Module, bias: str) -> set[str]:
    if bias not in BIAS_MODES:
        raise ValueError(f"bias must be one of {BIAS_MODES}, got {bias!r}")
    if bias == "none":
        return set()
    if bias == "all":
        return {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias"}
    out = set()
    for name, adapter in adapter_modules(model).items():
        if adapter.base_layer.bias is not None:
            out.add((name + "." if name else "") + "base_layer.bias")
    return out


def mark_only_adapters_trainable(model: nn.Module, bias: str = "none") -> nn.Module:
    """Freeze everything but the adapters (loralib's ``mark_only_lora_as_trainable``).

    bias: "none" – biases frozen; "all" – every bias of the model trainable; "adapter_only" –
    the biases of the layers that carry an adapter trainable. Returns ``model``.
    """
    keep = _adapter_param_names(model) | _bias_param_names(model, bias)
    if not adapter_modules(model):
        raise ValueError("the model has no lorakit adapters; inject_adapters(...) first")
    for name, param in model.named_parameters():
        param.requires_grad_(name in keep)
    return model


def trainable_report(model: nn.Module) -> dict:
    """Parameter counts: {"trainable", "total", "trainable_percent", "per_adapter"}.

    Shared (tied) parameters are counted once. ``per_adapter`` maps each adapter's name to
    its trainable parameter count (for LoRA: rank * (in + out)).
    """
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    per_adapter = {name: sum(p.numel() for n, p in a.named_parameters()
                             if p.requires_grad and not n.startswith("base_layer."))
                   for name, a in adapter_modules(model).items()}
    percent = 100.0 * trainable / total if total else 0.0
    return {"trainable": trainable, "total": total, "trainable_percent": percent,
            "per_adapter": per_adapter}


def print_trainable_parameters(model: nn.Module) -> None:
    """Print the counts in PEFT's format."""
    r = trainable_report(model)
    print(f"trainable params: {r['trainable']:,d} || all params: {r['total']:,d} || "
          f"trainable%: {r['trainable_percent']:.4f}")


# --------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------
def _needs_p(adapter: AdapterLinear) -> bool:
    """A conditioned layer's merge takes a named argument, the condition vector p
    (``merge(self, p)``); the base class's pass-through ``merge(self, *args)`` does not count."""
    return any(prm.kind not in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD)
               for prm in inspect.signature(adapter.merge).parameters.values())


def _merge_all(adapters: Mapping[str, AdapterLinear], p) -> list[AdapterLinear]:
    """Merge every unmerged adapter; all or nothing (merged ones are unmerged on failure)."""
    conditioned = [n for n, a in adapters.items() if not a.merged and _needs_p(a)]
    if conditioned and p is None:
        raise ValueError(
            f"conditioned layers {conditioned[:4]}{' ...' if len(conditioned) > 4 else ''} can "
            "only be merged for one condition: pass p= (a vector of shape (cond_dim,))")
    done = []
    try:
        for a in adapters.values():
            if a.merged:
                continue
            if _needs_p(a):
                a.merge(p)
            else:
                a.merge()
            done.append(a)
    except Exception:
        for a in reversed(done):
            a.unmerge()
        raise
    return done


def merge_adapters(model: nn.Module, p: torch.Tensor | None = None) -> nn.Module:
    """Merge every adapter into its base weight (``layer.merge()``); conditioned layers need p.

    Layers that are already merged are left as they are. If one merge fails (NaN/Inf, say)
    the ones merged by this call are unmerged again and the error is raised.
    """
    adapters = adapter_modules(model)
    if not adapters:
        raise ValueError("the model has no lorakit adapters to merge")
    _merge_all(adapters, p)
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Undo ``merge_adapters``: unmerge every merged adapter."""
    adapters = adapter_modules(model)
    if not any(a.merged for a in adapters.values()):
        raise MergeStateError("no adapter in the model is merged; nothing to unmerge")
    for a in adapters.values():
        if a.merged:
            a.unmerge()
    return model


def merge_and_unload(model: nn.Module, p: torch.Tensor | None = None) -> nn.Module:
    """Replace every adapter by a plain ``nn.Linear`` holding the merged weight.

    The base layer is reused (merged in place), so no extra memory is needed; its parameters
    stay frozen as the adapter left them. Conditioned layers are merged for the one condition
    ``p``. An already merged adapter keeps what it merged. Returns ``model``.
    """
    adapters = adapter_modules(model)
    if not adapters:
        raise ValueError("the model has no lorakit adapters to merge")
    _merge_all(adapters, p)
    for name, adapter in adapters.items():
        if name == "":
            raise ValueError("the model itself is an adapter; call layer.to_linear() instead")
        _set_submodule(model, name, adapter.base_layer)
    return model


def unload(model: nn.Module) -> nn.Module:
    """Remove every adapter without merging: the model computes its base function again.

    Merged adapters are unmerged first. Returns ``model``.
    """
    adapters = adapter_modules(model)
    if not adapters:
        raise ValueError("the model has no lorakit adapters to unload")
    for name, adapter in adapters.items():
        if name == "":
            raise ValueError("the model itself is an adapter; use layer.base_layer instead")
        if adapter.merged:
            adapter.unmerge()
        _set_submodule(model, name, adapter.base_layer)
    return model


# --------------------------------------------------------------------------------------------
# adapter state: what an adapter is (class + init kwargs) and what it holds (tensors)
# --------------------------------------------------------------------------------------------
_SCALARS = (bool, int, float, str, type(None))
_MISSING = object()
# where an __init__ argument NAME is looked for on the layer: self.NAME, then these variants
# (LoRALinear keeps dropout's float as dropout_p; BilinearLoRALinear keeps gate as gate_form)
_ATTR_SUFFIXES = ("", "_p", "_form")


def adapter_init_kwargs(adapter: AdapterLinear) -> dict:
    """The ``__init__`` arguments (after base_layer) that rebuild ``adapter``, as JSON scalars.

    Read from ``adapter.adapter_init_kwargs()`` when the class defines it; else, per argument
    NAME, from the first scalar attribute among ``NAME``, ``NAME_p``, ``NAME_form``; else from
    the arguments ``inject_adapters``/``load_adapter`` built it with (or the default).
    """
    hook = getattr(type(adapter), "adapter_init_kwargs", None)
    if callable(hook):
        return dict(hook(adapter))
    recorded = getattr(adapter, "_lorakit_init_kwargs", None)
    params = list(inspect.signature(type(adapter).__init__).parameters.values())[2:]
    out = {}
    for prm in params:
        if prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD):
            continue
        for attr in (prm.name + suffix for suffix in _ATTR_SUFFIXES):
            value = getattr(adapter, attr, _MISSING)
            if value is not _MISSING and isinstance(value, _SCALARS):
                out[prm.name] = value
                break
        else:
            if recorded is not None and prm.name in recorded:
                out[prm.name] = recorded[prm.name]
            elif recorded is not None and prm.default is not prm.empty:
                out[prm.name] = prm.default
            else:
                raise TypeError(
                    f"cannot record {type(adapter).__name__}'s __init__ argument {prm.name!r}: "
                    f"store it as self.{prm.name} (a number/str/bool) or define "
                    "adapter_init_kwargs()")
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
    keep = _bias_param_names(model, bias)
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
    from . import __version__
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
    for name, adapter in _build_adapters(model, plan, meta=True).items():
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
            if not isinstance(module, nn.Linear) or _inside_adapter(name, existing):
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
        for name, adapter in _build_adapters(model, plan).items():
            _set_submodule(model, name, adapter)
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in tensors.items():
            state[key].copy_(value)
    return list(targets)
