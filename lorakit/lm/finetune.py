"""Fine-tune the shipped TinyLM with LoRA: ``train``, the one training loop of the notebooks and
the experiments (sweeps, replication, structure), and the LoRA run that notebook 02 and the
sweeps share.

    model = lora_model(["q_proj", "v_proj"], rank=8, alpha=16, seed=0)   # pretrained + adapters
    losses = train_lm(model, corpus.load_tokens("adapt", "train"), steps=100, progress=True)
    perplexity(model, corpus.load_tokens("adapt", "val"))

Everything is seeded: the adapters' random init (``seed``), and the batches (``seed``), so a run
is reproducible on one machine.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
from torch import nn

from ..layers import LoRALinear
from ..tuning import inject_adapters, mark_only_adapters_trainable
from . import corpus
from .tinylm import TinyLM, evaluate, lm_loss, load_pretrained

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
TARGETS = {
    "q, v": ("q_proj", "v_proj"),
    "attention (q, k, v, o)": ATTENTION,
    "all linear": "all-linear",       # every nn.Linear but the lm_head, as PEFT's "all-linear"
}


def lora_model(target_modules: str | Sequence[str] = ATTENTION, rank: int = 8, alpha: float = 16,
               seed: int = 0, device=None, adapter_cls: type = LoRALinear, **adapter_kwargs) -> TinyLM:
    """A fresh copy of the shipped TinyLM with adapters on ``target_modules``, only they train."""
    model = load_pretrained(device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapters(model, adapter_cls, target_modules=list(target_modules)
                        if not isinstance(target_modules, str) else target_modules,
                        rank=rank, alpha=alpha, **adapter_kwargs)
    mark_only_adapters_trainable(model)
    return model


def lr_schedule(step: int, steps: int, lr: float) -> float:
    """10 % linear warm-up, then cosine decay to lr/10."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr / 10 + 0.45 * lr * (1 + math.cos(math.pi * progress))


def train(model: nn.Module, next_batch: Callable[[], tuple], loss_fn: Callable[..., torch.Tensor],
          steps: int, lr: float, *, groups: list[dict] | None = None, weight_decay: float = 0.0,
          progress: bool = False, desc: str | None = None,
          step_times: list[float] | None = None) -> list[float]:
    """The training loop of the notebooks and the experiments; returns every step's loss.

    AdamW on ``groups`` (optimiser parameter groups, each with its own "lr", e.g. LoRA+'s) or
    on all trainable parameters at ``lr``; every group follows ``lr_schedule`` from its own
    lr. Each step: ``loss_fn(model, *next_batch())``, backward, step. ``progress=True`` shows a
    tqdm bar (a widget in Jupyter) with the running loss; ``step_times`` collects the seconds
    of each step's forward, backward and update.
    """
    if groups is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters: inject adapters first")
        groups = [{"params": params, "lr": lr}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(bar, desc=desc, leave=True)
    losses = []
    model.train()
    for step in bar:
        for group, base in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = lr_schedule(step, steps, base)
        batch = next_batch()
        t = time.perf_counter()
        loss = loss_fn(model, *batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step_times is not None:
            step_times.append(time.perf_counter() - t)
        losses.append(loss.item())
        if progress and (step % 5 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{sum(losses[-5:]) / len(losses[-5:]):.3f}")
    model.eval()
    return losses


def train_lm(model: nn.Module, tokens: torch.Tensor, steps: int, batch_size: int = 8,
             context: int = 128, lr: float = 5e-3, seed: int = 0, progress: bool = False,
             desc: str | None = None, weight_decay: float = 0.0) -> list[float]:
    """``train`` on random windows of ``tokens`` (drawn from ``seed``), next-byte loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: inject adapters first")
    gen, device = torch.Generator().manual_seed(seed), params[0].device
    return train(model, lambda: corpus.get_batch(tokens, batch_size, context, gen, device=device),
                 lm_loss, steps, lr, weight_decay=weight_decay, progress=progress, desc=desc)


def run(target_modules=ATTENTION, rank: int = 8, alpha: float = 16, *, train_tokens: torch.Tensor,
        eval_sets: dict[str, torch.Tensor], steps: int = 100, batch_size: int = 8,
        context: int = 128, lr: float = 5e-3, seed: int = 0, eval_windows: int = 64,
        device=None, progress: bool = False, desc: str | None = None) -> dict:
    """One LoRA fine-tuning run: build, train, evaluate. Returns a JSON-ready record."""
    t0 = time.time()
    model = lora_model(target_modules, rank=rank, alpha=alpha, seed=seed, device=device)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    losses = train_lm(model, train_tokens, steps, batch_size, context, lr, seed, progress, desc)
    record = {"targets": target_modules if isinstance(target_modules, str) else list(target_modules),
              "rank": rank, "alpha": alpha, "scaling": alpha / rank, "seed": seed, "steps": steps,
              "trainable": n_train, "final_train_loss": sum(losses[-10:]) / len(losses[-10:]),
              "losses": [round(v, 4) for v in losses]}
    for name, tokens in eval_sets.items():
        record[f"{name}_ppl"] = evaluate(model, tokens, context, max_windows=eval_windows)["perplexity"]
    record["seconds"] = round(time.time() - t0, 2)
    return record
