"""Pretrain the shipped TinyLM on the standard library's "pretrain" domain (a repository tool).

    python -m lorakit.lm.pretrain                 # the shipped run: about 10-15 min on 2 CPU cores
    python -m lorakit.lm.pretrain --steps 20 --out /tmp/tinylm   # a quick smoke run elsewhere

Writes ``tinylm.safetensors`` (float16 weights) and ``tinylm.json`` (the card: config, date,
machine, seeds, data split and fingerprints, losses and perplexities, wall time) to ``--out``
(default: ``lorakit/lm/assets``). Deterministic for a given seed, thread count and training data.

The training split, pretrain/train, is read from this interpreter's standard library; the
evaluation splits (pretrain/val, adapt/val) ship with lorakit (``lorakit.lm.corpus``). The shipped
model was trained on CPython 3.11.7's files: on another Python the command says that its
training data differ from those (``data_check``), and the run is then a different model.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from ..provenance import machine
from . import corpus
from .tinylm import ASSETS, TinyLM, TinyLMConfig, config_dict, evaluate, lm_loss


def lr_at(step: int, steps: int, peak: float, warmup: int, floor: float) -> float:
    """Linear warm-up, then cosine decay from ``peak`` to ``floor``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def reproduce_command(argv: list[str]) -> str:
    """The command line that reproduces this run (``--out`` says where, not what: left out)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            kept.append(a)
    return " ".join(["python -m lorakit.lm.pretrain"] + kept)


def data_check() -> tuple[bool, str]:
    """(same, message): is pretrain/train here the data the shipped TinyLM was trained on?"""
    here = corpus.fingerprint("pretrain", "train")
    shipped = corpus.shipped_fingerprints()["pretrain/train"]
    where = corpus.source_of("pretrain", "train")
    if here == shipped:
        return True, f"pretrain/train ({where}) is the shipped model's training data"
    return False, (
        f"WARNING: pretrain/train in {where} ({here['files']} files, {here['bytes']:,} bytes, "
        f"sha256 {here['sha256'][:12]}) differs from the data the shipped TinyLM was trained on "
        f"({shipped['files']} files, {shipped['bytes']:,} bytes, sha256 {shipped['sha256'][:12]}: "
        "CPython 3.11.7's standard library). This run trains on different data: its weights and "
        "numbers will differ from the shipped model's, and the saved experiments were run on that one.")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (1 keeps the run reproducible across machines)")
    ap.add_argument("--eval-windows", type=int, default=256)
    ap.add_argument("--out", type=Path, default=ASSETS)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    same_data, message = data_check()
    print(message, file=sys.stdout if same_data else sys.stderr, flush=True)
    train = corpus.load_tokens("pretrain", "train")
    val = corpus.load_tokens("pretrain", "val")
    adapt_val = corpus.load_tokens("adapt", "val")
    print(f"pretrain/train {len(train):,} bytes, pretrain/val {len(val):,}, adapt/val {len(adapt_val):,}")

    cfg = TinyLMConfig(context=args.context)
    model = TinyLM(cfg)
    print(f"TinyLM: {model.num_parameters():,} parameters")
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    data_gen = torch.Generator().manual_seed(args.seed + 1)
    warmup, floor = max(1, args.steps // 20), args.lr / 10
    history, recent = [], []
    model.train()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup, floor)
        x, y = corpus.get_batch(train, args.batch_size, args.context, data_gen)
        loss = lm_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent = (recent + [loss.item()])[-50:]
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            ev = evaluate(model, val, args.context, max_windows=min(64, args.eval_windows))  # spread evenly
            history.append({"step": step + 1, "train_loss": sum(recent) / len(recent),
                            "val_loss": ev["loss"], "elapsed_s": round(time.time() - t0, 1)})
            print(f"step {step + 1:5d}  train {history[-1]['train_loss']:.3f}  "
                  f"val {ev['loss']:.3f} (ppl {ev['perplexity']:.2f})  {time.time() - t0:.0f} s", flush=True)

    # Ship float16 weights, and report the metrics of exactly what ships.
    model = model.half().float().eval()
    ev_val = evaluate(model, val, args.context, max_windows=args.eval_windows)
    ev_adapt = evaluate(model, adapt_val, args.context, max_windows=args.eval_windows)
    ev_train = evaluate(model, train, args.context, max_windows=args.eval_windows)
    wall = time.time() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "tinylm.safetensors"), metadata={"format": "pt"})
    os.chmod(args.out / "tinylm.safetensors", 0o644)
    card = {
        "model": "TinyLM (Llama-style: RMSNorm, rotary positions, causal GQA attention, SwiGLU)",
        "command": reproduce_command(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": config_dict(cfg),
        "parameters": model.num_parameters(),
        "weights_dtype": "float16",
        "seeds": {"torch.manual_seed (init)": args.seed, "batch sampler generator": args.seed + 1},
        "data": {
            "source": "Python standard library source files (lorakit.lm.corpus): pretrain/train from "
                      "the interpreter's stdlib, the other splits from lorakit/lm/assets/corpus.tar.xz",
            "tokenizer": "bytes (vocab 256)",
            "pretrain": {"packages": list(corpus.PRETRAIN_PACKAGES),
                         "modules": "every top-level module except the held-out and excluded ones"},
            "held_out_of_pretraining": {"packages": list(corpus.HELD_OUT_PACKAGES),
                                        "modules": list(corpus.HELD_OUT_MODULES)},
            "adapt": {"test_subjects": list(corpus.ADAPT_TEST_SUBJECTS),
                      "files": "test/test_<subject>*.py and test/test_<subject>*/**.py"},
            "split": f"val when crc32(relative path) % {corpus.VAL_EVERY} == 0, else train",
            "fingerprints": {f"{d}/{s}": corpus.fingerprint(d, s)
                             for d in corpus.DOMAINS for s in corpus.SPLITS},
        },
        "training": {"steps": args.steps, "batch_size": args.batch_size, "context": args.context,
                     "tokens_seen": args.steps * args.batch_size * args.context,
                     "optimizer": "AdamW(betas=(0.9, 0.95), weight_decay=0.1 on matrices)",
                     "lr": f"peak {args.lr}, linear warm-up {warmup} steps, cosine to {floor}",
                     "grad_clip": 1.0},
        "results": {
            "uniform_baseline_perplexity": corpus.VOCAB_SIZE,
            "final_train_loss_last50_steps": sum(recent) / max(1, len(recent)),
            "pretrain_train": ev_train, "pretrain_val": ev_val, "adapt_val": ev_adapt,
            "eval": f"{args.eval_windows} windows of {args.context} bytes spread evenly over each "
                    "split, float16 weights as shipped; loss in nats per byte",
        },
        "history": history,
        "wall_time_s": round(wall, 1),
    }
    (args.out / "tinylm.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(f"pretrain/val ppl {ev_val['perplexity']:.2f}, adapt/val ppl {ev_adapt['perplexity']:.2f}, "
          f"wall {wall:.0f} s -> {args.out}")
    return card


if __name__ == "__main__":
    main()
