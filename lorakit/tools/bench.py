"""Performance suite: lorakit's layers against PEFT and a plain ``nn.Linear``.

    python -m lorakit.tools.bench --quick              # every method on tiny shapes, in seconds (CI)
    python -m lorakit.tools.bench --targets            # the target cases (4096², r = 16): ~8 min on 2 cores
    python -m lorakit.tools.bench                      # the full grid (long: see README)
    python -m lorakit.tools.bench --json out.json      # also write one JSON row per case
    python -m lorakit.tools.bench notebooks            # seconds per solution notebook (lorakit.tools.notebook_times)

What one *case* measures: a training step of one layer, forward and backward,
``y = layer(x); y.backward(g)``, with x of shape (batch, seq, in) *requiring grad* (as inside a
network, so every layer also computes dL/dx), a frozen base weight, the adapter's parameters
trainable, and the gradients set to None between steps (outside the timed region).

Time. All cases of one group (same shape, rank, tokens, dtype, device) are built in one
process and timed *interleaved*: after warm-up steps, each repetition runs every case once,
in an order rotated (and reversed every other time) from one repetition to the next, so drift
and cache effects hit every case alike. The table reports the median over the repetitions.
On CUDA each step is bracketed by ``torch.cuda.synchronize()``. On Linux every row also
records ``others_cpu``: the share of the machine's CPU time that *other* processes used while
that case's steps were timed (from /proc/stat and /proc/self/stat); on a shared machine it says
how far to trust the row (a few % is quiet; tens of % means the timing was disturbed).

Peak memory (``peak_mb``): the memory a step allocates on top of what exists before it
(weights, x, g): activations, temporaries, gradients.

* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
  ``memory_allocated()`` before the step.
* CPU (Linux): ``tracemalloc`` does not see torch's allocations and ``ru_maxrss`` cannot be
  reset. So each group's memory is measured in a fresh process (``python -m lorakit.tools.bench
  _memory_worker SPEC``, started by the suite) that first fixes glibc's mmap threshold at 64 KiB
  (``mallopt``: every tensor of 64 KiB or more is then its own mapping, returned to the OS the
  moment it is freed), builds the group, runs one warm-up step per case, then per case resets
  the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``) and reports VmHWM − VmRSS
  around one step (the minimum of two): the resident high-water mark of that step. Not in the
  timing process, because the fixed threshold makes every large allocation a fresh mapping
  whose page faults would be timed too. Resolution: pages, and the kernel batches its RSS
  counters per CPU, so values below about 1 MB (the quick mode's) are rough. Elsewhere (macOS,
  Windows) ``peak_mb`` is null.

Each case has a *peer* (``PEERS``): lorakit's LoRA/DoRA against PEFT's, PEFT's and the merged
layers against the frozen ``nn.Linear``, a control (a second, identical ``nn.Linear``: an A/A
test whose overhead is the group's noise floor) against the first, bilinear/RSS against lorakit's LoRA, HyLoRADA against
lorakit's DoRA. ``ratio`` = median time ÷ the peer's; ``overhead`` = median time ÷ the
nn.Linear's − 1; ``extra_peak_mb`` = peak_mb − the nn.Linear's.

Targets. lorakit's performance targets (README.md, "Benchmarks") are stated for one layer of
4096 × 4096, r = 16, at 512 and 4096 tokens, float32 on the CPU (``TARGET_GROUP``). The
``targets`` section of the JSON makes the same comparisons in every group that has the cases
they compare; ``met`` says whether the comparison holds there, and ``official`` marks the
groups the targets are stated for. Only those are judged: the printed table says met / NOT MET
for them, "(yes)" / "(no)" for the same comparison elsewhere (information, not a verdict), and
"not judged" in the quick mode, whose tiny shapes only show that every check runs
(:func:`verdict`, :func:`targets_legend`).
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..layers.base import spec_of
from ..layers.registry import FAMILIES, family
from ..provenance import cpu_model

# --------------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------------
LINEAR = ("linear", "torch")
# a second nn.Linear, identical to the first: its "overhead" is the group's noise floor (an
# A/A test), the size of difference the timing cannot resolve
CONTROL = ("linear_control", "torch")
# (method, implementation) -> its peer (method, implementation); None: the reference itself.
# Each lorakit family's peer is the one it declares (ADAPTER.bench_peer, lorakit.layers.registry).
PEERS: dict[tuple[str, str], tuple[str, str] | None] = {
    LINEAR: None,
    CONTROL: LINEAR,
    ("lora", "peft"): LINEAR,
    ("dora", "peft"): LINEAR,
    **{(spec_of(cls).name, "lorakit"): spec_of(cls).bench_peer for cls in FAMILIES},
    ("lora_merged", "lorakit"): LINEAR,
    ("lora_merged", "peft"): LINEAR,
    ("dora_merged", "lorakit"): LINEAR,
    ("dora_merged", "peft"): LINEAR,
}
ALL_CASES = tuple(PEERS)
TARGET_CASES = (LINEAR, CONTROL, ("lora", "lorakit"), ("lora", "peft"), ("dora", "lorakit"),
                ("dora", "peft"), ("lora_merged", "lorakit"), ("dora_merged", "lorakit"))

COND_DIM = 8         # length of p for the conditioned layers (ADAPTER.condition == "p")
STRUCTURE_DIM = 32   # length of the per-position prior (ADAPTER.condition == "structure_prior")
SIZES = {"cond_dim": COND_DIM, "structure_dim": STRUCTURE_DIM}
SEQ = 512            # tokens are laid out as (tokens // SEQ, SEQ) when tokens > SEQ

# (in, out) shapes, ranks, tokens of each mode; targets: the cases the performance targets compare
MODES: dict[str, dict[str, Any]] = {
    # quick: one thread, so that a busy CI machine does not turn OpenMP's waits into seconds
    "quick": {"shapes": [(128, 128), (128, 192)], "ranks": [4], "tokens": [128], "reps": 3,
              "budget": 0.0, "warmup": 1, "cases": ALL_CASES, "threads": 1},
    "targets": {"shapes": [(4096, 4096)], "ranks": [16], "tokens": [512, 4096], "reps": 15,
                "budget": 20.0, "warmup": 2, "cases": TARGET_CASES},
    "full": {"shapes": [(1024, 1024), (4096, 4096), (4096, 11008)], "ranks": [8, 16, 64],
             "tokens": [512, 4096], "reps": 5, "budget": 2.0, "warmup": 1, "cases": ALL_CASES},
}
# the group the performance targets are stated for (README.md, "Benchmarks")
TARGET_GROUP = {"in_features": 4096, "out_features": 4096, "rank": 16, "tokens": (512, 4096),
                "dtype": "float32", "device": "cpu"}
TARGETS_STATED_FOR = "one layer of 4096 x 4096, r = 16, at 512 and 4096 tokens, float32 on the CPU"


def _has_peft() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def _peft_linear(base: nn.Linear, rank: int, alpha: float, dora: bool) -> nn.Module:
    """PEFT's own LoRA/DoRA ``Linear`` layer around ``base`` (the layer get_peft_model builds)."""
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLinear

    cfg = LoraConfig(r=rank, lora_alpha=alpha, use_dora=dora)
    layer = PeftLinear(base, "default", cfg, r=rank, lora_alpha=alpha, use_dora=dora)
    w = base.weight
    layer.to(device=w.device, dtype=w.dtype)
    for name, p in layer.named_parameters():
        p.requires_grad_("base_layer" not in name)
    with torch.no_grad():     # a trained adapter: B != 0 (no path can shortcut a zero B)
        layer.lora_B["default"].weight.normal_(0, 0.02)
    return layer


