"""Behavioural checks for notebook 02 (LoRA in practice).

Contracts (the notebook's first cell states them to students):

- ``count_lora_params(model, target_modules, rank) -> int``: the number of trainable parameters
  LoRA of rank ``rank`` adds when it adapts every ``nn.Linear`` of ``model`` whose dotted name
  equals one of ``target_modules`` or ends with ``"." + target`` (PEFT's rule for a list of
  names); 0 when nothing matches. Nothing is injected: the model is left unchanged.
- ``FixedLoRALinear(base_layer, rank=4, alpha=1, dropout=0.0)``: seed 002's ``LoRALinear``,
  repaired. Keeps ``self.base_layer`` (frozen) and ``self.scaling = alpha / rank``;
  ``forward(x)`` returns base(x) + scaling * B A dropout(x) for x of shape (..., in_features);
  a rank below 1 is refused with a ValueError.

The layer checks reuse notebook 01's (``lorakit.checks.lora``): adapter matrices are found by
shape, so nn.Linear or nn.Parameter adapters, either orientation, all pass.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from . import _probe, lora
from ._probe import (build, call, close, fail, find_base, forward, make_base, randn,
                     randomize_adapters, seeded)

# --- count_lora_params ---------------------------------------------------------------------------


class _GPT2Block(nn.Module):
    """GPT-2's names: attn.c_attn (d -> 3d), attn.c_proj (d -> d), mlp.c_fc (d -> 4d), mlp.c_proj (4d -> d)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(d, 3 * d)
        self.attn.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(d, 4 * d)
        self.mlp.c_proj = nn.Linear(4 * d, d)


class _GPT2Like(nn.Module):
    """A shape-only stand-in with GPT-2's module names (never run, only counted)."""

    def __init__(self, d: int = 24, n_layers: int = 2, vocab: int = 50) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.h = nn.ModuleList(_GPT2Block(d) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)


def probe_models() -> dict[str, nn.Module]:
    """The models the count is checked on: TinyLM's architecture (GQA: k/v narrower than q) and a
    GPT-2-like model whose attention and MLP both own a ``c_proj``."""
    from ..tinylm import TinyLM, TinyLMConfig

    with seeded(0):
        return {"TinyLM": TinyLM(TinyLMConfig(context=16)), "GPT-2-like": _GPT2Like()}


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def reference_count(model: nn.Module, target_modules: Sequence[str], rank: int) -> int:
    """rank * (in + out), summed over the matching nn.Linear layers."""
    return sum(rank * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and _matches(n, target_modules))


COUNT_CASES = [  # (model, targets, rank)
    ("TinyLM", ["q_proj", "v_proj"], 8),
    ("TinyLM", ["q_proj", "k_proj", "v_proj", "o_proj"], 4),
    ("TinyLM", ["gate_proj", "up_proj", "down_proj"], 2),
    ("TinyLM", ["k_proj"], 16),
    ("GPT-2-like", ["c_attn"], 4),
    ("GPT-2-like", ["attn.c_proj"], 3),
    ("GPT-2-like", ["c_proj"], 3),
    ("GPT-2-like", ["c_fc", "c_proj"], 2),
    ("GPT-2-like", ["proj"], 2),       # no module is *named* proj: 0
    ("GPT-2-like", ["attn"], 2),       # attn is a container, not an nn.Linear: 0
    ("TinyLM", ["lm_head"], 4),
]


