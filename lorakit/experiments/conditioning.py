"""Notebooks 03 and 04's experiment: conditioned adapters on a plant with operating conditions.

    python -m lorakit.experiments.conditioning            # full size: 10 seeds, under a minute on 2 CPU cores
    python -m lorakit.experiments.conditioning --quick    # a smoke run (not saved by default)

The plant is ``lorakit.datasets.plant.OperatingSystem``: y = W(p) x + b(p) + noise, pretrained (calibrated)
at its nominal condition. Every method adapts that frozen ``nn.Linear`` with rank r on
measurements at a few *training* conditions, and is evaluated on fresh measurements at
*held-out* conditions — inside the training range ("interpolate") and beyond it ("extrapolate"):

    LoRA                 y = base(x) + s·B A x                       (ignores p)
    bilinear             y = base(x) + s·B((A x) ⊙ (C p))            lorakit.BilinearLoRALinear
    bilinear, 1 + Cp     y = base(x) + s·B((A x) ⊙ (1 + C p))        gate="one_plus"
    RSS                  y = base(x) + s·B((A x) ⊙ (C p) + S p)       lorakit.RSSBilinearLoRA
    RSS, 1 + Cp          y = base(x) + s·B((A x) ⊙ (1 + C p) + S p)
    output-space FiLM    y = base(x) + s·((B A x) ⊙ (G p) + H p)      OutputFiLMLoRA below:
                         RSS's gate and shift moved from rank space (r numbers) to output space

Reported per method, as mean and standard deviation over seeds (a seed sets the adapter's init
and the measurement noise and inputs; the plant and the conditions stay fixed):

- error: MSE divided by the pretrained model's MSE on the same data (1 = no better than not
  adapting; the noise floor is printed with it);
- trainable parameters;
- rank of the update: ``rank per condition`` is the largest numerical rank of the affine update
  [ΔW(p) | Δb(p)] (out x (in + 1)) over the held-out conditions; ``rank across conditions`` is the
  rank of all of them side by side — how many output directions the method uses as p varies.
  Both are read off the trained model by behaviour (feeding x = I and x = 0), like the checks do.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..datasets.plant import OperatingSystem, condition_splits
from . import RESULTS

METHODS: tuple[str, ...] = ("LoRA", "bilinear", "bilinear, 1 + Cp", "RSS", "RSS, 1 + Cp",
                            "output-space FiLM")
SPLITS: tuple[str, ...] = ("train", "interpolate", "extrapolate")


class OutputFiLMLoRA(nn.Module):
    """y = base(x) + s·((B A x) ⊙ (G p) + H p): FiLM on the adapter's *output* features.

    The output-space counterpart of RSS, for comparison: the gate G p and shift H p have one
    entry per output feature instead of one per rank direction. A: (r, in), B: (out, r),
    G, H: (out, cond_dim). B and H start at zero (the layer equals its base at init), A and G
    random. Per condition ΔW(p) = s·diag(G p) B A still has rank ≤ r, but its column space
    turns with p, and H p may point anywhere in output space.
    """

    def __init__(self, base_layer: nn.Linear, cond_dim: int, rank: int = 4, alpha: float = 1.0,
                 gate: str = "linear") -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"base_layer must be an nn.Linear, got {type(base_layer).__name__}")
        if gate not in ("linear", "one_plus"):
            raise ValueError(f"gate must be 'linear' or 'one_plus', got {gate!r}")
        out_f, in_f = base_layer.weight.shape
        if not 1 <= rank <= min(in_f, out_f):
            raise ValueError(f"rank must be between 1 and {min(in_f, out_f)}, got {rank}")
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.gate_form = gate
        self.lora_A = nn.Parameter(torch.empty(rank, in_f))
        self.lora_B = nn.Parameter(torch.zeros(out_f, rank))
        self.film_G = nn.Parameter(torch.empty(out_f, cond_dim))
        self.film_H = nn.Parameter(torch.zeros(out_f, cond_dim))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.film_G, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        d = self.film_G.shape[1]
        if not isinstance(p, torch.Tensor) or p.dim() != 2 or p.shape[1] != d:
            got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"p must have shape (B, cond_dim) = (B, {d}), got {got}")
        if x.dim() < 2 or p.shape[0] != x.shape[0]:
            raise ValueError(f"p must have one row per sample of x {tuple(x.shape)}, got {tuple(p.shape)}")
        view = (p.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
        gate = (p @ self.film_G.T).view(view)                        # (B, 1, ..., out)
        if self.gate_form == "one_plus":
            gate = 1 + gate
        u = (x @ self.lora_A.T) @ self.lora_B.T                      # (B, ..., out)
        return self.base_layer(x) + self.scaling * (u * gate + (p @ self.film_H.T).view(view))


class Unconditioned(nn.Module):
    """Plain LoRA with the conditioned call signature: forward(x, p) ignores p."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def make_model(method: str, base: nn.Linear, cond_dim: int, rank: int, alpha: float) -> nn.Module:
    """A model with forward(x, p) for one of METHODS, wrapping (a copy of) the frozen base."""
    from .. import BilinearLoRALinear, LoRALinear, RSSBilinearLoRA

    base = _copy_linear(base)
    if method == "LoRA":
        return Unconditioned(LoRALinear(base, rank=rank, alpha=alpha))
    gate = "one_plus" if method.endswith("1 + Cp") else "linear"
    if method.startswith("bilinear"):
        return BilinearLoRALinear(base, cond_dim, rank=rank, alpha=alpha, gate=gate)
    if method.startswith("RSS"):
        return RSSBilinearLoRA(base, cond_dim, rank=rank, alpha=alpha, gate=gate)
    if method == "output-space FiLM":
        return OutputFiLMLoRA(base, cond_dim, rank=rank, alpha=alpha)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def _copy_linear(layer: nn.Linear) -> nn.Linear:
    out = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    out.load_state_dict(layer.state_dict())
    return out.requires_grad_(False)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def train(model: nn.Module, x, p, y, steps: int, lr: float, optimizer: str = "adam") -> list[float]:
    """Full-batch training on the MSE (Adam, or plain SGD); returns the loss of every step."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    opt = OPTIMIZERS[optimizer]([q for q in model.parameters() if q.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = (model(x, p) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def mse(model: Callable, x, p, y) -> float:
    return (model(x, p) - y).pow(2).mean().item()


@torch.no_grad()
def update_maps(model: nn.Module, conditions: torch.Tensor, base: nn.Linear
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ΔW, Δb) of a trained model at each condition, read off by behaviour.

    ΔW: (M, out, in) with model(x, p) - base(x) = ΔW(p) x + Δb(p); Δb: (M, out).
    """
    n = base.in_features
    eye, zero = torch.eye(n), torch.zeros(1, n)
    dW, db = [], []
    for q in conditions:
        shift = model(zero, q[None]) - base(zero)                     # (1, out)
        dW.append((model(eye, q.expand(n, -1)) - base(eye) - shift).T)
        db.append(shift[0])
    return torch.stack(dW), torch.stack(db)