@torch.no_grad()
def _trained(layer: nn.Module) -> nn.Module:
    """A trained-looking adapter: every zero-initialised trainable tensor (B, v2's w) drawn
    from N(0, 0.02²), so no path can shortcut a zero update."""
    for p in layer.parameters():
        if p.requires_grad and not p.any():
            p.normal_(0, 0.02)
    return layer


@dataclass
class Built:
    """One case, ready to step: the module and how to call it on the group's inputs."""
    key: tuple[str, str]
    module: nn.Module
    call: Callable[[nn.Module, dict], torch.Tensor]


def build_case(key: tuple[str, str], base: nn.Linear, rank: int) -> Built:
    """A fresh copy of ``base`` wrapped as ``key`` = (method, implementation); alpha = 2 r."""
    method, impl = key
    alpha = 2.0 * rank
    b = copy.deepcopy(base)
    x_only = lambda m, inp: m(inp["x"])  # noqa: E731
    if key in (LINEAR, CONTROL):
        return Built(key, b, x_only)
    if impl == "peft":
        layer = _peft_linear(b, rank, alpha, dora=method.startswith("dora"))
        if method.endswith("_merged"):
            layer.merge()
        return Built(key, layer, x_only)
    merged = method.endswith("_merged")
    cls = family(method.removesuffix("_merged") if merged else method)
    spec = spec_of(cls)
    layer = _trained(cls(b, rank=rank, alpha=alpha, **{k: SIZES[k] for k in spec.sizes}))
    if merged:
        layer.merge()
    if spec.condition == "p":
        return Built(key, layer, lambda m, inp: m(inp["x"], inp["p"]))
    if spec.condition == "structure_prior":
        return Built(key, layer, lambda m, inp: m(inp["x"], inp["prior"]))
    return Built(key, layer, x_only)


