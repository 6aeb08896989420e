"""Notebook 06's replication of seed 003's table, small scale: LoRA vs DoRA vs HyLoRADA.

    python -m lorakit.experiments.replication            # ~17 min on a busy 2-core CPU (load 8); less idle
    python -m lorakit.experiments.replication --quick    # a ~15 s version (notebook 06 runs it live)

The shipped TinyLM (``lorakit.lm.tinylm``) is adapted to the "adapt" domain of ``lorakit.lm.corpus``
(unit tests of the stdlib's Internet-data modules) with adapters on q, k, v and o of every block,
and evaluated by perplexity per byte on the held-out ``adapt/val`` files. Every method gets

* the SAME trainable-parameter budget. Per block, DoRA at r = 8 trains 8·896 + 384 = 7,552
  numbers (q, o: 128 -> 128; k, v: 128 -> 64, grouped-query attention like Qwen2.5); LoRA gets
  r = 8 on q and o and r = 9 on k and v: 8·512 + 9·384 = 7,552, exactly DoRA's budget. HyLoRADA
  adds 2 scalars per layer (+8 per block), v2 adds structure_dim = 32 per layer (+1.7 %).
  Scaling s = alpha / r = 2 everywhere (the seed's alpha_ratio 2).
* the SAME optimiser and schedule: AdamW (no weight decay), 10 % warm-up then cosine to lr/10,
  base lr 1e-3, with LoRA+ parameter groups (``lorakit.tuning.loraplus``; B at lr·10, the seed's
  lora_plus_ratio). LoRA is also run without LoRA+ (B at lr), and without LoRA+ at lr·10 (A and
  B both at 1e-2, B's LoRA+ rate): is LoRA+ more than a larger learning rate for B? (A 100-step
  look at lr in {1e-3, 3e-3, 1e-2}, one seed: the LoRA+ methods were best at 1e-3, LoRA without
  LoRA+ at 1e-2.)
* the SAME seeds (each sets the adapters' init and the batch order) and the same batches.

Methods: "LoRA", "LoRA, lr × 10", "LoRA + LoRA+", "DoRA", "HyLoRADA" (v1, the seed's defaults as lorakit
implements them: orthogonal A, gate logit 0, blend logit 0.1 so β = σ(0.1) ≈ 0.525, magnitude
starting at ‖W‖ — the seed's ones would not start at the pretrained model) and "HyLoRADA v2"
with a cheap code structure prior: the indentation depth of the current line (leading spaces
seen so far in the line, // 4, so it never looks ahead), one-hot in structure_dim = 32
dimensions, fixed (no encoder: notebook 07 builds the seed's StructureEncoder). With the one-hot
prior v2's factor is f = 0.5 + σ(w[depth]): one learned adaptation strength per depth. (Without
a prior v2 computes exactly v1; with w = 0 at init it starts as v1.)

Reported per method: trainable parameters, validation perplexity mean ± std (and min, max, the
values) over seeds, the median milliseconds per training step (forward + backward + step; this
machine is shared, so timings are indicative), the final training loss, the mean effective rank
of the learned s·BA over the adapted layers, and for HyLoRADA the learned gate γ and blend β.
Results go to ``lorakit/experiments/results/replication.json`` with the date, machine, seeds
and the whole configuration.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..layers import DoRALinear, HyLoRADALinear, HyLoRADAv2Linear, LoRALinear
from ..lm import corpus
from ..lm.finetune import train as train_lm_loop
from ..lm.tinylm import TinyLM, evaluate, lm_loss, load_pretrained
from ..notebook.analysis import effective_rank
from ..provenance import machine
from ..tuning import adapter_modules, inject_adapters, mark_only_adapters_trainable
from ..tuning.loraplus import loraplus_param_groups
from . import RESULTS

RANK = 8
ALPHA_RATIO = 2.0          # alpha = 2 r (the seed's alpha_ratio), so s = 2 for every layer
LORAPLUS_RATIO = 10.0      # the seed's lora_plus_ratio
STRUCTURE_DIM = 32

# name -> (adapter class, {target module: rank}, LoRA+?, structure prior?, lr multiplier)
_SQUARE, _GQA = ("q_proj", "o_proj"), ("k_proj", "v_proj")
_LORA_RANKS = {**dict.fromkeys(_SQUARE, RANK), **dict.fromkeys(_GQA, RANK + 1)}
_RANKS = dict.fromkeys(_SQUARE + _GQA, RANK)
METHODS: dict[str, tuple[type, dict[str, int], bool, bool, float]] = {
    "LoRA": (LoRALinear, _LORA_RANKS, False, False, 1.0),
    "LoRA, lr × 10": (LoRALinear, _LORA_RANKS, False, False, 10.0),
    "LoRA + LoRA+": (LoRALinear, _LORA_RANKS, True, False, 1.0),
    "DoRA": (DoRALinear, _RANKS, True, False, 1.0),
    "HyLoRADA": (HyLoRADALinear, _RANKS, True, False, 1.0),
    "HyLoRADA v2 (indent prior)": (HyLoRADAv2Linear, _RANKS, True, True, 1.0),
}

# Seed 003's own numbers, for the notebook's side-by-side table (Qwen2.5-0.5B, its setup unknown).
SEED_TABLE = {
    "benchmark": [  # "Benchmark Results" table
        {"method": "LoRA", "params": "540K", "ppl": 32.11, "lim_ppl": 25.58},
        {"method": "LoRaDA", "params": "1.0M", "ppl": 30.06, "lim_ppl": 24.24},
        {"method": "DoRA", "params": "1.1M", "ppl": 29.91, "lim_ppl": 24.24},
        {"method": "HyLoRADA", "params": "1.1M", "ppl": 29.24, "lim_ppl": 23.37},
    ],
    "evolution": [  # "Software Evolution" section, stage metrics
        {"method": "LoRA", "params": "540K", "ppl": 31.79},
        {"method": "DoRA", "params": "1.1M", "ppl": 30.42},
        {"method": "HyLoRADA", "params": "2.2M", "ppl": 27.01},
    ],
}


# --- the structure prior ----------------------------------------------------------------------

def indent_depth(tokens: torch.Tensor, max_depth: int = STRUCTURE_DIM - 1) -> torch.Tensor:
    """Per byte: the indentation depth of its line as known at that byte (never looking ahead).

    depth_t = min(t − line_start + 1, leading spaces of the line) // 4, capped at max_depth; the
    newline that ends a line belongs to that line. 1-D long tensor, same length as ``tokens``.
    """
    t = tokens.numpy()
    n = len(t)
    idx = np.arange(n)
    last_nl = np.maximum.accumulate(np.where(t == 10, idx, -1))      # last '\n' at or before i
    line_start = np.concatenate([[0], last_nl[:-1] + 1])
    nxt = np.where(t != 32, idx, n)                                    # next non-space at or after i
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    leading = nxt[line_start] - line_start
    depth = np.minimum(idx - line_start + 1, leading) // 4
    return torch.from_numpy(np.minimum(depth, max_depth)).long()


def one_hot_prior(depth: torch.Tensor, dim: int = STRUCTURE_DIM) -> torch.Tensor:
    """(B, T) depths -> (B, T, dim) one-hot structure prior."""
    return torch.nn.functional.one_hot(depth, dim).float()


class _Windows:
    """Random training windows (x, y[, depth]) drawn with one seeded generator."""

    def __init__(self, tokens: torch.Tensor, depth: torch.Tensor | None, batch_size: int,
                 context: int, seed: int) -> None:
        self.tokens, self.depth = tokens, depth
        self.batch_size, self.context = batch_size, context
        self.gen = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(context + 1)

    def next(self):
        starts = torch.randint(0, len(self.tokens) - self.context, (self.batch_size,), generator=self.gen)
        idx = starts[:, None] + self.offsets                          # (B, context + 1)
        w = self.tokens[idx]
        d = None if self.depth is None else self.depth[idx[:, :-1]]
        return w[:, :-1], w[:, 1:], d


# --- one run ----------------------------------------------------------------------------------

def build(method: str, seed: int, device=None) -> TinyLM:
    """The pretrained TinyLM with ``method``'s adapters (seeded init), only they train."""
    cls, ranks, _, prior, _ = METHODS[method]
    model = load_pretrained(device=device)
    kw = {"structure_dim": STRUCTURE_DIM} if prior else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for rank in sorted(set(ranks.values())):
            targets = [t for t, r in ranks.items() if r == rank]
            inject_adapters(model, cls, target_modules=targets, rank=rank, alpha=ALPHA_RATIO * rank, **kw)
    mark_only_adapters_trainable(model)
    return model