def numerical_rank(M: torch.Tensor, rtol: float = 1e-3) -> int:
    """Singular values above rtol times the largest one (0 for a zero matrix)."""
    s = torch.linalg.svdvals(M.double())
    if s.numel() == 0 or s[0] == 0:
        return 0
    return int((s > rtol * s[0]).sum())


def update_ranks(dW: torch.Tensor, db: torch.Tensor, rtol: float = 1e-3) -> tuple[int, int]:
    """(largest rank of [ΔW(p) | Δb(p)] over conditions, rank of all of them side by side)."""
    affine = torch.cat([dW, db[:, :, None]], dim=2)                  # (M, out, in + 1)
    per = max(numerical_rank(a, rtol) for a in affine)
    across = numerical_rank(affine.permute(1, 0, 2).reshape(affine.shape[1], -1), rtol)
    return per, across


def _summary(values: Sequence[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": list(values)}


def run_conditioning(system: OperatingSystem | None = None, methods: Iterable[str] = METHODS,
                     rank: int = 4, alpha: float | None = None, seeds: Sequence[int] = (0, 1, 2),
                     steps: int = 150, lr: float = 3e-2, per_condition: int = 64,
                     eval_per_condition: int = 128, splits: dict | None = None,
                     progress: bool = True) -> dict:
    """Train every method with every seed; return the summary (see the module docstring).

    Returns a dict: "rows" (one per method: trainable, error per split as {"mean", "std",
    "values"}, ranks, seconds per run), "per_condition" (held-out conditions and each method's
    error there, mean over seeds), "noise_floor", "truth" (the plant's own update ranks),
    "config", and for plotting "models" (each method trained with the first seed), "curves"
    (their training losses), "base" and "system".
    """
    system = system if system is not None else OperatingSystem()
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    alpha = float(rank) if alpha is None else float(alpha)
    splits = splits if splits is not None else condition_splits(system.cond_dim)
    with one_thread():
        return _run(system, methods, rank, alpha, seeds, steps, lr, per_condition,
                    eval_per_condition, splits, progress)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """These models are tiny: one CPU thread is fastest (no contention) and reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run(system, methods, rank, alpha, seeds, steps, lr, per_condition, eval_per_condition,
         splits, progress) -> dict:
    from tqdm.auto import tqdm

    base = system.pretrained()
    base_fn = lambda x, p: base(x)  # noqa: E731
    # measurements: the same for every method, new for every seed
    data = {}
    for seed in seeds:
        g = torch.Generator().manual_seed(10_000 + seed)
        data[seed] = {"train": system.sample(splits["train"], per_condition, g)}
        for split in SPLITS:
            data[seed][split] = system.sample(splits[split], eval_per_condition, g)
    noise_floor = {split: statistics.fmean(system.noise ** 2 / mse(base_fn, *data[s][split])
                                           for s in seeds) for split in SPLITS}
    heldout = torch.cat([splits["interpolate"], splits["extrapolate"]])

    runs: dict[str, list[dict]] = {m: [] for m in methods}
    models, curves = {}, {}
    bar = tqdm(total=len(methods) * len(seeds), desc="training", disable=not progress)
    for method in methods:
        for seed in seeds:
            bar.set_postfix_str(f"{method}, seed {seed}")
            torch.manual_seed(seed)
            model = make_model(method, base, system.cond_dim, rank, alpha)
            t0 = time.perf_counter()
            losses = train(model, *data[seed]["train"], steps=steps, lr=lr)
            seconds = time.perf_counter() - t0
            errors = {split: mse(model, *data[seed][split]) / mse(base_fn, *data[seed][split])
                      for split in SPLITS}
            per, across = update_ranks(*update_maps(model, heldout, base))
            cond_errors = []                      # each held-out condition on its own
            for split in ("interpolate", "extrapolate"):
                x, p, y = data[seed][split]
                for i in range(splits[split].shape[0]):
                    sl = slice(i * eval_per_condition, (i + 1) * eval_per_condition)
                    cond_errors.append(mse(model, x[sl], p[sl], y[sl]) / mse(base_fn, x[sl], p[sl], y[sl]))
            runs[method].append({"errors": errors, "rank_per": per, "rank_across": across,
                                 "seconds": seconds, "cond_errors": cond_errors})
            if seed == seeds[0]:
                models[method], curves[method] = model, losses
            bar.update()
    bar.close()

    rows = []
    for method in methods:
        r = runs[method]
        rows.append({
            "method": method,
            "trainable": trainable_parameters(models[method]),
            **{f"error {s}": _summary([x["errors"][s] for x in r]) for s in SPLITS},
            "rank per condition": max(x["rank_per"] for x in r),
            "rank across conditions": max(x["rank_across"] for x in r),
            "seconds per run": statistics.fmean(x["seconds"] for x in r),
        })
    true_maps = [system.true_update(q) for q in heldout]
    t_per, t_across = update_ranks(torch.stack([w for w, _ in true_maps]),
                                   torch.stack([b for _, b in true_maps]))
    per_cond = {"conditions": heldout.tolist(),
                "errors": {m: [statistics.fmean(x["cond_errors"][i] for x in runs[m])
                               for i in range(heldout.shape[0])] for m in methods}}
    return {"rows": rows, "per_condition": per_cond, "noise_floor": noise_floor,
            "truth": {"rank per condition": t_per, "rank across conditions": t_across},
            "models": models, "curves": curves, "base": base, "system": system,
            "config": {"rank": rank, "alpha": alpha, "seeds": seeds, "steps": steps, "lr": lr,
                       **per_condition_count(splits, per_condition),
                       "system": _system_config(system)}}


def per_condition_count(splits: dict, per_condition: int) -> dict:
    return {"train conditions": int(splits["train"].shape[0]), "measurements per condition": per_condition,
            "held-out conditions": int(splits["interpolate"].shape[0] + splits["extrapolate"].shape[0])}


def _system_config(system: OperatingSystem) -> dict:
    keys = ("in_dim", "out_dim", "cond_dim", "modes", "gain", "drift", "noise", "nominal", "seed")
    return {k: getattr(system, k) for k in keys}


def format_table(result: dict, truth: bool = True) -> str:
    """A Markdown table of the rows of :func:`run_conditioning` (mean ± std over seeds)."""
    head = ("| method | trainable params | error, train conditions | error, held-out (inside) "
            "| error, held-out (beyond) | rank per condition | rank across conditions |")
    lines = [head, "|" + " --- |" * 7]
    for row in result["rows"]:
        cells = [row["method"], f"{row['trainable']:,}"]
        cells += [f"{row[f'error {s}']['mean']:.3f} ± {row[f'error {s}']['std']:.3f}" for s in SPLITS]
        cells += [str(row["rank per condition"]), str(row["rank across conditions"])]
        lines.append("| " + " | ".join(cells) + " |")
    if truth:
        nf = result["noise_floor"]
        t = result["truth"]
        lines.append("| *the plant (truth)* | | " + " | ".join(f"{nf[s]:.3f} (noise)" for s in SPLITS)
                     + f" | {t['rank per condition']} | {t['rank across conditions']} |")
    return "\n".join(lines)


def lr_sweep(system: OperatingSystem | None = None, methods: Iterable[str] = ("LoRA", "bilinear"),
             lrs: Sequence[float] = (3e-3, 3e-2, 3e-1), seeds: Sequence[int] = (0, 1),
             rank: int = 4, steps: int = 200, per_condition: int = 64, optimizer: str = "adam",
             progress: bool = True) -> list[dict]:
    """Final training loss (relative to the pretrained model's) per method and learning rate.

    For the seed's "stabilises training" claim: a method that is more stable tolerates larger
    learning rates. Rows: {"method", "lr", "final": summary over seeds, "diverged": count}.
    """
    system = system if system is not None else OperatingSystem()
    with one_thread():
        return _sweep(system, list(methods), lrs, seeds, rank, steps, per_condition, optimizer,
                      progress)


def _sweep(system, methods, lrs, seeds, rank, steps, per_condition, optimizer, progress) -> list[dict]:
    from tqdm.auto import tqdm

    splits = condition_splits(system.cond_dim)
    base = system.pretrained()
    bar = tqdm(total=len(methods) * len(lrs) * len(seeds), desc="lr sweep", disable=not progress)
    rows = []
    for method in methods:
        for lr in lrs:
            finals, diverged = [], 0
            for seed in seeds:
                g = torch.Generator().manual_seed(10_000 + seed)
                x, p, y = system.sample(splits["train"], per_condition, g)
                torch.manual_seed(seed)
                model = make_model(method, base, system.cond_dim, rank, float(rank))
                losses = train(model, x, p, y, steps=steps, lr=lr, optimizer=optimizer)
                ref = mse(lambda a, b: base(a), x, p, y)
                last = statistics.fmean(losses[-20:]) / ref
                if not math.isfinite(last) or last > 1.0:
                    diverged += 1
                finals.append(last if math.isfinite(last) else float("inf"))
                bar.update()
            rows.append({"method": method, "lr": lr, "final": finals, "diverged": diverged})
    bar.close()
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-2)
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4], help="ranks to compare")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds, 50 steps")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file to write (default: results/conditioning.json; with --quick: nothing)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.steps = args.seeds[:2], 50
    out = args.out if args.out is not None else (None if args.quick else RESULTS / "conditioning.json")
    from ..provenance import machine

    t0 = time.time()
    plants = {"calibrated at p = 0": OperatingSystem(),
              "calibrated at p = (0.6, -0.6)": OperatingSystem(nominal=(0.6, -0.6))}
    results = {}
    for name, system in plants.items():
        for rank in args.ranks:
            res = run_conditioning(system, METHODS, rank=rank, seeds=args.seeds, steps=args.steps,
                                   lr=args.lr, progress=False)
            key = f"{name}, r = {rank}"
            print(f"\n{key}\n" + format_table(res), flush=True)
            results[key] = {k: res[k] for k in ("rows", "per_condition", "noise_floor", "truth", "config")}
    report = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "seconds": round(time.time() - t0, 1), "seeds": args.seeds, "results": results}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
