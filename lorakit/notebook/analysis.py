"""Cost model of a LoRA linear layer: trainable parameters, FLOPs and extra memory.

Storage follows ``nn.Linear`` everywhere::

    W : (d_out, d_in)      frozen base weight
    A : (r, d_in)          LoRA down-projection
    B : (d_out, r)         LoRA up-projection
    x : (T, d_in)          T tokens (batch and sequence flattened)
    h = x Wᵀ + s · x (BA)ᵀ : (T, d_out)

Conventions used by every formula here:

* **FLOPs**: one multiply-add counts as **2 FLOPs**, so a ``(m, k) @ (k, n)`` matmul costs
  ``2·m·k·n`` (the convention of ``torch.utils.flop_counter``). The scaling by ``s`` and the
  addition of the adapter output to the base output (``T·d_out`` each, the same for both
  LoRA orders) and any bias are not counted.
* **params**: trainable parameters, weights only (no bias).
* **extra memory**: elements of the intermediates the adapter path creates in the forward
  pass *beyond* the base layer's own ``(T, d_out)`` output, times ``bytes_per_el``.

The formulas are plain integer arithmetic; the per-family parameter counts are the ones each
layer declares (``ADAPTER.trainable_params``, read through ``lorakit.layers.registry``).
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from ..validate import check_int

FULL = "full fine-tuning"
LORA_BA_X = "LoRA, (BA)x"
LORA_B_AX = "LoRA, B(Ax)"
STRATEGIES: tuple[str, ...] = (FULL, LORA_BA_X, LORA_B_AX)


def _check_dims(d_in: int, d_out: int, rank: int, tokens: int | None = None) -> None:
    """Validate layer sizes: positive ints and 1 <= rank <= min(d_in, d_out)."""
    check_int("d_in", d_in)
    check_int("d_out", d_out)
    check_int("rank", rank)
    if tokens is not None:
        check_int("tokens", tokens)
    if rank > min(d_in, d_out):
        raise ValueError(
            f"rank must be <= min(d_in, d_out) = {min(d_in, d_out)}, got rank={rank}"
        )


def base_flops(d_in: int, d_out: int, tokens: int) -> int:
    """FLOPs of the frozen base matmul x Wᵀ: 2·T·d_in·d_out."""
    return 2 * tokens * d_in * d_out  # (T, d_in) @ (d_in, d_out)


def ba_x_adapter_flops(d_in: int, d_out: int, rank: int, tokens: int) -> int:
    """Adapter FLOPs of the naive order (BA)x: 2·d_out·r·d_in + 2·T·d_in·d_out.

    Forming BA is a (d_out, r) @ (r, d_in) matmul; applying it is (T, d_in) @ (d_in, d_out).
    """
    form = 2 * d_out * rank * d_in  # B @ A -> (d_out, d_in)
    apply = 2 * tokens * d_in * d_out  # x @ (BA)ᵀ -> (T, d_out)
    return form + apply


def b_ax_adapter_flops(d_in: int, d_out: int, rank: int, tokens: int) -> int:
    """Adapter FLOPs of the LoRA order B(Ax): 2·T·r·(d_in + d_out).

    x Aᵀ is (T, d_in) @ (d_in, r); then (T, r) @ (r, d_out).
    """
    return 2 * tokens * rank * d_in + 2 * tokens * rank * d_out


def lora_costs(
    d_in: int, d_out: int, rank: int, tokens: int, bytes_per_el: int = 4
) -> dict[str, dict[str, int]]:
    """Params, forward FLOPs and extra forward memory of three ways to adapt one linear layer.

    With T = tokens, r = rank, and a multiply-add counted as 2 FLOPs:

    * full fine-tuning: params d_in·d_out; flops base; extra memory 0
    * LoRA, (BA)x:      params r·(d_in + d_out); flops base + 2·d_out·r·d_in + 2·T·d_in·d_out;
      extra memory d_out·d_in (the matrix BA) + T·d_out (its output)
    * LoRA, B(Ax):      params r·(d_in + d_out); flops base + 2·T·r·(d_in + d_out);
      extra memory T·r (Ax) + T·d_out (B(Ax))

    where base = 2·T·d_in·d_out. Full fine-tuning trains W itself (weight only, no bias), so
    its forward pass is the base matmul alone. Each entry also carries ``adapter_flops``
    (flops − base) and ``extra_memory_bytes`` = elements · ``bytes_per_el``.

    Raises ValueError unless all arguments are positive ints and rank <= min(d_in, d_out).
    """
    _check_dims(d_in, d_out, rank, tokens)
    check_int("bytes_per_el", bytes_per_el)
    base = base_flops(d_in, d_out, tokens)
    lora_params = rank * (d_in + d_out)  # A: (r, d_in) + B: (d_out, r)
    adapters = {
        FULL: (d_in * d_out, 0, 0),
        LORA_BA_X: (
            lora_params,
            ba_x_adapter_flops(d_in, d_out, rank, tokens),
            d_out * d_in + tokens * d_out,  # BA: (d_out, d_in), x(BA)ᵀ: (T, d_out)
        ),
        LORA_B_AX: (
            lora_params,
            b_ax_adapter_flops(d_in, d_out, rank, tokens),
            tokens * rank + tokens * d_out,  # xAᵀ: (T, r), (xAᵀ)Bᵀ: (T, d_out)
        ),
    }
    return {
        name: {
            "params": params,
            "flops": base + extra_flops,
            "adapter_flops": extra_flops,
            "extra_memory_bytes": elements * bytes_per_el,
        }
        for name, (params, extra_flops, elements) in adapters.items()
    }


def bax_cheaper(d_in: int, d_out: int, rank: int, tokens: int) -> bool:
    """True when B(Ax) costs strictly fewer FLOPs than (BA)x (the base matmul cancels).

    Derivation (T = tokens, r = rank, n = d_in, m = d_out, all FLOPs ×2 cancel)::

        B(Ax) < (BA)x  ⇔  T·r·(n + m) < m·r·n + T·n·m
                       ⇔  T·(r·(n + m) − n·m) < r·n·m

    * If r·(n + m) <= n·m, i.e. r <= n·m/(n + m) (half the harmonic mean of n and m), the
      left side is <= 0 < r·n·m: B(Ax) is cheaper for **every** T >= 1.
    * Otherwise (possible, since n·m/(n+m) < min(n, m)) B(Ax) is cheaper only while
      T < r·n·m / (r·(n + m) − n·m); see :func:`crossover_tokens`. Example: n = m = 4,
      r = 4 gives T < 4 — at T = 4 the two orders tie and beyond it (BA)x is cheaper.

    So "B(Ax) always wins" is true for the small ranks LoRA uses (r <= n·m/(n+m), e.g.
    r <= 2048 for a 4096×4096 layer), not for every rank <= min(n, m).
    """
    _check_dims(d_in, d_out, rank, tokens)
    slope = rank * (d_in + d_out) - d_in * d_out
    return tokens * slope < rank * d_in * d_out


def crossover_tokens(d_in: int, d_out: int, rank: int) -> int | None:
    """Smallest token count T at which B(Ax) is no longer strictly cheaper than (BA)x.

    From :func:`bax_cheaper`: T* = ⌈r·n·m / (r·(n + m) − n·m)⌉ when r·(n + m) > n·m, and
    None (B(Ax) cheaper for every T >= 1) when r <= n·m/(n + m), with n = d_in, m = d_out.
    """
    _check_dims(d_in, d_out, rank)
    slope = rank * (d_in + d_out) - d_in * d_out
    if slope <= 0:
        return None
    return -(-(rank * d_in * d_out) // slope)  # ceiling division, exact for ints


def time_orders(
    d_in: int,
    d_out: int,
    rank: int,
    tokens: int,
    repeats: int = 7,
    device: str = "cpu",
    budget_s: float = 1.0,
    seed: int = 0,
) -> dict[str, float]:
    """Measured forward time of x(BA)ᵀ vs (xAᵀ)Bᵀ on random float32 tensors.

    One warm-up call of each, then ``repeats`` interleaved pairs (the order alternates each
    pair, so drift and cache effects hit both orders alike); the medians are reported. The
    number of pairs is reduced (to at least 1) so the timing loop stays within about
    ``budget_s`` seconds. Returns ``{"ba_x_ms", "b_ax_ms", "ratio", "repeats"}`` with
    ratio = ba_x_ms / b_ax_ms (> 1 means B(Ax) is faster). Time only — no FLOPs claimed.
    """
    import torch  # only the measurement needs torch

    _check_dims(d_in, d_out, rank, tokens)
    check_int("repeats", repeats)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d_in, generator=gen).to(dev)  # (T, d_in)
    a = torch.randn(rank, d_in, generator=gen).to(dev)  # (r, d_in)
    b = torch.randn(d_out, rank, generator=gen).to(dev)  # (d_out, r)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def ba_x() -> torch.Tensor:
        return x @ (b @ a).T  # (T, d_in) @ (d_in, d_out) -> (T, d_out)

    def b_ax() -> torch.Tensor:
        return (x @ a.T) @ b.T  # (T, r) @ (r, d_out) -> (T, d_out)

    def timed(fn: Any) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    with torch.inference_mode():
        warm = timed(ba_x) + timed(b_ax)
        pairs = max(1, min(repeats, int(budget_s / max(warm, 1e-9))))
        times: dict[str, list[float]] = {"ba_x": [], "b_ax": []}
        for i in range(pairs):
            order = (("ba_x", ba_x), ("b_ax", b_ax))
            for name, fn in order if i % 2 == 0 else order[::-1]:
                times[name].append(timed(fn))
    ba_ms = statistics.median(times["ba_x"]) * 1e3
    bax_ms = statistics.median(times["b_ax"]) * 1e3
    return {"ba_x_ms": ba_ms, "b_ax_ms": bax_ms, "ratio": ba_ms / max(bax_ms, 1e-9), "repeats": pairs}


# --------------------------------------------------------------------------------------------
# trainable parameters per adapter method (checked against the layers in tests/layers/test_hylorada.py)
# --------------------------------------------------------------------------------------------
def _families() -> dict:
    from ..layers.registry import BY_NAME  # the layers declare their own counts (AdapterSpec)
    return BY_NAME


METHODS: tuple[str, ...] = tuple(_families())


def adapter_param_count(
    method: str,
    d_in: int,
    d_out: int,
    rank: int,
    cond_dim: int | None = None,
    structure_dim: int | None = None,
) -> int:
    """Trainable parameters of one lorakit adapter on a d_in -> d_out layer (base frozen).

    ``method`` is a registered family's name (``METHODS``); the count is the formula the
    family declares beside its equation (``ADAPTER.trainable_params``). With r = rank,
    d_p = cond_dim, k = structure_dim::

        "lora"         r(d_in + d_out)                          A (r, d_in), B (d_out, r)
        "dora"         r(d_in + d_out) + d_out                  + magnitude m (d_out,)
        "hylorada"     r(d_in + d_out) + d_out + 2              + gate logit, blend logit
        "hylorada_v2"  r(d_in + d_out) + d_out + 2 + k          + w (k,); k = 32 by default
        "bilinear"     r(d_in + d_out) + r·d_p                  + C (r, d_p)
        "rss"          r(d_in + d_out) + 2r·d_p                 + C, S (r, d_p)
        "lora_fa"      r·d_out                                  B only (A frozen)

    Buffers (HyLoRADA's frozen m_init, LoRA-FA's A) and the frozen base (bias included) are
    not counted. Seed 003's figures: hylorada at d = 896, r = 8 → 15,234; at d = 768 → 13,058
    (v1) and 13,090 (v2, k = 32). A size (cond_dim, structure_dim) is required by the families
    whose ``__init__`` needs it, defaults as their ``__init__`` does, and is refused elsewhere.
    """
    import inspect

    families = _families()
    if method not in families:
        raise ValueError(f"method must be one of {tuple(families)}, got {method!r}")
    _check_dims(d_in, d_out, rank)
    cls = families[method]
    spec = cls.ADAPTER
    params = inspect.signature(cls.__init__).parameters
    sizes = {}
    for name, value in (("cond_dim", cond_dim), ("structure_dim", structure_dim)):
        if name not in spec.sizes:
            if value is not None:
                users = [m for m, c in families.items() if name in c.ADAPTER.sizes]
                raise ValueError(f"{name} is only used by {users}, not {method!r}")
            continue
        if value is None:
            default = params[name].default
            if default is inspect.Parameter.empty:
                raise ValueError(f"method {method!r} needs {name} (the length of "
                                 f"{'the condition p' if name == 'cond_dim' else 'the structure prior'})")
            value = default
        check_int(name, value)
        sizes[name] = value
    return spec.trainable_params(d_in, d_out, rank, **sizes)


def model_param_count(
    shapes: list[tuple[int, int]],
    method: str,
    rank: int,
    cond_dim: int | None = None,
    structure_dim: int | None = None,
) -> int:
    """Sum of :func:`adapter_param_count` over adapted layers given as (d_in, d_out) pairs.

    Example, Qwen2.5-0.5B (24 blocks; q, o: 896 -> 896; k, v: 896 -> 128, grouped-query
    attention), r = 8, on q, k, v, o::

        hylorada   1,130,688   (seed 003's table: "1.1M")
        hylorada   1,462,464   if k and v were square 896 -> 896 (the seed's "~1.46M")
        dora       1,130,496   ("1.1M")
        lora       1,081,344   on q, k, v, o;   540,672 on q, v only (the table's "540K")
    """
    if not isinstance(shapes, (list, tuple)):
        raise ValueError(f"shapes must be a list of (d_in, d_out) pairs, got {type(shapes).__name__}")
    total = 0
    for shape in shapes:
        if not (isinstance(shape, (list, tuple)) and len(shape) == 2):
            raise ValueError(f"each shape must be a (d_in, d_out) pair, got {shape!r}")
        total += adapter_param_count(method, shape[0], shape[1], rank,
                                     cond_dim=cond_dim, structure_dim=structure_dim)
    return total


# --------------------------------------------------------------------------------------------
# effective rank (Roy & Vetterli, 2007)
# --------------------------------------------------------------------------------------------
def effective_rank(matrix, eps: float = 1e-12) -> float:
    """exp(entropy of the normalised singular values) of a 2-D matrix (a torch tensor or array).

    With σ the singular values and p_i = σ_i / Σ σ_j, erank = exp(−Σ p_i log p_i): r for r equal
    non-zero singular values, 1 for a rank-1 matrix, and in between when the spectrum decays —
    a smooth count of how many directions a matrix really uses (Roy & Vetterli, 2007). A zero
    matrix (LoRA's BA at init, when B = 0) has no direction at all: 0.0 is returned.
    Computed in float64.
    """
    import torch  # only this function needs torch

    m = torch.as_tensor(matrix).detach().to("cpu", torch.float64)
    if m.ndim != 2:
        raise ValueError(f"effective_rank needs a 2-D matrix, got shape {tuple(m.shape)}")
    s = torch.linalg.svdvals(m)
    total = s.sum()
    if total <= eps:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


__all__ = [
    "FULL",
    "LORA_BA_X",
    "LORA_B_AX",
    "STRATEGIES",
    "base_flops",
    "ba_x_adapter_flops",
    "b_ax_adapter_flops",
    "lora_costs",
    "bax_cheaper",
    "crossover_tokens",
    "time_orders",
    "METHODS",
    "adapter_param_count",
    "model_param_count",
    "effective_rank",
]
