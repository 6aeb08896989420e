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
shape, so nn.Linear or nn.Parameter adapters, either orientation, all pass. The dropout check
judges the layer against itself (the same layer with dropout=0, and with its adapter switched
off), so a bug of the formula costs the formula's points, not the dropout's. Concept keys:
``practice.<concept>`` here, ``lora.<concept>`` for the shared layer checks.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from . import _probe, lora
from ._common import copy_trainable, keyed, max_diff, rekey
from ._probe import call, close, fail, make_base, randn, randomize_adapters, seeded, trainable

build = rekey("practice.construct", _probe.build)
forward = rekey("practice.forward_crash", _probe.forward)
find_base = rekey("practice.base_layer", _probe.find_base)

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
    from ..lm.tinylm import TinyLM, TinyLMConfig

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
    ("GPT-2-like", ["attn.c_proj", "c_proj"], 2),   # attn.c_proj matches both: one adapter
    ("TinyLM", ["q_proj", "q_proj"], 3),            # a repeated target: one adapter per layer
    ("GPT-2-like", ["wte"], 4),                     # an nn.Embedding gets no (LoRALinear) adapter: 0
    ("TinyLM", ["embed_tokens", "q_proj"], 2),      # the Embedding adds nothing, q_proj still counts
    ("GPT-2-like", ["attn", "c_fc"], 3),            # a container adds nothing, c_fc still counts
]