def make_inputs(in_features: int, out_features: int, tokens: int, dtype: torch.dtype,
                device: torch.device, seed: int = 0) -> dict:
    """x (batch, seq, in) requiring grad, the upstream gradient g, p and the v2 prior."""
    seq = min(tokens, SEQ)
    if tokens % seq:
        raise ValueError(f"tokens must be <= {SEQ} or a multiple of it, got {tokens}")
    batch = tokens // seq
    gen = torch.Generator().manual_seed(seed)
    f = {"dtype": dtype, "device": device}
    return {
        "x": torch.randn(batch, seq, in_features, generator=gen).to(**f).requires_grad_(True),
        "g": torch.randn(batch, seq, out_features, generator=gen).to(**f),
        "p": torch.randn(batch, COND_DIM, generator=gen).to(**f),
        "prior": torch.randn(batch, seq, STRUCTURE_DIM, generator=gen).to(**f),
        "batch": batch,
    }


def _step(built: Built, inputs: dict) -> None:
    """One training step of one layer: forward, backward; then drop every gradient."""
    y = built.call(built.module, inputs)
    y.backward(inputs["g"])
    del y
    inputs["x"].grad = None
    for p in built.module.parameters():
        p.grad = None


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(cases: list[Built], inputs: dict, device: torch.device, reps: int,
                     warmup: int, budget_s: float = 0.0,
                     max_reps: int = 60) -> dict[tuple[str, str], list[float]]:
    """Seconds per step of every case: interleaved repetitions after ``warmup`` steps each.

    At least ``reps`` repetitions; more (up to ``max_reps``) while each case's timed steps
    stay within about ``budget_s`` seconds, judged from the last warm-up round, so that fast
    cases get enough repetitions for a steady median.
    """
    round_s = 0.0
    for _ in range(max(warmup, 1 if budget_s else 0)):
        start = time.perf_counter()
        for c in cases:
            _step(c, inputs)
        _sync(device)
        round_s = time.perf_counter() - start
    n = len(cases)
    if budget_s and round_s > 0:
        reps = max(reps, min(max_reps, int(budget_s * n / round_s)))
    times: dict[tuple[str, str], list[float]] = {c.key: [] for c in cases}
    others: dict[tuple[str, str], list[float]] = {c.key: [] for c in cases}
    for i in range(reps):
        order = cases[i % n:] + cases[:i % n]          # rotate: every case in every slot
        for c in (order if i % 2 == 0 else order[::-1]):
            _sync(device)
            busy0 = _cpu_ticks()
            start = time.perf_counter()
            _step(c, inputs)
            _sync(device)
            times[c.key].append(time.perf_counter() - start)
            busy1 = _cpu_ticks()
            if busy0 and busy1:
                others[c.key].append(max(0, (busy1[0] - busy0[0]) - (busy1[1] - busy0[1])))
    OTHERS_CPU.clear()
    for key, ticks in others.items():      # share of the machine's CPU time other processes used
        if ticks:
            capacity = sum(times[key]) * _TICKS_PER_S * (os.cpu_count() or 1)
            # fewer than 100 ticks of capacity: too coarse to say anything (None)
            OTHERS_CPU[key] = min(1.0, sum(ticks) / capacity) if capacity >= 100 else None
    return times


# other processes' share of the CPUs during each case's timed steps (Linux; see _cpu_ticks)
OTHERS_CPU: dict[tuple[str, str], float | None] = {}
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of the whole machine, ticks of this process) from /proc; None elsewhere.

    Their difference over a step is the CPU time other processes took meanwhile: a measure of
    how much the timing was disturbed (resolution 1/CLK_TCK, 10 ms).
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return user + nice + system + irq + softirq + steal, int(own[11]) + int(own[12])
    except (OSError, ValueError, IndexError):
        return None


_LIBC = None


def cpu_memory_method() -> str | None:
    """Set up the CPU peak-memory measurement (see the module docstring); None: unavailable."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return None
    try:
        if _LIBC is None:
            libc = ctypes.CDLL("libc.so.6")
            if libc.mallopt(-3, 1 << 16) != 1:          # M_MMAP_THRESHOLD = 64 KiB
                return None
            _LIBC = libc
        _reset_hwm()
        _proc_status("VmHWM")
    except (OSError, AttributeError, ValueError):
        return None
    return ("VmHWM - VmRSS around one step (peak RSS reset via /proc/self/clear_refs; glibc "
            "mmap threshold 64 KiB)")


def _cpu_memory_available() -> str | None:
    """The CPU memory method's description when this platform has it (nothing is changed here)."""
    if not sys.platform.startswith("linux") or not os.access("/proc/self/clear_refs", os.W_OK):
        return None
    return ("VmHWM - VmRSS around one step, in a fresh process per group (peak RSS reset via "
            "/proc/self/clear_refs; glibc mmap threshold fixed at 64 KiB with mallopt)")


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if m is None:
        raise ValueError(f"no {field} in /proc/self/status")
    return int(m.group(1)) * 1024


