"""Notebook 06's init race at full size: does an orthogonal A train faster than a Kaiming one?

    python -m lorakit.experiments.init_race            # 256 seeds, 150 steps (about a minute on 2 CPU cores)
    python -m lorakit.experiments.init_race --quick    # a smoke run: 8 seeds, not saved by default

The race is notebook 06 §4's, with the same code: LoRA (r = 8, s = 1, Adam at lr 1e-2) fits a
rank-16 target update with singular values 0.8^k on a 64 -> 48 layer, from minibatches of random
inputs. Four inits of A race — Kaiming-uniform or orthogonal *directions*, each at the row
*length* of either (about 0.58 for Kaiming-uniform, 1 for orthogonal) — so that direction and
length can be compared one at a time. All four inits of a seed start from the same random draw
and every run sees the same batches. Seed 003 claims that orthogonal init "preserves rank"; the
notebook's three seeds cannot tell a small effect from noise, so this command runs many.

Reported, for every pair of inits that differ in one property only: the paired difference of the
mean log-loss over the run (how fast the loss falls; every step counts alike) as a percentage,
its standard error over seeds, and in how many seeds the first init is lower — the same at a few
single steps — and every init's final effective rank next to that of the best rank-8 fit.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch

from ..notebook.analysis import effective_rank
from . import RESULTS

INITS = {  # name: (direction, row norm or None to keep the init's own)
    "Kaiming-uniform (rows ≈ 0.58)": ("kaiming", None),
    "Kaiming, rows rescaled to 1": ("kaiming", 1.0),
    "orthogonal (rows = 1)": ("orthogonal", None),
    "orthogonal, rows rescaled to 0.58": ("orthogonal", 3 ** -0.5),
}

# pairs that differ in one property: (label, first init, second init)
PAIRS = (
    ("direction: orthogonal vs Kaiming, rows ≈ 0.58", "orthogonal, rows rescaled to 0.58",
     "Kaiming-uniform (rows ≈ 0.58)"),
    ("direction: orthogonal vs Kaiming, rows = 1", "orthogonal (rows = 1)", "Kaiming, rows rescaled to 1"),
    ("length: rows 1 vs 0.58, Kaiming", "Kaiming, rows rescaled to 1", "Kaiming-uniform (rows ≈ 0.58)"),
    ("length: rows 1 vs 0.58, orthogonal", "orthogonal (rows = 1)", "orthogonal, rows rescaled to 0.58"),
)


def init_A(direction: str, norm: float | None, rank: int, d_in: int, gen: torch.Generator) -> torch.Tensor:
    """A (rank, d_in): Kaiming-uniform or orthonormal rows, optionally rescaled to row norm ``norm``."""
    if direction == "kaiming":   # what kaiming_uniform_(A, a=sqrt(5)) draws: U(-1/sqrt(in), 1/sqrt(in))
        A = (torch.rand(rank, d_in, generator=gen) * 2 - 1) / math.sqrt(d_in)
    else:                        # what orthogonal_ draws: orthonormal rows
        A = torch.linalg.qr(torch.randn(d_in, rank, generator=gen))[0].T
    return A if norm is None else A / A.norm(dim=1, keepdim=True) * norm


def init_race(seeds: Sequence[int], steps: int, d_in: int = 64, d_out: int = 48, rank: int = 8,
              k_true: int = 16, lr: float = 1e-2, batch: int = 64, device="cpu"):
    """Train every init of INITS for every seed side by side (one batched tensor).

    Returns (names, eranks, losses, best): eranks and losses of shape (seeds, inits, steps) — the
    effective rank of BA and the training loss after every step — and the effective rank of the
    best rank-``rank`` fit. The same function as notebook 06 §4 (a test keeps them equal).
    """
    names = list(INITS)
    As, targets = [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        U = torch.linalg.qr(torch.randn(d_out, k_true, generator=g))[0]
        V = torch.linalg.qr(torch.randn(d_in, k_true, generator=g))[0]
        dW = U @ torch.diag(0.8 ** torch.arange(k_true, dtype=torch.float32)) @ V.T
        for name in names:       # the same draw for every init of this seed
            As.append(init_A(*INITS[name], rank, d_in, torch.Generator().manual_seed(100 + seed)))
            targets.append(dW)
    A = torch.stack(As).to(device).requires_grad_()                  # (K, r, in)
    B = torch.zeros(len(As), d_out, rank, device=device, requires_grad=True)   # (K, out, r)
    dW = torch.stack(targets).to(device)                             # (K, out, in)
    opt = torch.optim.Adam([A, B], lr=lr)
    g = torch.Generator().manual_seed(7)
    eranks, losses = [], []
    for _ in range(steps):
        x = torch.randn(batch, d_in, generator=g).to(device)         # W x cancels: fit BA to dW
        err = torch.einsum("kor,kbr->kbo", B, torch.einsum("kri,bi->kbr", A, x)) - torch.einsum("koi,bi->kbo", dW, x)
        loss = err.pow(2).mean(dim=(1, 2))                           # (K,): one loss per model
        opt.zero_grad()
        loss.sum().backward()                                        # Adam: each model its own step
        opt.step()
        with torch.no_grad():
            s = torch.linalg.svdvals(B @ A)                          # (K, min(out, in))
            p = s / s.sum(-1, keepdim=True)
            eranks.append(torch.exp(-(p * p.clamp_min(1e-30).log()).sum(-1)).cpu())
            losses.append(loss.detach().cpu())
    shape = (len(seeds), len(names), steps)
    best = effective_rank(torch.diag(0.8 ** torch.arange(rank, dtype=torch.float64)))
    return names, torch.stack(eranks).T.reshape(shape), torch.stack(losses).T.reshape(shape), best


def paired(losses: torch.Tensor, names: Sequence[str], first: str, second: str,
           step: int | None = None) -> dict:
    """Paired comparison of two inits over seeds.

    With ``step`` None: the mean over steps of log(loss), else log(loss) after that step (1-based).
    Returns {"percent": 100 (exp(mean d) - 1), "se_percent": 100 sd(d) / sqrt(n), "first_lower": how
    many seeds have d < 0, "seeds": n}, with d = log-loss of ``first`` minus that of ``second``.
    """
    log = losses.double().log()
    log = log.mean(-1) if step is None else log[:, :, step - 1]
    d = log[:, names.index(first)] - log[:, names.index(second)]
    n = d.numel()
    se = d.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return {"percent": 100 * math.expm1(d.mean().item()), "se_percent": 100 * se,
            "first_lower": int((d < 0).sum()), "seeds": n}


def summarize(names, eranks, losses, best, steps_to_report: Sequence[int] = (10, 50, 150)) -> dict:
    """Every pair of PAIRS (mean log-loss over the run, and at single steps) and the final ranks."""
    steps = losses.shape[-1]
    return {
        "pairs": [{"label": label, "first": a, "second": b, "mean_log_loss": paired(losses, names, a, b),
                   "at_step": {str(s): paired(losses, names, a, b, s) for s in steps_to_report if s <= steps}}
                  for label, a, b in PAIRS],
        "final_effective_rank": {n: statistics.fmean(eranks[:, i, -1].tolist()) for i, n in enumerate(names)},
        "best_effective_rank": best,
        "final_loss": {n: statistics.fmean(losses[:, i, -10:].mean(-1).tolist()) for i, n in enumerate(names)},
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=256, help="number of seeds (0, 1, ..., N-1)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--chunk", type=int, default=64, help="seeds trained side by side in one batch")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 8 seeds, 30 steps")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file to write (default: results/init_race.json; with --quick: nothing)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.steps = 8, 30
    out = args.out if args.out is not None else (None if args.quick else RESULTS / "init_race.json")
    from ..provenance import machine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # small batched matmuls: one thread is fastest and reproducible
    t0 = time.time()
    try:
        seeds = list(range(args.seeds))
        parts = [init_race(seeds[i:i + args.chunk], args.steps) for i in range(0, len(seeds), args.chunk)]
        where = machine()           # recorded with the thread count the race ran with
    finally:
        torch.set_num_threads(threads)
    names, best = parts[0][0], parts[0][3]
    eranks = torch.cat([p[1] for p in parts])
    losses = torch.cat([p[2] for p in parts])
    report = {"experiment": "notebook 06's init race: orthogonal vs Kaiming directions at equal row length",
              "command": "python -m lorakit.experiments.init_race",
              "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": where,
              "seconds": round(time.time() - t0, 1), "seeds": len(seeds), "steps": args.steps,
              "settings": {"layer": "64 -> 48", "rank": 8, "target": "rank 16, singular values 0.8^k",
                           "optimizer": "Adam, lr 1e-2, batches of 64 random inputs",
                           "measure": "paired difference of log(training loss), mean over steps or at one step"},
              **summarize(names, eranks, losses, best)}
    for row in report["pairs"]:
        m = row["mean_log_loss"]
        print(f"{row['label']:46s} {m['percent']:+6.2f} % ± {m['se_percent']:.2f}  "
              f"(first lower in {m['first_lower']} of {m['seeds']} seeds)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
