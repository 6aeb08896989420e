"""Notebook 07's experiments: HyLoRADA v2's structure priors, on code and on a periodic series.

    python -m lorakit.experiments.structure            # full size; writes results/structure.json
    python -m lorakit.experiments.structure --quick    # a smoke run (not saved by default)

**Code** (``run_code``). The shipped TinyLM, adapted to the "adapt" domain (stdlib unit tests)
with HyLoRADA on the attention projections (q, k, v, o; r = 8, alpha = 16), three ways:

    v1                   HyLoRADALinear, no prior
    v2, positions only   HyLoRADAv2Linear + StructureEncoder(offsets in the window)      (control)
    v2, AST depth        HyLoRADAv2Linear + StructureEncoder(offsets, AST depth buckets)

One encoder feeds all v2 layers of the model through ``lorakit.conditioning.structure_prior``;
it trains with the adapters (its parameters are counted). Depth buckets: ``depth_types(d, 16)``.
Reported: held-out loss (nats/byte) on adapt/val, mean and spread over seeds; the same seed
gives every method the same adapter init (the v2 layers draw A like v1) and the same batches.
The AST depth is a whole-file annotation and can leak a little about the next byte (see
``lorakit.datasets``): a gain of "AST depth" over "positions only" is an upper bound on
what a causal structure prior would give.

**Periodic series** (``run_temporal``). ``PeriodicRegression``: y = W0 x + b0 + f(t)·ΔW x + ε,
f(t) = 1 + 0.4 sin(2π t / 24). v1 (no prior) against v2 with a TemporalStructureEncoder of one
learnable period started at 24·(1 − offset), for several offsets and two lengths of training
data (the number of cycles it spans). Reported: test MSE (later in time than the training
data) over the noise floor, the learned period, and whether it found 24 (within 0.5 %; a fit
stuck in another minimum lands ≥ 2 % away).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from typing import Iterable, Sequence

import torch
from torch import nn

from ..conditioning import structure_prior
from ..conditioning.encoders import StructureEncoder, TemporalStructureEncoder
from ..datasets import (
    PeriodicRegression,
    SeasonalComponent,
    depth_types,
    get_batch_with_depths,
    load_tokens_with_depths,
)
from ..layers import HyLoRADALinear, HyLoRADAv2Linear
from ..lm.finetune import ATTENTION, train
from ..lm.tinylm import load_pretrained
from ..provenance import machine
from ..tuning import inject_adapters, mark_only_adapters_trainable
from . import RESULTS

CODE_METHODS = ("v1", "v2, positions only", "v2, AST depth")
NUM_TYPES = 16
STRUCTURE_DIM = 32
TRUE_PERIOD = 24.0


def summary(values: Sequence[float]) -> dict:
    values = list(values)
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


# --------------------------------------------------------------------------------------------
# code: the TinyLM with a structure prior
# --------------------------------------------------------------------------------------------
class StructuredLM(nn.Module):
    """A language model whose v2 layers all get one prior per token: forward(idx, depth).

    ``encoder``: a StructureEncoder (None for v1); ``use_depth``: feed the AST depth buckets as
    structure types (else positions only). Positions are offsets within the window, 0..T−1.
    """

    def __init__(self, model: nn.Module, encoder: StructureEncoder | None = None,
                 use_depth: bool = False, num_types: int = NUM_TYPES) -> None:
        super().__init__()
        self.model, self.encoder = model, encoder
        self.use_depth, self.num_types = use_depth, num_types

    def prior(self, idx: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor | None:
        if self.encoder is None:
            return None
        B, T = idx.shape
        positions = StructureEncoder.get_position_tensor(B, T, device=idx.device)
        types = depth_types(depth, self.num_types) if self.use_depth else None
        return self.encoder(positions, types)                       # (B, T, structure_dim)

    def forward(self, idx: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        prior = self.prior(idx, depth)
        if prior is None:
            return self.model(idx)
        with structure_prior(prior):
            return self.model(idx)


def code_model(method: str, seed: int = 0, rank: int = 8, alpha: float = 16,
               targets: Sequence[str] = ATTENTION, structure_dim: int = STRUCTURE_DIM,
               device=None) -> StructuredLM:
    """The shipped TinyLM with HyLoRADA v1 or v2 adapters on ``targets`` (+ an encoder for v2)."""
    if method not in CODE_METHODS:
        raise ValueError(f"method must be one of {CODE_METHODS}, got {method!r}")
    model = load_pretrained(device=device)
    v2 = method != "v1"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)                     # the same A for v1 and v2 at one seed
        if v2:
            inject_adapters(model, HyLoRADAv2Linear, target_modules=list(targets), rank=rank,
                            alpha=alpha, structure_dim=structure_dim)
        else:
            inject_adapters(model, HyLoRADALinear, target_modules=list(targets), rank=rank,
                            alpha=alpha)
        mark_only_adapters_trainable(model)
        encoder = None
        if v2:
            use_depth = method == "v2, AST depth"
            encoder = StructureEncoder(structure_dim=structure_dim,
                                       num_structure_types=NUM_TYPES if use_depth else None)
    _same_A(model, seed)
    lm = StructuredLM(model, encoder, use_depth=v2 and method == "v2, AST depth")
    return lm.to(device) if device is not None else lm


@torch.no_grad()
def _same_A(model: nn.Module, seed: int) -> None:
    """Redraw every adapter's A (orthogonal) from a per-layer seed: v1 and v2 start alike.

    (v2's constructor draws an nn.Linear init for w before zeroing it, which shifts the
    global random stream; this makes the comparison paired.)
    """
    from ..tuning import adapter_modules
    for i, m in enumerate(adapter_modules(model).values()):
        g = torch.Generator().manual_seed(10_000 * seed + i)
        a = torch.randn(m.lora_A.shape, generator=g)
        q, r = torch.linalg.qr(a.T)                      # (in, r): orthonormal columns
        m.lora_A.copy_((q * torch.sign(torch.diagonal(r))).T.to(m.lora_A))


def _loss(lm: StructuredLM, x, y, d) -> torch.Tensor:
    logits = lm(x, d)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def train_code(lm: StructuredLM, tokens: torch.Tensor, depths: torch.Tensor, steps: int,
               batch_size: int = 8, context: int = 128, lr: float = 5e-3, seed: int = 0,
               progress: bool = False, desc: str | None = None) -> list[float]:
    """AdamW on the trainable parameters (adapters and encoder), warm-up + cosine; step losses."""
    params = [p for p in lm.parameters() if p.requires_grad]
    gen, device = torch.Generator().manual_seed(seed), params[0].device
    return train(lm, lambda: get_batch_with_depths(tokens, depths, batch_size, context, gen, device=device),
                 _loss, steps, lr, progress=progress, desc=desc)


@torch.no_grad()
def evaluate_code(lm: StructuredLM, tokens: torch.Tensor, depths: torch.Tensor,
                  context: int = 128, max_windows: int = 64, batch_size: int = 32) -> float:
    """Mean next-byte loss (nats/byte) over ``max_windows`` windows spread over the text."""
    was = lm.training
    lm.eval()
    device = next(lm.parameters()).device
    n = (len(tokens) - 1) // context
    index = torch.arange(n)
    if max_windows < n:
        index = torch.linspace(0, n - 1, max_windows).round().long()
    starts = index * context
    offsets = torch.arange(context + 1)
    total, count = 0.0, 0
    for i in range(0, len(starts), batch_size):
        w = starts[i:i + batch_size, None] + offsets
        x, y, d = tokens[w][:, :-1], tokens[w][:, 1:], depths[w][:, :-1]
        x, y, d = x.to(device), y.to(device), d.to(device)
        logits = lm(x, d)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             y.reshape(-1), reduction="sum").item()
        count += y.numel()
    lm.train(was)
    return total / count


def code_data(train_bytes: int | None = None, val_bytes: int | None = None) -> dict:
    """adapt/train and adapt/val tokens with their AST depths (whole split when None)."""
    tr, dtr, itr = load_tokens_with_depths("adapt", "train", max_bytes=train_bytes)
    va, dva, iva = load_tokens_with_depths("adapt", "val", max_bytes=val_bytes)
    return {"train": (tr, dtr), "val": (va, dva), "info": {"train": itr, "val": iva}}


def run_code(methods: Iterable[str] = CODE_METHODS, seeds: Sequence[int] = (0, 1, 2),
             steps: int = 300, batch_size: int = 8, context: int = 128, lr: float = 5e-3,
             eval_windows: int = 128, data: dict | None = None, device=None,
             progress: bool = False, log: bool = False, keep_models: bool = False) -> dict:
    """Train every method with every seed; held-out adapt/val loss, mean and spread over seeds.

    ``keep_models``: also return the last seed's trained StructuredLM of each method under
    ``"models"`` (not JSON).
    """
    data = data or code_data()
    tokens, depths = data["train"]
    vtok, vdep = data["val"]
    pre = StructuredLM(load_pretrained(device=device))
    out = {"pretrained_val_loss": evaluate_code(pre, vtok, vdep, context, eval_windows),
           "methods": {}}
    for method in methods:
        runs = []
        for seed in seeds:
            t0 = time.time()
            lm = code_model(method, seed=seed, device=device)
            losses = train_code(lm, tokens, depths, steps, batch_size, context, lr, seed,
                                progress=progress, desc=f"{method}, seed {seed}")
            runs.append({"seed": seed, "val_loss": evaluate_code(lm, vtok, vdep, context, eval_windows),
                         "final_train_loss": statistics.fmean(losses[-20:]),
                         "losses": [round(v, 4) for v in losses],
                         "seconds": round(time.time() - t0, 1)})
            if lm.encoder is not None:
                runs[-1]["factors"] = factor_stats(lm, vtok, vdep, context)
            if log:
                print(f"  {method:20s} seed {seed}: val loss {runs[-1]['val_loss']:.4f} "
                      f"({runs[-1]['seconds']:.0f} s)", flush=True)
        trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)
        if keep_models:
            out.setdefault("models", {})[method] = lm
        out["methods"][method] = {"trainable": trainable,
                                  "val_loss": summary([r["val_loss"] for r in runs]),
                                  "runs": runs}
    # paired differences: the same seed means the same batches and the same A
    for method in methods:
        if method != "v1" and "v1" in out["methods"]:
            a = out["methods"][method]["val_loss"]["values"]
            b = out["methods"]["v1"]["val_loss"]["values"]
            out["methods"][method]["minus_v1"] = summary([x - y for x, y in zip(a, b, strict=True)])
    return out


@torch.no_grad()
def position_factors(lm: StructuredLM, idx: torch.Tensor, depth: torch.Tensor) -> dict[str, torch.Tensor]:
    """{layer name: f (T,)}: the factor 0.5 + σ(w · prior) each v2 layer applies at each position."""
    prior = lm.prior(idx[None], depth[None])
    return {name: m.position_factor(prior)[0, :, 0] for name, m in lm.model.named_modules()
            if isinstance(m, HyLoRADAv2Linear)}


@torch.no_grad()
def factor_stats(lm: StructuredLM, tokens: torch.Tensor, depths: torch.Tensor, context: int = 128,
                 windows: int = 32) -> dict[str, dict]:
    """Per v2 layer: mean, std, min, max of f over ``windows`` held-out windows, and the mean f
    at each AST depth bucket (NUM_TYPES of them; None where a bucket does not occur)."""
    n = (len(tokens) - 1) // context
    starts = torch.linspace(0, n - 1, min(windows, n)).round().long() * context
    w = starts[:, None] + torch.arange(context)
    idx, d = tokens[w], depths[w]
    device = next(lm.parameters()).device
    prior = lm.prior(idx.to(device), d.to(device))
    types = depth_types(d, NUM_TYPES)
    out = {}
    for name, m in lm.model.named_modules():
        if isinstance(m, HyLoRADAv2Linear):
            f = m.position_factor(prior)[..., 0].cpu().double()             # (windows, T)
            by = [round(f[types == k].mean().item(), 5) if (types == k).any() else None
                  for k in range(NUM_TYPES)]
            out[name] = {"mean": f.mean().item(), "std": f.std().item(), "min": f.min().item(),
                         "max": f.max().item(), "by_depth": by}
    return out


# --------------------------------------------------------------------------------------------
# periodic series: does the learnable period find the true period?
# --------------------------------------------------------------------------------------------
def temporal_task(windows: int = 24, test_windows: int = 8, seed: int = 0) -> PeriodicRegression:
    return PeriodicRegression(components=(SeasonalComponent(TRUE_PERIOD, 0.4),), windows=windows,
                              test_windows=test_windows, seed=seed)


def fit_temporal(task: PeriodicRegression, init_period: float | None, steps: int = 300,
                 lr: float = 1e-2, seed: int = 0, rank: int = 2, structure_dim: int = 8) -> dict:
    """Train v1 (init_period None) or v2 + a one-period TemporalStructureEncoder, full batch.

    Returns test MSE / noise floor, train MSE / noise floor, the learned period, the trained
    layer and encoder (for plots).
    """
    torch.manual_seed(seed)
    base = nn.Linear(task.base.in_features, task.base.out_features)
    base.load_state_dict(task.base.state_dict())
    if init_period is None:
        layer, enc = HyLoRADALinear(base, rank=rank, alpha=2 * rank), None
    else:
        layer = HyLoRADAv2Linear(base, rank=rank, alpha=2 * rank, structure_dim=structure_dim)
        enc = TemporalStructureEncoder(structure_dim=structure_dim, num_periods=1,
                                       init_periods=[init_period])
    params = [p for p in layer.parameters() if p.requires_grad]
    params += [] if enc is None else list(enc.parameters())
    opt = torch.optim.Adam(params, lr=lr)

    def predict(part):
        if enc is None:
            return layer(part["x"])
        return layer(part["x"], enc(part["t"]))

    for _ in range(steps):
        loss = (predict(task.train) - task.train["y"]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        floor = task.noise_floor()
        test = (predict(task.test) - task.test["y"]).pow(2).mean().item() / floor
        train = (predict(task.train) - task.train["y"]).pow(2).mean().item() / floor
    period = None if enc is None else float(enc.periods()[0].detach())
    return {"test_over_floor": test, "train_over_floor": train, "period": period,
            "found": None if period is None else abs(period / TRUE_PERIOD - 1) < 5e-3,
            "layer": layer, "encoder": enc}


def run_temporal(offsets: Sequence[float] = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
                 spans: Sequence[int] = (2, 16), seeds: Sequence[int] = (0, 1, 2),
                 steps: int = 300, lr: float = 1e-2, test_windows: int = 8,
                 log: bool = False) -> dict:
    """v1 and v2 at each start offset of the period, for each number of training windows (96 h each)."""
    rows = []
    for span in spans:
        for offset in (None, *offsets):
            runs = []
            for seed in seeds:
                task = temporal_task(windows=span + test_windows, test_windows=test_windows, seed=seed)
                init = None if offset is None else TRUE_PERIOD * (1 - offset)
                r = fit_temporal(task, init, steps=steps, lr=lr, seed=seed)
                runs.append({k: v for k, v in r.items() if k not in ("layer", "encoder")})
            row = {"method": "v1" if offset is None else "v2", "offset": offset,
                   "train_windows": span, "train_cycles": span * 96 / TRUE_PERIOD,
                   "test_over_floor": summary([r["test_over_floor"] for r in runs])}
            if offset is not None:
                row["period"] = summary([r["period"] for r in runs])
                row["found"] = sum(bool(r["found"]) for r in runs)
            row["seeds"] = len(runs)
            rows.append(row)
            if log:
                print(f"  span {span:2d} windows  {row['method']}  offset "
                      f"{'-' if offset is None else f'{offset:.3f}'}: test/floor "
                      f"{row['test_over_floor']['mean']:.2f}"
                      + ("" if offset is None else f", period {row['period']['mean']:.3f}, "
                                                   f"found {row['found']}/{len(runs)}"), flush=True)
    return {"true_period": TRUE_PERIOD, "rows": rows}


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="LM fine-tuning steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-windows", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-code", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a tiny smoke run: few steps, one seed")
    ap.add_argument("--out", default=None,
                    help="JSON file to write (default: results/structure.json; with --quick: nothing)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.eval_windows = 3, args.seeds[:1], 2
    out = args.out if args.out is not None else (None if args.quick else RESULTS / "structure.json")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    result = {
        "experiment": "HyLoRADA v2 structure priors (notebook 07)",
        "command": " ".join(["python -m lorakit.experiments.structure",
                             *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "seeds": args.seeds,
    }
    print("periodic series: v1 vs v2 + learnable period", flush=True)
    temporal_kw = {"seeds": args.seeds}
    if args.quick:
        temporal_kw.update(offsets=(0.0, 0.05), spans=(2,), steps=20)
    result["temporal"] = run_temporal(log=True, **temporal_kw)
    result["temporal"]["settings"] = {"steps": temporal_kw.get("steps", 300), "lr": 1e-2,
                                      "optimizer": "Adam, full batch", "window": "96 steps",
                                      "test": "8 windows after the training windows"}
    if not args.skip_code:
        print("code: TinyLM on adapt/train, v1 vs v2 (+ AST depth)", flush=True)
        data = code_data(train_bytes=20_000 if args.quick else None,
                         val_bytes=20_000 if args.quick else None)
        result["code"] = run_code(seeds=args.seeds, steps=args.steps,
                                  eval_windows=args.eval_windows, data=data, log=True)
        result["code"]["settings"] = {
            "steps": args.steps, "batch_size": 8, "context": 128, "lr": 5e-3,
            "optimizer": "AdamW, no weight decay, 10% warm-up, cosine to lr/10",
            "targets": list(ATTENTION), "rank": 8, "alpha": 16, "structure_dim": STRUCTURE_DIM,
            "depth_types": NUM_TYPES, "data": data["info"],
            "eval": f"{args.eval_windows} windows of 128 bytes spread over adapt/val; nats per byte"}
    result["wall_time_s"] = round(time.time() - t0, 1)
    if out is not None:
        from pathlib import Path
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {out} ({result['wall_time_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