def peak_memory(case: Built, inputs: dict, device: torch.device, tries: int = 2) -> float | None:
    """MB one step allocates on top of what exists before it (minimum over ``tries``)."""
    best = math.inf
    for _ in range(tries):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            _step(case, inputs)
            torch.cuda.synchronize(device)
            extra = torch.cuda.max_memory_allocated(device) - before
        elif _LIBC is not None:
            _reset_hwm()
            before = _proc_status("VmRSS")
            _step(case, inputs)
            extra = _proc_status("VmHWM") - before
        else:
            return None
        best = min(best, extra)
    return max(best, 0) / 2**20


# --------------------------------------------------------------------------------------------
# one group, the grid, the derived columns
# --------------------------------------------------------------------------------------------
def run_group(in_features: int, out_features: int, rank: int, tokens: int, dtype: torch.dtype,
              device: torch.device, keys: tuple, reps: int, warmup: int, memory: bool,
              seed: int = 0, defer_cpu_memory: bool = False, budget_s: float = 0.0) -> list[dict]:
    """Time one group's cases interleaved (this process), then measure their peak memory.

    ``defer_cpu_memory``: leave ``peak_mb`` of a CPU group None and ``_spec`` in the rows, for
    one memory worker to measure several groups later (``measure_cpu_peaks``).
    """
    cases, inputs = _build_group(in_features, out_features, rank, tokens, dtype, device, keys,
                                 seed)
    times = time_interleaved(cases, inputs, device, reps, warmup, budget_s)
    peaks: dict[tuple[str, str], float | None] = {c.key: None for c in cases}
    if memory and device.type == "cuda":
        gc.collect()
        peaks = {c.key: peak_memory(c, inputs, device) for c in cases}
    batch = inputs["batch"]
    del cases, inputs
    gc.collect()
    rows = []
    for key, ts in times.items():
        rows.append({
            "method": key[0], "implementation": key[1],
            "shape": f"{in_features}x{out_features}", "in_features": in_features,
            "out_features": out_features, "rank": rank,
            "tokens": tokens, "batch": batch, "dtype": str(dtype).replace("torch.", ""),
            "device": device.type, "reps": len(ts),
            "median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3,
            "max_ms": max(ts) * 1e3, "times_ms": [round(t * 1e3, 3) for t in ts],
            "others_cpu": OTHERS_CPU.get(key),
            "peak_mb": peaks.get(key),
        })
    if memory and device.type == "cpu":
        spec = {"in": in_features, "out": out_features, "rank": rank, "tokens": tokens,
                "dtype": str(dtype).replace("torch.", ""), "keys": [list(k) for k in keys],
                "seed": seed, "threads": torch.get_num_threads()}
        if defer_cpu_memory:
            rows[0]["_spec"] = spec
            return add_ratios(rows)
        measure_cpu_peaks(rows, [spec])
    return add_ratios(rows)