def _count_diagnosis(model: nn.Module, targets: Sequence[str], rank: int, got) -> str:
    """Name the mistake when the count matches a common wrong formula."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    matched = [m for n, m in linears if _matches(n, targets)]
    sub = [m for n, m in linears if any(t in n for t in targets)]
    any_kind = [m for n, m in model.named_modules() if _matches(n, targets) and n]
    d = max((m.in_features for m in matched), default=0)
    guesses = [
        (sum(rank * (m.in_features + m.out_features) for m in sub),
         "It equals the count for every Linear whose name merely *contains* a target. PEFT's "
         "rule: the name equals the target or ends with '.' + target, so 'proj' matches no "
         "'q_proj' and 'attn.c_proj' matches no 'mlp.c_proj'."),
        (sum(2 * rank * m.in_features for m in matched),
         "It equals 2 * r * in_features per layer: that assumes square projections. With "
         "grouped-query attention k_proj/v_proj are narrower (out < in), and MLP layers are "
         "rectangular: count r * (in + out) for each layer."),
        (sum(2 * rank * m.out_features for m in matched),
         "It equals 2 * r * out_features per layer: that assumes square projections. Count "
         "r * (in + out) for each layer."),
        (sum(2 * rank * d for _ in matched),
         "It counts every matched layer as d_model x d_model (the seed's 8 r d_model formula): "
         "use each layer's own in_features and out_features."),
        (sum(m.in_features * m.out_features for m in matched),
         "It equals in * out per layer: that is full fine-tuning of those weights, not LoRA."),
        (sum(rank * (m.in_features + m.out_features) + (m.out_features if m.bias is not None else 0)
             for m in matched),
         "It also counts the layers' biases: LoRA trains only A (r x in) and B (out x r)."),
        (sum(rank * m.in_features for m in matched),
         "It counts only A (r x in): B (out x r) trains too."),
        (sum(rank * m.out_features for m in matched),
         "It counts only B (out x r): A (r x in) trains too."),
        (len(matched) * rank * 2,
         "It counts 2 r numbers per layer: A is r x in and B is out x r."),
    ]
    if any_kind and not matched:
        guesses.insert(0, (sum(sum(p.numel() for p in m.parameters()) for m in any_kind),
                           "Only nn.Linear layers get an adapter: a matching container module "
                           "(a block, an attention module) adds nothing by itself."))
    for value, why in guesses:
        if value != reference_count(model, targets, rank) and got == value:
            return why
    return "Count r * (in_features + out_features) for every matching nn.Linear."


def check_count_params(fn: Callable) -> None:
    """count_lora_params(model, targets, rank) agrees with what injecting LoRA would train."""
    models = probe_models()
    for model_name, targets, rank in COUNT_CASES:
        model = models[model_name]
        before = {k: v.clone() for k, v in model.state_dict().items()}
        modules_before = [n for n, _ in model.named_modules()]
        what = f"count_lora_params({model_name}, {targets}, rank={rank})"
        got = call(fn, model, list(targets), rank, what=what)
        want = reference_count(model, targets, rank)
        if [n for n, _ in model.named_modules()] != modules_before or any(
                not torch.equal(before[k], v) for k, v in model.state_dict().items()):
            fail("count_lora_params must leave the model unchanged: count from the layers' "
                 "shapes, do not inject adapters.", f"{what} changed the model.")
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)) or got != int(got):
            fail("count_lora_params must return a whole number (an int).",
                 f"{what} returned {got!r}")
        if int(got) != want:
            fail(f"Wrong LoRA parameter count for {what}: expected {want:,}, got {int(got):,}.",
                 _count_diagnosis(model, targets, rank, int(got)))


# --- FixedLoRALinear -------------------------------------------------------------------------------

IN, OUT, RANK = lora.IN, lora.OUT, lora.RANK


def check_adds_base(cls: type) -> None:
    """forward returns base(x) + update, not the update alone (seed 002's LoRALinear)."""
    base = make_base(IN, OUT, seed=27)
    layer = build(cls, base, seed=27, rank=RANK, alpha=2.0)
    base = find_base(layer)
    randomize_adapters(layer, seed=28)
    factors = lora.find_factors(layer, IN, OUT, RANK)
    layer.eval()
    x = randn(5, IN, seed=29)
    y = forward(layer, x, IN, OUT)
    with torch.no_grad():
        update = 2.0 / RANK * (x @ factors.A.T) @ factors.B.T
    if close(y, update):
        fail("Your forward returns only the adapter's update, as seed 002's LoRALinear does: a LoRA "
             "layer computes base_layer(x) + scaling * B A x, so that at init (B = 0) it is the "
             "pretrained layer, not a layer that outputs zeros.")


def check_rank_validation(cls: type) -> None:
    """rank < 1 is refused with a ValueError (the seed returned zeros_like(x) for r = 0)."""
    for rank in (0, -2):
        base = make_base(IN, OUT, seed=20)
        try:
            with seeded(0):
                layer = cls(base, rank=rank, alpha=1)
        except ValueError:
            continue
        except Exception as e:
            fail(f"FixedLoRALinear(base, rank={rank}) must raise a ValueError that says the rank "
                 f"must be at least 1; it raised {type(e).__name__}: {e}")
        detail = ""
        try:
            y = layer(randn(5, IN, seed=21))
            detail = f"it was built, and forward returned shape {tuple(y.shape)}"
            if tuple(y.shape) == (5, IN):
                detail += (f" — the shape of x, not (5, {OUT}): zeros_like(x) is wrong whenever "
                           "in_features != out_features")
        except Exception as e:
            detail = f"it was built, and forward raised {type(e).__name__}: {e}"
        fail(f"A rank of {rank} must be refused early with a ValueError (bad input fails loudly); "
             "a LoRA layer without an adapter is just its base layer.", detail)


def check_dropout(cls: type) -> None:
    """Dropout acts on the adapter path only: off in eval mode, never on base(x)."""
    base = make_base(IN, OUT, seed=22)
    layer = build(cls, base, seed=22, rank=RANK, alpha=2.0, dropout=0.5)
    base = find_base(layer)
    x = randn(4, 6, IN, seed=23)
    with torch.no_grad():
        want_base = base(x)
    layer.train()
    with seeded(24):
        y = forward(layer, x, IN, OUT)
    if tuple(y.shape) != tuple(want_base.shape):
        fail("With dropout the output shape must still be (..., out_features).",
             f"got {tuple(y.shape)} for x of shape {tuple(x.shape)}")
    if not close(y, want_base, rtol=0, atol=1e-6):
        fail("Dropout must act on the adapter's input only, never on the base layer's output: "
             "at init (B = 0) the layer must equal its base even in train mode.",
             f"largest difference from base(x) in train mode: {(y - want_base).abs().max().item():.3g}")
    randomize_adapters(layer, seed=25)
    factors = lora.find_factors(layer, IN, OUT, RANK)
    layer.eval()
    y_eval = forward(layer, x, IN, OUT)
    with torch.no_grad():
        want = want_base + 2.0 / RANK * (x @ factors.A.T) @ factors.B.T
    if not close(y_eval, want):
        fail("In eval mode dropout is off: the layer must compute base(x) + (alpha/r) B A x exactly.",
             f"largest difference: {(y_eval - want).abs().max().item():.3g}")
    layer.train()
    with seeded(26):
        y_train = forward(layer, x, IN, OUT)
    if close(y_train, want):
        fail("With dropout=0.5 in train mode the adapter's input must be dropped out (the seed's "
             "lora_dropout): the output equals the eval-mode output.")


LAYER_CHECKS: dict[str, Callable] = {
    "adds base": check_adds_base,
    "shapes": lora.check_shapes,
    "frozen": lora.check_frozen,
    "identity at init": lora.check_identity_at_init,
    "update": lora.check_update,
    "scaling": lora.check_scaling,
    "gradients": lora.check_gradients,
    "rank validation": check_rank_validation,
    "dropout": check_dropout,
}


def report(cls: type | None = None, count_fn: Callable | None = None,
           verbose: bool = True) -> dict[str, str | None]:
    """Run the checks for whatever is given; print a table; never raises.

    Returns {check name: None if passed, else the failure message}.
    """
    checks: dict[str, Callable] = {}
    if count_fn is not None:
        checks["count"] = lambda _: check_count_params(count_fn)
    if cls is not None:
        checks.update(LAYER_CHECKS)
    return _probe.run_checks(checks, cls, verbose)