def _prior_context(prior: torch.Tensor | None):
    if prior is None:
        import contextlib
        return contextlib.nullcontext()
    from ..conditioning import structure_prior
    return structure_prior(prior)


@torch.no_grad()
def evaluate_with_prior(model: TinyLM, tokens: torch.Tensor, depth: torch.Tensor | None,
                        context: int, windows: int) -> float:
    """Perplexity per byte over ``windows`` windows spread over ``tokens`` (as tinylm.evaluate)."""
    if depth is None:
        return evaluate(model, tokens, context, max_windows=windows)["perplexity"]
    model.eval()
    n = (len(tokens) - 1) // context
    index = torch.linspace(0, n - 1, min(windows, n)).round().long() * context
    total, count = 0.0, 0
    for i in range(0, len(index), 32):
        idx = index[i:i + 32, None] + torch.arange(context + 1)
        w = tokens[idx]
        with _prior_context(one_hot_prior(depth[idx[:, :-1]])):
            logits = model(w[:, :-1])
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                   w[:, 1:].reshape(-1), reduction="sum").item()
        count += w[:, 1:].numel()
    return math.exp(total / count)


def run(method: str, seed: int, *, train: torch.Tensor, val: torch.Tensor,
        train_depth: torch.Tensor | None, val_depth: torch.Tensor | None, steps: int,
        batch_size: int, context: int, lr: float, eval_windows: int) -> dict:
    """Train one method with one seed; return a JSON-ready record."""
    t0 = time.time()
    _, _, loraplus, prior, lr_mult = METHODS[method]
    model = build(method, seed)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    groups = loraplus_param_groups(model, lr=lr * lr_mult, ratio=LORAPLUS_RATIO if loraplus else 1.0)
    batches = _Windows(train, train_depth if prior else None, batch_size, context, seed)

    def loss_fn(model, x, y, d):
        with _prior_context(None if d is None else one_hot_prior(d)):
            return lm_loss(model, x, y)

    times: list[float] = []
    losses = train_lm_loop(model, batches.next, loss_fn, steps, lr, groups=groups, step_times=times)
    ppl = evaluate_with_prior(model, val, val_depth if prior else None, context, eval_windows)
    adapters = adapter_modules(model)
    ranks = [effective_rank(a.scaling * (a.lora_B @ a.lora_A).detach()) for a in adapters.values()]
    record = {"method": method, "seed": seed, "trainable": n_train, "val_ppl": ppl,
              "final_train_loss": statistics.fmean(losses[-max(1, steps // 10):]),
              "ms_per_step": 1e3 * statistics.median(times[1:] or times),
              "effective_rank_BA": statistics.fmean(ranks),
              "seconds": round(time.time() - t0, 2)}
    hy = [a for a in adapters.values() if isinstance(a, HyLoRADALinear)]
    if hy:
        record["gate_mean"] = statistics.fmean(a.gate().item() for a in hy)
        record["blend_mean"] = statistics.fmean(a.blend().item() for a in hy)
    return record


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3, help="base learning rate (A, m, gates; B gets lr·10 with LoRA+)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-windows", type=int, default=256)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="a ~15 s run: 24 steps of 4 x 64 bytes, one seed, 16 eval windows")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file to write (default: results/replication.json; with --quick: nothing)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.context = 24, 4, 64
        args.seeds, args.eval_windows = args.seeds[:1], 16
    out = args.out if args.out is not None else (None if args.quick else RESULTS / "replication.json")
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    torch.set_num_threads(args.threads)
    t0 = time.time()
    load0 = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    train, val = corpus.load_tokens("adapt", "train"), corpus.load_tokens("adapt", "val")
    train_depth, val_depth = indent_depth(train), indent_depth(val)
    base_ppl = evaluate(load_pretrained(), val, args.context, max_windows=args.eval_windows)["perplexity"]
    say(f"pretrained TinyLM, adapt/val perplexity {base_ppl:.3f}")

    rows = []
    for method in args.methods:
        runs = [run(method, seed, train=train, val=val, train_depth=train_depth, val_depth=val_depth,
                    steps=args.steps, batch_size=args.batch_size, context=args.context, lr=args.lr,
                    eval_windows=args.eval_windows) for seed in args.seeds]
        row = {"method": method, "adapter": METHODS[method][0].__name__,
               "ranks": METHODS[method][1], "loraplus_ratio": LORAPLUS_RATIO if METHODS[method][2] else 1.0,
               "structure_prior": "indentation depth, one-hot" if METHODS[method][3] else None,
               "lr": args.lr * METHODS[method][4],
               "trainable": runs[0]["trainable"],
               "val_ppl": summary([r["val_ppl"] for r in runs]),
               "final_train_loss": summary([r["final_train_loss"] for r in runs]),
               "ms_per_step": statistics.median(r["ms_per_step"] for r in runs),
               "effective_rank_BA": statistics.fmean(r["effective_rank_BA"] for r in runs),
               "seconds_per_run": statistics.fmean(r["seconds"] for r in runs)}
        for key in ("gate_mean", "blend_mean"):
            if key in runs[0]:
                row[key] = statistics.fmean(r[key] for r in runs)
        rows.append(row)
        say(f"{method:28s} trainable {row['trainable']:6,d}  val ppl {row['val_ppl']['mean']:.4f} ± "
            f"{row['val_ppl']['std']:.4f}  {row['ms_per_step']:.0f} ms/step  {time.time() - t0:.0f} s")

    result = {
        "experiment": "seed 003's LoRA / DoRA / HyLoRADA table at small scale (notebook 06)",
        "command": " ".join(["python -m lorakit.experiments.replication",
                             *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "seeds": args.seeds,
        "config": {"model": "shipped TinyLM (lorakit/lm/assets/tinylm.json), frozen",
                   "targets": "q_proj, k_proj, v_proj, o_proj of all 4 blocks (16 layers)",
                   "rank": RANK, "alpha": "2 x rank (s = 2)", "loraplus_ratio": LORAPLUS_RATIO,
                   "structure_dim": STRUCTURE_DIM, "steps": args.steps, "batch_size": args.batch_size,
                   "context": args.context, "lr": args.lr,
                   "optimizer": "AdamW, no weight decay, LoRA+ groups (lorakit.tuning.loraplus), "
                                "10% warm-up then cosine to lr/10 for every group",
                   "train": "adapt/train (lorakit.lm.corpus), random windows, same batches for every method",
                   "eval": f"{args.eval_windows} windows of {args.context} bytes spread over adapt/val; "
                           "perplexity per byte",
                   "hylorada": "lorakit defaults: orthogonal A, m = m_init = ||W||_row, gate logit 0, "
                               "blend logit 0.1 (beta = 0.525)"},
        "baseline_val_ppl": base_ppl,
        "rows": rows,
        "wall_time_s": round(time.time() - t0, 1),
        # ms/step depends on what else runs: the 1-minute load average at the start and the end
        "load_average": [load0, round(os.getloadavg()[0], 2)] if hasattr(os, "getloadavg") else None,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        say(f"wrote {out} ({result['wall_time_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