def measure_cpu_peaks(rows: list[dict], specs: list[dict]) -> None:
    """Fill ``peak_mb`` of the rows of these CPU groups, measured by ONE fresh worker process.

    Not in the timing process: fixing glibc's mmap threshold (see the module docstring) makes
    every large allocation a fresh mapping whose page faults would be timed too.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "lorakit.tools.bench", MEMORY_WORKER, json.dumps(specs)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the memory worker failed:\n{proc.stderr[-3000:]}")
    found = {}
    for spec, peaks in zip(specs, json.loads(proc.stdout.strip().splitlines()[-1]), strict=False):
        for key, peak in peaks:
            found[(spec["in"], spec["out"], spec["rank"], spec["tokens"], spec["dtype"],
                   tuple(key))] = peak
    for r in rows:
        k = (r["in_features"], r["out_features"], r["rank"], r["tokens"], r["dtype"],
             (r["method"], r["implementation"]))
        if r["device"] == "cpu" and k in found:
            r["peak_mb"] = found[k]


def _build_group(in_features, out_features, rank, tokens, dtype, device, keys, seed):
    torch.manual_seed(seed)
    base = nn.Linear(in_features, out_features, device=device, dtype=dtype).requires_grad_(False)
    cases = [build_case(k, base, rank) for k in keys]
    return cases, make_inputs(in_features, out_features, tokens, dtype, device, seed)


MEMORY_WORKER = "_memory_worker"


def _memory_worker(specs_json: str) -> int:
    """In a fresh process: peak memory of every case of some CPU groups, as one JSON line."""
    usable = cpu_memory_method() is not None     # first: before any large allocation
    dev = torch.device("cpu")
    out = []
    for spec in json.loads(specs_json):
        torch.set_num_threads(spec["threads"])
        keys = tuple(tuple(k) for k in spec["keys"])
        cases, inputs = _build_group(spec["in"], spec["out"], spec["rank"], spec["tokens"],
                                     getattr(torch, spec["dtype"]), dev, keys, spec["seed"])
        for c in cases:                          # warm-up: lazy init, library buffers
            _step(c, inputs)
        gc.collect()
        out.append([[list(c.key), peak_memory(c, inputs, dev) if usable else None]
                    for c in cases])
        del cases, inputs
        gc.collect()
    print(json.dumps(out))
    return 0


def _group_key(row: dict) -> tuple:
    return (row["in_features"], row["out_features"], row["tokens"], row["dtype"], row["device"])


def add_ratios(rows: list[dict]) -> list[dict]:
    """Fill peer, ratio, overhead, extra_peak_mb from the rows of the same group.

    A group is one shape, rank, tokens, dtype and device: the cases timed together
    (interleaved). The nn.Linear row carries the rank of the group it was timed with.
    """
    def find(key, like):
        for r in rows:
            if (r["method"], r["implementation"]) == key and _group_key(r) == _group_key(like) \
                    and r["rank"] == like["rank"]:
                return r
        return None

    for row in rows:
        key = (row["method"], row["implementation"])
        peer_key = PEERS[key]
        peer = find(peer_key, row) if peer_key else None
        lin = find(LINEAR, row)
        row["peer"] = f"{peer_key[0]}/{peer_key[1]}" if peer_key else None
        row["ratio"] = row["median_ms"] / peer["median_ms"] if peer else None
        row["overhead"] = row["median_ms"] / lin["median_ms"] - 1 if lin else None
        row["extra_peak_mb"] = (row["peak_mb"] - lin["peak_mb"]
                                if lin and row["peak_mb"] is not None
                                and lin["peak_mb"] is not None else None)
        row["paired_ratio"] = _paired(row, peer)
        paired_lin = _paired(row, lin)
        row["paired_overhead"] = None if paired_lin is None else paired_lin - 1
    return rows


def _paired(row: dict, other: dict | None) -> float | None:
    """Median over repetitions of this case's time ÷ ``other``'s time in the SAME repetition.

    Both ran in the same round, seconds apart, so a slow phase of the machine (another VM,
    another process) hits both: on a noisy machine this estimates the time ratio more
    steadily than the ratio of the two medians.
    """
    if other is None or not row.get("times_ms") or \
            len(row["times_ms"]) != len(other.get("times_ms") or ()):
        return None
    return statistics.median(a / b for a, b in zip(row["times_ms"], other["times_ms"], strict=False))


def check_targets(rows: list[dict]) -> list[dict]:
    """The performance targets' comparisons, made in every group that has the cases they compare.

    ``met``: whether the comparison holds in that group. It is a verdict on the target only
    where ``official`` is true (the group of ``TARGET_GROUP``, the one the targets are stated
    for); see :func:`verdict`.

    Overheads and time ratios are the paired estimates (``paired_overhead``: the median over
    repetitions of time ÷ nn.Linear's time in the same repetition) where the rows have them,
    else the ratios of the medians; each target says which (``estimator``) and also gives the
    ratio-of-medians values (``*_of_medians``).
    """
    def ov(r):
        return r["overhead"] if r.get("paired_overhead") is None else r["paired_overhead"]

    out = []
    groups: dict[tuple, dict[tuple[str, str], dict]] = {}
    for r in rows:
        if (r["method"], r["implementation"]) in (LINEAR, CONTROL):
            continue
        gk = _group_key(r) + (r["rank"],)
        groups.setdefault(gk, {})[(r["method"], r["implementation"])] = r
    for (i, o, t, dt, dev, rank), g in groups.items():
        official = (i == TARGET_GROUP["in_features"] and o == TARGET_GROUP["out_features"]
                    and rank == TARGET_GROUP["rank"] and t in TARGET_GROUP["tokens"]
                    and dt == TARGET_GROUP["dtype"] and dev == TARGET_GROUP["device"])
        paired = all(r.get("paired_overhead") is not None for r in g.values())
        ctrl = next((r for r in rows if (r["method"], r["implementation"]) == CONTROL
                     and _group_key(r) == (i, o, t, dt, dev) and r["rank"] == rank), None)
        where = {"shape": f"{i}x{o}", "rank": rank, "tokens": t, "dtype": dt, "device": dev,
                 "official": official, "estimator": "paired" if paired else "medians",
                 "control_overhead": ov(ctrl) if ctrl else None}
        lk, pf = g.get(("lora", "lorakit")), g.get(("lora", "peft"))
        if lk and pf:
            out.append({**where, "target": "LoRA overhead <= 10% and <= PEFT LoRA's",
                        "lorakit_overhead": ov(lk), "peft_overhead": ov(pf),
                        "lorakit_overhead_of_medians": lk["overhead"],
                        "peft_overhead_of_medians": pf["overhead"],
                        "met": ov(lk) <= 0.10 and ov(lk) <= ov(pf)})
        lk, pf = g.get(("dora", "lorakit")), g.get(("dora", "peft"))
        if lk and pf:
            out.append({**where, "target": "DoRA overhead <= 0.5 x PEFT DoRA's",
                        "lorakit_overhead": ov(lk), "peft_overhead": ov(pf),
                        "lorakit_overhead_of_medians": lk["overhead"],
                        "peft_overhead_of_medians": pf["overhead"],
                        "met": ov(lk) <= 0.5 * ov(pf)})
            if lk["extra_peak_mb"] is not None and pf["extra_peak_mb"] is not None:
                out.append({**where,
                            "target": "DoRA extra peak memory <= 0.5 x PEFT DoRA's",
                            "lorakit_extra_peak_mb": lk["extra_peak_mb"],
                            "peft_extra_peak_mb": pf["extra_peak_mb"],
                            "met": lk["extra_peak_mb"] <= 0.5 * pf["extra_peak_mb"]})
        for m in ("lora_merged", "dora_merged"):
            r = g.get((m, "lorakit"))
            if r:
                out.append({**where, "target": f"{m} <= 1.02 x nn.Linear",
                            "time_ratio": ov(r) + 1, "time_ratio_of_medians": r["overhead"] + 1,
                            "met": ov(r) + 1 <= 1.02})
    return out


# --------------------------------------------------------------------------------------------
# printing and the command line
# --------------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[dict]) -> str:
    lines = []
    last = None
    for r in rows:
        head = (r["shape"], r["rank"], r["tokens"], r["dtype"], r["device"])
        if head != last:
            lines.append("")
            lines.append(f"{r['shape']}  r={r['rank']}  tokens={r['tokens']} "
                         f"({r['batch']}x{r['tokens'] // r['batch']})  {r['dtype']}  {r['device']}"
                         f"  ({r['reps']} reps)")
            lines.append(f"  {'case':26s} {'ms':>9s} {'overhead':>9s} {'paired':>7s} "
                         f"{'ratio':>7s}  {'peer':19s} {'peak MB':>8s} {'extra MB':>9s} "
                         f"{'others':>6s}")
            last = head
        case = f"{r['method']}/{r['implementation']}"
        lines.append(
            f"  {case:26s} {r['median_ms']:9.2f} "
            f"{_fmt(r['overhead'], '+9.1%'):>9s} {_fmt(r.get('paired_overhead'), '+7.1%'):>7s} "
            f"{_fmt(r['ratio'], '7.3f'):>7s}  "
            f"{r['peer'] or '':19s} {_fmt(r['peak_mb'], '8.2f'):>8s} "
            f"{_fmt(r['extra_peak_mb'], '+9.2f'):>9s} {_fmt(r.get('others_cpu'), '6.0%'):>6s}")
    return "\n".join(lines)


def verdict(t: dict, mode: str | None = None) -> str:
    """The verdict column of one row of :func:`check_targets`.

    A target is judged only in the group it is stated for (``official``): "met" or "NOT MET".
    Elsewhere the same comparison is reported as "(yes)" or "(no)", information rather than a
    verdict; in the quick mode as "not judged", since its tiny shapes say nothing about the
    targets (see :func:`targets_legend`).
    """
    if t["official"]:
        return "met" if t["met"] else "NOT MET"
    if mode == "quick":
        return "not judged"
    return "(yes)" if t["met"] else "(no)"


def targets_legend(targets: list[dict], mode: str | None = None) -> str:
    """The lines printed above the targets table: what is judged where, and how to read it."""
    lines = [f"targets: stated for {TARGETS_STATED_FOR}\n  (README.md, Benchmarks)."]
    if any(t["official"] for t in targets):
        lines.append("  Rows marked *: that layer, where the target is judged, met or NOT MET.")
    if any(not t["official"] for t in targets):
        if mode == "quick":
            lines.append(
                "  Not judged on the quick mode's tiny shapes: a step there takes a fraction of a "
                "millisecond,\n  mostly fixed per-call costs (Python, autograd), so its "
                "overheads say nothing about the\n  4096 x 4096 layer. The rows show that every "
                "comparison runs; python -m lorakit.tools.bench\n  --targets measures the group the "
                "targets are stated for and judges them.")
        else:
            lines.append("  Rows without *: the same comparison in a group the targets are not "
                         "stated for, (yes) or (no),\n  for information, not a verdict.")
    lines.append("  Times: the paired estimate [the ratio of the medians]. A/A: the overhead of a "
                 "second, identical\n  nn.Linear in the same group, i.e. the timing's noise.")
    return "\n".join(lines)


def format_targets(targets: list[dict], mode: str | None = None) -> str:
    lines = []
    for t in targets:
        a, b = _target_values(t)
        val = f"lorakit {a}  peft {b}" if b != "-" else a
        star = "*" if t["official"] else " "
        lines.append(f"{star} {t['shape']:>10s} r={t['rank']:<3d} T={t['tokens']:<5d} "
                     f"{t['dtype']:8s} {t['device']:4s} {t['target']:44s} {val:48s} "
                     f"{verdict(t, mode):10s}  A/A "
                     f"{_fmt(t.get('control_overhead'), '+.1%')}")
    return "\n".join(lines)


def _target_values(t: dict) -> tuple[str, str]:
    """(lorakit's value, PEFT's value or "-"): the paired estimate [the ratio of medians]."""
    if "lorakit_overhead" in t:
        return (f"{t['lorakit_overhead']:+.1%} [{t['lorakit_overhead_of_medians']:+.1%}]",
                f"{t['peft_overhead']:+.1%} [{t['peft_overhead_of_medians']:+.1%}]")
    if "lorakit_extra_peak_mb" in t:
        return f"{t['lorakit_extra_peak_mb']:+.0f} MB", f"{t['peft_extra_peak_mb']:+.0f} MB"
    return f"{t['time_ratio']:.3f} x [{t['time_ratio_of_medians']:.3f} x]", "-"


def markdown(result: dict) -> str:
    """The targets and the rows as Markdown tables (for the README)."""
    m = result["machine"]
    out = [f"Measured {m['date'][:10]} on {m['cpu']} ({m['torch_threads']} threads), torch "
           f"{m['torch']}, peft {m.get('peft')}; load average {m.get('loadavg_start')} at the "
           f"start, {m.get('loadavg_end')} at the end; medians of at least {result['reps']} "
           "interleaved repetitions per case (more for fast cases, see each row's `reps`).", ""]
    if result["targets"]:
        out += [f"The targets are stated for {TARGETS_STATED_FOR}. The met column judges "
                "them (yes or **no**) only in those groups; "
                + ("in the quick mode's tiny shapes it says not judged: a step there is mostly "
                   "fixed per-call costs, and the rows only show that every comparison runs."
                   if result.get("mode") == "quick" else
                   "in other groups it says, in parentheses, whether the same comparison holds "
                   "there, for information."),
                "",
                "Times: the paired estimate (median over repetitions of time ÷ the peer's time "
                "in the same repetition) [the ratio of the medians]. A/A: the overhead measured "
                "for a second, identical nn.Linear in the same group, i.e. the timing's noise.",
                "", "| shape | r | tokens | dtype | device | target | lorakit | PEFT | met | A/A |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for t in result["targets"]:
            a, b = _target_values(t)
            out.append(f"| {t['shape']} | {t['rank']} | {t['tokens']} | {t['dtype']} | "
                       f"{t['device']} | {t['target']} | {a} | {b} | "
                       f"{_markdown_verdict(t, result.get('mode'))} | "
                       f"{_fmt(t.get('control_overhead'), '+.1%')} |")
        out.append("")
    out += ["| shape | r | tokens | dtype | device | case | median ms | overhead | paired "
            "| ratio | peer | peak MB | extra MB | others' CPU |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        out.append(f"| {r['shape']} | {r['rank']} | {r['tokens']} | {r['dtype']} | "
                   f"{r['device']} | {r['method']}/{r['implementation']} | "
                   f"{r['median_ms']:.1f} | {_fmt(r['overhead'], '+.1%')} | "
                   f"{_fmt(r.get('paired_overhead'), '+.1%')} | "
                   f"{_fmt(r['ratio'], '.3f')} | {r['peer'] or '-'} | "
                   f"{_fmt(r['peak_mb'], '.1f')} | {_fmt(r['extra_peak_mb'], '+.1f')} | "
                   f"{_fmt(r.get('others_cpu'), '.0%')} |")
    return "\n".join(out) + "\n"


def _markdown_verdict(t: dict, mode: str | None) -> str:
    word = verdict(t, mode)
    return {"met": "yes", "NOT MET": "**no**"}.get(word, word)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info() -> dict:
    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import peft
        info["peft"] = peft.__version__
    except ImportError:
        info["peft"] = None
    return info


def _parse_shape(s: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)(?:[x:](\d+))?", s)
    if not m:
        raise argparse.ArgumentTypeError(f"a shape is IN or INxOUT, got {s!r}")
    i = int(m.group(1))
    return i, int(m.group(2) or i)


def _parse_case(s: str) -> tuple[str, str]:
    key = tuple(s.split("/", 1)) if "/" in s else (s, "lorakit")
    if key not in PEERS:
        raise argparse.ArgumentTypeError(
            f"unknown case {s!r}; known: {', '.join('/'.join(k) for k in PEERS)}")
    return key  # type: ignore[return-value]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m lorakit.tools.bench", description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny shapes, every case (CI)")
    mode.add_argument("--targets", action="store_true", help="the target cases only")
    ap.add_argument("--json", metavar="PATH", help="write the rows, targets and machine to PATH")
    ap.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown to PATH")
    ap.add_argument("--from-json", metavar="PATH",
                    help="measure nothing: print (and --markdown) the results saved in PATH")
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                    help="all (default): the CPU, and CUDA when present")
    ap.add_argument("--shapes", nargs="+", type=_parse_shape, help="IN or INxOUT")
    ap.add_argument("--ranks", nargs="+", type=int)
    ap.add_argument("--tokens", nargs="+", type=int, help=f"<= {SEQ} or multiples of {SEQ}")
    ap.add_argument("--cases", nargs="+", type=_parse_case,
                    help="method/implementation, e.g. lora/peft dora (= dora/lorakit)")
    ap.add_argument("--cuda-dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--cpu-dtypes", nargs="+", default=["float32"])
    ap.add_argument("--reps", type=int, help="at least this many interleaved repetitions")
    ap.add_argument("--budget", type=float,
                    help="more repetitions while each case's timed steps take at most about "
                         "this many seconds (default: 10 with --targets, 2 for the grid)")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    ap.add_argument("--threads", type=int,
                    help="torch.set_num_threads (default: torch's; 1 with --quick)")
    return ap.parse_args(argv)


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    mode = "quick" if args.quick else "targets" if args.targets else "full"
    cfg = MODES[mode]
    threads = args.threads or cfg.get("threads")
    if threads:
        torch.set_num_threads(threads)
    mem_method = _cpu_memory_available() if not args.no_memory else None
    keys = tuple(args.cases or cfg["cases"])
    if not _has_peft():
        dropped = [k for k in keys if k[1] == "peft"]
        keys = tuple(k for k in keys if k[1] != "peft")
        if dropped:
            log("peft is not installed: the PEFT cases are skipped")
    if LINEAR not in keys:
        keys = (LINEAR,) + keys
    devices = []
    if args.device in ("cpu", "all"):
        devices += [(torch.device("cpu"), d) for d in args.cpu_dtypes]
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices += [(torch.device("cuda"), d) for d in args.cuda_dtypes]
    elif args.device == "cuda":
        raise SystemExit("--device cuda: no CUDA device is available")
    shapes = args.shapes or cfg["shapes"]
    ranks = args.ranks or cfg["ranks"]
    tokens = args.tokens or cfg["tokens"]
    reps = args.reps or cfg["reps"]
    budget = cfg["budget"] if args.budget is None else args.budget
    warmup = cfg["warmup"] if args.warmup is None else args.warmup
    info = machine_info()
    info["loadavg_start"] = _loadavg()
    log(f"lorakit.tools.bench {mode}: torch {info['torch']}, {info['cpu']}, "
        f"{info['torch_threads']} threads, load {info['loadavg_start']}"
        + (f", {info['cuda']}" if info["cuda"] else ", no CUDA device"))
    rows: list[dict] = []
    t0 = time.perf_counter()
    for dev, dt in devices:
        dtype = getattr(torch, dt)
        for (i, o) in shapes:
            for t in tokens:
                for r in ranks:
                    group = run_group(i, o, r, t, dtype, dev, keys, reps, warmup,
                                      memory=(mem_method is not None or dev.type == "cuda")
                                      and not args.no_memory, defer_cpu_memory=mode == "quick",
                                      budget_s=budget)
                    rows += group
                    if mode != "quick":
                        log(format_table(group).lstrip("\n"))
                        if args.json:    # a long run keeps what it has measured so far
                            _write_json(args.json, {"mode": mode, "partial": True,
                                                    "machine": info, "rows": rows})
    specs = [r.pop("_spec") for r in rows if "_spec" in r]
    if specs:               # quick: one memory worker for every group (a process start is slow)
        measure_cpu_peaks(rows, specs)
        add_ratios(rows)
    if mode == "quick":
        log(format_table(rows).lstrip("\n"))
    targets = check_targets(rows)
    info["loadavg_end"] = _loadavg()
    info["seconds"] = round(time.perf_counter() - t0, 1)
    memory_desc = {
        "cpu": mem_method or "not measured",
        "cuda": "torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus "
                "memory_allocated() before the step",
    }
    log("\n" + targets_legend(targets, mode))
    log(format_targets(targets, mode) or "  (no group has the cases the targets compare)")
    log(f"\n{len(rows)} cases in {info['seconds']} s; load average {info['loadavg_start']} -> "
        f"{info['loadavg_end']}")
    result = {"mode": mode, "machine": info, "reps": reps, "budget_s": budget, "warmup": warmup,
              "memory_method": memory_desc, "rows": rows, "targets": targets}
    if args.json:
        _write_json(args.json, result)
        log(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(result))
        log(f"wrote {args.markdown}")
    return result


def _write_json(path: str, result: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [MEMORY_WORKER]:
        return _memory_worker(argv[1])
    if argv[:1] == ["notebooks"]:
        from . import notebook_times
        return notebook_times.main(argv[1:])
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            result = json.load(f)
        print(format_table(result["rows"]).lstrip("\n"))
        print("\n" + targets_legend(result["targets"], result.get("mode")))
        print(format_targets(result["targets"], result.get("mode"))
              or "  (no group has the cases the targets compare)")
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(markdown(result))
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