def _linear_matches(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """The names of the nn.Linear layers LoRA adapts (what inject_adapters replaces when it is
    given exactly those names)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, targets)]


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
    last_part = [m for n, m in linears if n.rsplit(".", 1)[-1] in targets]
    if any("." in t for t in targets):
        guesses.append((sum(rank * (m.in_features + m.out_features) for m in last_part),
                        "It compares only the last part of each module's name with the targets, "
                        "but a target may have several parts ('attn.c_proj'): PEFT's rule is "
                        "that the full name equals the target or ends with '.' + target."))
    non_linear = [m for m in any_kind if not isinstance(m, nn.Linear)]
    if any_kind and not matched:
        guesses.insert(0, (sum(sum(p.numel() for p in m.parameters()) for m in any_kind),
                           "Only nn.Linear layers get an adapter: a matching container module "
                           "(a block, an attention module) adds nothing by itself."))
    embeddings = [m for m in non_linear if isinstance(m, nn.Embedding)]
    if embeddings:
        guesses.insert(0, (reference_count(model, targets, rank) + sum(
            rank * (m.num_embeddings + m.embedding_dim) for m in embeddings),
            "It counts the matching nn.Embedding as r * (rows + cols): only nn.Linear layers get "
            "a (LoRALinear) adapter here, so an embedding adds nothing."))
    if non_linear and matched:
        guesses.insert(0, (0, "It is 0, although the targets also match nn.Linear layers: a "
                              "target that names a module which is not an nn.Linear (an "
                              "embedding, a block) must be skipped, not turn the whole count into "
                              "0. Was an exception caught and 0 returned?"))
    per_target = sum(rank * (m.in_features + m.out_features)
                     for t in targets for n, m in linears if _matches(n, [t]))
    guesses.insert(0, (per_target,
                       "It counts a layer once per target that matches it: a layer two targets "
                       "match (or a target listed twice) still gets one adapter. Collect the "
                       "matching layers first (a set of names), then count each once."))
    for value, why in guesses:
        if value != reference_count(model, targets, rank) and got == value:
            return why
    return "Count r * (in_features + out_features) for every matching nn.Linear."


@keyed("practice.count")
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
                 "shapes, do not inject adapters.", f"{what} changed the model.",
                 key="practice.count_leaves_model")
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)) or got != int(got):
            fail("count_lora_params must return a whole number (an int).",
                 f"{what} returned {got!r}", key="practice.count_type")
        if int(got) != want:
            fail(f"Wrong LoRA parameter count for {what}: expected {want:,}, got {int(got):,}.",
                 _count_diagnosis(model, targets, rank, int(got)), key="practice.count")


# --- FixedLoRALinear -------------------------------------------------------------------------------

IN, OUT, RANK = lora.IN, lora.OUT, lora.RANK


@keyed("practice.adds_base")
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
             "pretrained layer, not a layer that outputs zeros.", key="practice.adds_base")


@keyed("practice.rank_validation")
def check_rank_validation(cls: type) -> None:
    """rank < 1 is refused with a ValueError (the seed returned zeros_like(x) for r = 0); rank 1,
    the smallest valid rank, is accepted."""
    for rank in (0, -2):
        base = make_base(IN, OUT, seed=20)
        try:
            with seeded(0):
                layer = cls(base, rank=rank, alpha=1)
        except ValueError:
            continue
        except Exception as e:
            fail(f"FixedLoRALinear(base, rank={rank}) must raise a ValueError that says the rank "
                 f"must be at least 1; it raised {type(e).__name__}: {e}",
                 "An assert is not input validation: it raises AssertionError, and python -O "
                 "removes it." if isinstance(e, AssertionError) else "",
                 key="practice.rank_validation")
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
             "a LoRA layer without an adapter is just its base layer.", detail,
             key="practice.rank_validation")
    base = make_base(IN, OUT, seed=20)
    try:
        with seeded(0):
            layer = cls(base, rank=1, alpha=1)
    except Exception as e:
        fail("rank = 1 is the smallest valid rank: only a rank below 1 is refused.",
             f"FixedLoRALinear(base, rank=1) raised {type(e).__name__}: {e}",
             key="practice.rank_validation")
    y = forward(layer, randn(5, IN, seed=21), IN, OUT)
    if tuple(y.shape) != (5, OUT):
        fail("rank = 1 is a valid rank: the layer must work with it.",
             f"forward on x of shape (5, {IN}) returned shape {tuple(y.shape)}, not (5, {OUT})",
             key="practice.rank_validation")


# --- dropout: judged against the same layer with dropout=0 and with its adapter off -------------

DROPOUT = 0.25         # keep 3/4 of the inputs, scaled by 1/(1 - p) = 4/3
DROP_RATE_TOL = 0.10   # the observed share of dropped inputs (fixed seed) must be within p ± this
_REPEATS = 8           # each input feature is probed in 2 * _REPEATS rows (384 in all)


def _two_hot(in_f: int, repeats: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows e_i + e_j (j = i + 7 mod in): each row probes two input features. Returns the rows
    (N, in) and the features of each row (N, 2)."""
    pairs = torch.tensor([[i, (i + 7) % in_f] for i in range(in_f)] * repeats)
    X = torch.zeros(len(pairs), in_f)
    X[torch.arange(len(pairs))[:, None], pairs] = 1.0
    return X, pairs


@keyed("practice.dropout")
def check_dropout(cls: type) -> None:
    """Dropout acts on the adapter's input only: eval mode is deterministic and equals the same
    layer with dropout=0; with the adapter off, train mode equals eval mode (the base path is
    untouched); in train mode each input feature of the adapter is either zeroed or scaled by
    1/(1 - p) — exactly, so the mean is preserved — about a share p of them zeroed.

    Probed with rows e_i + e_j: the layer's train-mode output minus its output with the adapter
    off is read as c_i u_i + c_j u_j (u_k: feature k's contribution to the eval-mode update), and
    every c must be 0 (dropped) or 1/(1 - p) (kept)."""
    p, alpha = DROPOUT, 2.0

    def make(dropout: float) -> nn.Module:
        layer = build(cls, make_base(IN, OUT, seed=22), seed=22, rank=RANK, alpha=alpha,
                      dropout=dropout)
        randomize_adapters(layer, seed=25)
        return layer

    layer, plain, off = make(p), make(0.0), make(p)
    copy_trainable(layer, plain)
    with torch.no_grad():
        for _, q in trainable(off):
            q.zero_()
    X, pairs = _two_hot(IN, _REPEATS)
    eye = torch.eye(IN)

    def run(m: nn.Module, x: torch.Tensor, train: bool, seed: int) -> torch.Tensor:
        m.train(train)
        with seeded(seed), torch.no_grad():
            return forward(m, x, IN, OUT)

    # eval mode: deterministic, and the layer with dropout=0
    e1, e2 = run(layer, X, False, 1), run(layer, X, False, 2)
    if not close(e1, e2):
        fail("In eval mode dropout must be off: two eval-mode calls on the same x differ.",
             f"largest difference {max_diff(e1, e2)}. Apply dropout only when self.training is "
             "True (nn.Dropout does that for you, F.dropout needs training=self.training).",
             key="practice.dropout_eval")
    plain_eval, plain_train = run(plain, X, False, 3), run(plain, X, True, 3)
    if not close(plain_train, plain_eval):
        fail("With dropout=0 nothing may be dropped: train mode must equal eval mode.",
             f"largest difference {max_diff(plain_train, plain_eval)}", key="practice.dropout_eval")
    if not close(e1, plain_eval):
        fail(f"In eval mode a layer built with dropout={p} must compute what the same layer "
             "with dropout=0 (and the same parameters) computes.",
             f"largest difference {max_diff(e1, plain_eval)}. Is the kept part rescaled in eval "
             "mode too (inverted dropout rescales in train mode only)?", key="practice.dropout_eval")

    # the base path: with the adapter switched off, dropout changes nothing
    k_train, k_eval = run(off, X, True, 4), run(off, X, False, 4)
    if not close(k_train, k_eval):
        fail("Dropout must act on the adapter's input only, never on the base layer's path: with "
             "the adapter switched off (all adapter parameters zero) the layer must compute the "
             "same in train mode as in eval mode.",
             f"largest difference in train mode: {max_diff(k_train, k_eval)}. base_layer(x) "
             "gets the clean x; only B A gets dropout(x).", key="practice.dropout_base")

    # train mode: read off which input features were kept, and how they were scaled
    u = run(layer, eye, False, 5) - run(off, eye, False, 5)          # (in, out): u_k
    if not close(e1 - k_eval, u[pairs[:, 0]] + u[pairs[:, 1]]):
        return  # the update is not linear in x: check_update charges that
    d = (run(layer, X, True, 24) - k_eval).double()                   # (N, out)
    U = torch.stack([u[pairs[:, 0]], u[pairs[:, 1]]], dim=-1).double()  # (N, out, 2)
    c = torch.linalg.lstsq(U, d[..., None]).solution[..., 0]           # (N, 2)
    resid = (U @ c[..., None])[..., 0] - d
    scale = U.norm(dim=(1, 2)).clamp_min(1e-12)
    if (resid.norm(dim=1) / scale).max().item() > 1e-4:
        y_update = d.float()
        on_update = all(close(v, torch.zeros_like(v)) or close(v, w / (1 - p))
                        for row, w in zip(y_update, (e1 - k_eval), strict=False)
                        for v, w in zip(row, w, strict=False))
        fail("Dropout must act on the adapter's input x — each input feature kept (and scaled "
             "by 1/(1 - p)) or zeroed — before A: in train mode your update is not B A applied "
             "to such a dropped-out x.",
             ("Each output feature of the update is either zeroed or scaled by 1/(1 - p): the "
              "dropout is applied after B, to the update's output." if on_update else
              "Is it applied after A, to the r rank features, or to the update's output?")
             + " It belongs on x: B(A(dropout(x))).", key="practice.dropout_place")
    dropped = c.abs() < 1e-3
    kept = c[~dropped]
    if not dropped.any():
        fail(f"With dropout={p} in train mode some of the adapter's inputs must be dropped: none "
             f"of the {c.numel()} probed input features was.",
             "Is the dropout module created but never applied, or applied only in eval mode?",
             key="practice.dropout_train")
    want = 1 / (1 - p)
    if not torch.allclose(kept, torch.full_like(kept, want), rtol=1e-3, atol=1e-4):
        mean = kept.mean().item()
        why = ("They are not rescaled at all: without the 1/(1 - p) the adapter sees inputs "
               f"only {1 - p:g} times as large on average in training as in eval mode, so what it "
               "learns is applied too strongly at inference." if abs(mean - 1) < 1e-3 else
               f"They are multiplied by {mean:.4g} on average (from {kept.min().item():.4g} to "
               f"{kept.max().item():.4g}).")
        fail(f"Dropout must preserve the mean: the kept inputs are scaled by 1/(1 - p) = "
             f"{want:.4g} (inverted dropout, as nn.Dropout does).", why,
             key="practice.dropout_rescale")
    rate = dropped.double().mean().item()
    if abs(rate - p) > DROP_RATE_TOL:
        fail(f"With dropout={p} about a share {p} of the inputs must be dropped.",
             f"{rate:.0%} of {c.numel()} probed input features were dropped (fixed seed; "
             f"allowed {p - DROP_RATE_TOL:.0%} to {p + DROP_RATE_TOL:.0%}). Is p the share dropped "
             "(not kept)?", key="practice.dropout_rate")
    if not (dropped.sum(dim=1) == 1).any():
        fail("Dropout must drop input features independently, not whole rows (tokens).",
             f"In all {len(c)} rows probing two features, both were kept or both dropped.",
             key="practice.dropout_place")


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
