"""Put adapters into a model and train only them (PEFT's ``target_modules``, loralib's
``mark_only_lora_as_trainable``).

    names = inject_adapters(model, LoRALinear, target_modules=["q_proj", "v_proj"], rank=8, alpha=16)
    mark_only_adapters_trainable(model)          # base frozen, adapters trainable
    print_trainable_parameters(model)            # trainable params: ... || all params: ... || trainable%: ...

Works with any ``AdapterLinear`` subclass. Merging is in ``merge.py``, saving and loading in
``checkpoint.py``; see ARCHITECTURE.md for who may import whom.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from torch import nn

from ..layers.base import AdapterLinear
from ..layers.lora import LoRALinear

__all__ = ["ALL_LINEAR", "BIAS_MODES", "adapter_modules", "bias_param_names", "build_adapters",
           "find_target_modules", "inject_adapters", "inside_adapter", "mark_only_adapters_trainable",
           "print_trainable_parameters", "set_submodule", "trainable_report"]

ALL_LINEAR = "all-linear"
BIAS_MODES = ("none", "all", "adapter_only")
# nn.MultiheadAttention reads out_proj.weight directly instead of calling out_proj(x), so
# wrapping it would silently do nothing.
_UNWRAPPABLE_LINEARS = (nn.modules.linear.NonDynamicallyQuantizableLinear,)


# --------------------------------------------------------------------------------------------
# finding modules
# --------------------------------------------------------------------------------------------
def adapter_modules(model: nn.Module) -> dict[str, AdapterLinear]:
    """{dotted name: adapter} for every lorakit adapter in ``model`` (in module order)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLinear)}


def inside_adapter(name: str, adapters: Iterable[str]) -> bool:
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
        if not name or inside_adapter(name, existing):
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
                   if isinstance(m, nn.Linear) and not inside_adapter(n, existing)]
        sample = ", ".join(linears[:8]) + (", ..." if len(linears) > 8 else "")
        raise ValueError(
            f"target_modules={target_modules!r} (exclude_modules={exclude_modules!r}) matched "
            f"no nn.Linear in this model. Linear layers it has: [{sample or 'none'}]")
    return found


# --------------------------------------------------------------------------------------------
# injection
# --------------------------------------------------------------------------------------------
def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def build_adapters(model: nn.Module, plan: Mapping[str, tuple[type, dict]],
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
    built = build_adapters(model, {n: (adapter_cls, dict(adapter_kwargs)) for n in names})
    for name, adapter in built.items():
        set_submodule(model, name, adapter)
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


def bias_param_names(model: nn.Module, bias: str) -> set[str]:
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
    keep = _adapter_param_names(model) | bias_param_names(model, bias)
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
