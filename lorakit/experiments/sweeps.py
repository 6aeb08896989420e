"""Notebook 02's sweeps at full size: LoRA on the shipped TinyLM, adapted to the "adapt" domain.

    python -m lorakit.experiments.sweeps                  # about 20-30 min on 2 CPU cores
    python -m lorakit.experiments.sweeps --quick          # a 1-minute smoke run (not saved by default)

Three experiments, every configuration trained from the same pretrained weights with several
seeds (the seed sets the adapters' init and the batch order):

- targets: q/v only, all attention projections, all linear layers (r = 8, alpha = 16);
- rank:    r in {1, 2, 4, 8, 16, 32} on the attention projections, alpha = 2r (seed 002's "typical");
- alpha:   alpha = r, 2r, sqrt(r), 16 (seed 002's four strategies) at r in {2, 8, 32}.

Reported per configuration: trainable parameters, and mean, standard deviation, min and max over
seeds of the perplexity on held-out adapt-domain files (the target) and on held-out
pretrain-domain files (what the model forgets). Results go to
``lorakit/experiments/results/sweeps.json`` with the date, the machine and the seeds.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from ..lm import corpus
from ..lm.finetune import ATTENTION, TARGETS, run
from ..lm.tinylm import evaluate, load_pretrained
from ..provenance import machine
from . import RESULTS

RANKS = (1, 2, 4, 8, 16, 32)
ALPHA_RANKS = (2, 8, 32)
ALPHA_RULES = {"α = r": lambda r: r, "α = 2r": lambda r: 2 * r,
               "α = √r": lambda r: math.sqrt(r), "α = 16": lambda r: 16}


def plan(quick: bool = False) -> dict[str, list[dict]]:
    """The configurations of each experiment (label, targets, rank, alpha)."""
    ranks = (1, 8) if quick else RANKS
    alpha_ranks = (8,) if quick else ALPHA_RANKS
    return {
        "targets": [{"label": label, "targets": t, "rank": 8, "alpha": 16} for label, t in TARGETS.items()],
        "rank": [{"label": f"r = {r}", "targets": ATTENTION, "rank": r, "alpha": 2 * r} for r in ranks],
        "alpha": [{"label": f"{rule}, r = {r}", "rule": rule, "targets": ATTENTION, "rank": r,
                   "alpha": f(r)} for r in alpha_ranks for rule, f in ALPHA_RULES.items()],
    }


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-windows", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a tiny smoke run: few steps, one seed")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file to write (default: results/sweeps.json; with --quick: nothing)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.eval_windows = 5, args.seeds[:1], 4
    out = args.out if args.out is not None else (None if args.quick else RESULTS / "sweeps.json")

    torch.set_num_threads(args.threads)
    t0 = time.time()
    train = corpus.load_tokens("adapt", "train")
    evals = {"adapt_val": corpus.load_tokens("adapt", "val"),
             "pretrain_val": corpus.load_tokens("pretrain", "val")}
    base = load_pretrained()
    baseline = {f"{k}_ppl": evaluate(base, v, args.context, max_windows=args.eval_windows)["perplexity"]
                for k, v in evals.items()}
    print(f"pretrained: adapt/val ppl {baseline['adapt_val_ppl']:.3f}, "
          f"pretrain/val ppl {baseline['pretrain_val_ppl']:.3f}", flush=True)

    cache: dict[tuple, dict] = {}   # identical configurations are trained once
    experiments = {}
    for name, configs in plan(args.quick).items():
        rows = []
        for cfg in configs:
            targets = cfg["targets"]
            key = (str(targets), cfg["rank"], round(float(cfg["alpha"]), 9))
            runs = []
            for seed in args.seeds:
                if (key, seed) not in cache:
                    cache[(key, seed)] = run(targets, cfg["rank"], cfg["alpha"], train_tokens=train,
                                             eval_sets=evals, steps=args.steps,
                                             batch_size=args.batch_size, context=args.context,
                                             lr=args.lr, seed=seed, eval_windows=args.eval_windows)
                runs.append(cache[(key, seed)])
            curve = [statistics.fmean(r["losses"][i] for r in runs) for i in range(args.steps)]
            row = {k: v for k, v in cfg.items() if k != "targets"}
            row.update({
                "targets": targets if isinstance(targets, str) else list(targets),
                "scaling": cfg["alpha"] / cfg["rank"], "trainable": runs[0]["trainable"],
                "adapt_val_ppl": summary([r["adapt_val_ppl"] for r in runs]),
                "pretrain_val_ppl": summary([r["pretrain_val_ppl"] for r in runs]),
                "final_train_loss": summary([r["final_train_loss"] for r in runs]),
                "loss_curve_mean": [round(v, 4) for v in curve],
                "seconds_per_run": statistics.fmean(r["seconds"] for r in runs),
            })
            rows.append(row)
            print(f"{name:8s} {row['label']:28s} trainable {row['trainable']:7,d}  adapt ppl "
                  f"{row['adapt_val_ppl']['mean']:.3f} ± {row['adapt_val_ppl']['std']:.3f}  "
                  f"pretrain ppl {row['pretrain_val_ppl']['mean']:.3f}  {time.time() - t0:.0f} s", flush=True)
        experiments[name] = rows

    result = {
        "experiment": "LoRA sweeps on the shipped TinyLM (notebook 02)",
        "command": " ".join(["python -m lorakit.experiments.sweeps",
                             *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "seeds": args.seeds,
        "settings": {"steps": args.steps, "batch_size": args.batch_size, "context": args.context,
                     "lr": args.lr, "optimizer": "AdamW, no weight decay, 10% warm-up, cosine to lr/10",
                     "train": "adapt/train (lorakit.lm.corpus)",
                     "eval": f"{args.eval_windows} windows of {args.context} bytes spread evenly over "
                             "adapt/val and over pretrain/val; perplexity per byte"},
        "baseline": baseline,
        "experiments": experiments,
        "wall_time_s": round(time.time() - t0, 1),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {out} ({result['wall_time_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
