"""The rank-gating explorer of notebooks 03 and 04 (ipywidgets + matplotlib).

Sliders over the operating condition p -> bar charts of the rank-wise gate g(p) (and, for RSS,
the shift b(p)) and of the layer's output for a fixed probe input x, next to the base layer's.

The update logic is the plain function :func:`gating_state` (testable without a browser);
:func:`plot_gating` draws one state; :func:`rank_gating_explorer` wires sliders to both. It works
with lorakit's layers (which have ``gate(p)`` and ``shift(p)`` methods) and with any layer that
follows the notebooks' contract: there C (and S) are found by shape, like the checks do.
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

import torch
from torch import nn

from ..validate import check_int


def _cond_dim(layer: nn.Module, cond_dim: int | None) -> int:
    d = cond_dim if cond_dim is not None else getattr(layer, "cond_dim", None)
    if d is None:
        raise ValueError("cond_dim is unknown: pass cond_dim=... (the length of p) for a layer "
                         "without a cond_dim attribute")
    return check_int("cond_dim", d)


def _as_condition(p: Any, d: int) -> torch.Tensor:
    t = torch.as_tensor(p, dtype=torch.float32)
    if t.shape != (d,):
        raise ValueError(f"p must be one condition vector of shape ({d},), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("p contains NaN or Inf")
    return t


def _gate_and_shift(layer: nn.Module, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(g(p), b(p)) in rank space, each (r,); b is None for a layer without a shift."""
    if callable(getattr(layer, "gate", None)) and not isinstance(layer.gate, nn.Module):
        shift_fn = getattr(layer, "shift", None)
        shift = shift_fn(p) if callable(shift_fn) and not isinstance(shift_fn, nn.Module) else None
        return layer.gate(p), shift
    from ..checks import BILINEAR, RSS, find_cond_factors

    base = layer.base_layer
    in_f, out_f, d = base.in_features, base.out_features, p.shape[0]
    ranks = {s for q in layer.parameters() if q.requires_grad for s in q.shape
             if in_f in q.shape and s != in_f}
    if len(ranks) != 1:
        raise ValueError("could not tell the layer's rank from its trainable parameters' shapes")
    rank = ranks.pop()
    shapes = [tuple(q.shape) for q in layer.parameters() if q.requires_grad]
    n_cond = sum(s in ((rank, d), (d, rank)) for s in shapes) + 2 * sum(
        s in ((2 * rank, d), (d, 2 * rank)) for s in shapes)
    variant = RSS if n_cond == 2 else BILINEAR
    f = find_cond_factors(layer, variant, in_f, out_f, rank, d)
    shift = None if f.S is None else f.S.value @ p
    return f.C.value @ p, shift


@torch.no_grad()
def gating_state(layer: nn.Module, p: Any, x: torch.Tensor | None = None,
                 cond_dim: int | None = None) -> dict[str, Any]:
    """What the explorer shows for one condition p (cond_dim,) and probe input x (in,).

    Returns {"p", "gate" (r,), "shift" (r,) or None, "base" (out,), "output" (out,),
    "update" (out,) = output - base, "update_norm"} as tensors (and a float).
    """
    d = _cond_dim(layer, cond_dim)
    p = _as_condition(p, d)
    base = layer.base_layer
    if x is None:
        x = torch.randn(base.in_features, generator=torch.Generator().manual_seed(0))
    if x.shape != (base.in_features,):
        raise ValueError(f"x must be one input vector of shape ({base.in_features},), got {tuple(x.shape)}")
    w = base.weight
    p, x = p.to(w), x.to(w)
    gate, shift = _gate_and_shift(layer, p)
    out = layer(x[None], p[None])[0]
    ref = base(x)
    return {"p": p.cpu(), "gate": gate.cpu(), "shift": None if shift is None else shift.cpu(),
            "base": ref.cpu(), "output": out.cpu(), "update": (out - ref).cpu(),
            "update_norm": float((out - ref).norm())}


def _limits(layer, x, d, lo, hi) -> tuple[float, float]:
    """Fixed y-limits for the two panels: the largest values over the corners of the p box
    (the gate, shift and update are linear in p, so the corners bound them)."""
    corners = list(itertools.product((lo, hi), repeat=d)) if d <= 6 else [(lo,) * d, (hi,) * d]
    rank_max, out_max = 1e-6, 1e-6
    for corner in corners:
        s = gating_state(layer, list(corner), x, d)
        rank_max = max(rank_max, float(s["gate"].abs().max()),
                       0.0 if s["shift"] is None else float(s["shift"].abs().max()))
        out_max = max(out_max, float(s["output"].abs().max()), float(s["base"].abs().max()))
    return 1.1 * rank_max, 1.1 * out_max


# y-axis labels of the two panels. The gate multiplies the rank-space activation A x
# component by component, so it is a pure factor (no unit); the shift is added to A x, so it
# is in A x's units; the output panel is in the units of the base layer's output.
GATE_YLABEL = "gate g(p)\n(factor on A x, no unit)"
GATE_SHIFT_YLABEL = "g(p): factor on A x (no unit)\nb(p): shift (units of A x)"
OUTPUT_YLABEL = "output value\n(units of base(x))"


def rank_ylabel(has_shift: bool) -> str:
    """The rank-space panel's y-axis label: what its bars are, and in which unit."""
    return GATE_SHIFT_YLABEL if has_shift else GATE_YLABEL


def plot_gating(state: dict[str, Any], limits: tuple[float, float] | None = None, fig=None):
    """Bar charts of one :func:`gating_state`: rank space (gate, shift) and output space.

    Both panels carry a y-axis label naming the quantity and its unit (:func:`rank_ylabel`,
    ``OUTPUT_YLABEL``).
    """
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(10, 3.2))
    fig.clf()
    ax_r, ax_o = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    r = state["gate"].shape[0]
    idx = torch.arange(r).numpy()
    width = 0.4 if state["shift"] is not None else 0.7
    ax_r.bar(idx - (width / 2 if state["shift"] is not None else 0), state["gate"].numpy(),
             width, label="gate g(p) = C p", color="tab:blue")
    if state["shift"] is not None:
        ax_r.bar(idx + width / 2, state["shift"].numpy(), width, label="shift b(p) = S p",
                 color="tab:orange")
    ax_r.axhline(0, color="k", lw=0.6)
    ax_r.set_xticks(idx, [f"r{k}" for k in idx])
    ax_r.set_xlabel("rank component")
    ax_r.set_ylabel(rank_ylabel(state["shift"] is not None), fontsize=9)
    ax_r.set_title("rank space")
    ax_r.legend(fontsize=8, loc="upper right")
    out = state["output"].shape[0]
    jdx = torch.arange(out).numpy()
    ax_o.bar(jdx - 0.2, state["base"].numpy(), 0.4, label="base(x)", color="0.7")
    ax_o.bar(jdx + 0.2, state["output"].numpy(), 0.4, label="layer(x, p)", color="tab:green")
    ax_o.axhline(0, color="k", lw=0.6)
    ax_o.set_title(f"output for a fixed x   (‖update‖ = {state['update_norm']:.3f})")
    ax_o.set_xlabel("output feature")
    ax_o.set_ylabel(OUTPUT_YLABEL, fontsize=9)
    ax_o.legend(fontsize=8, loc="upper right")
    if limits is not None:
        ax_r.set_ylim(-limits[0], limits[0])
        ax_o.set_ylim(-limits[1], limits[1])
    fig.tight_layout()
    return fig


def rank_gating_explorer(layer: nn.Module, x: torch.Tensor | None = None,
                         p_range: tuple[float, float] = (-1.5, 1.5), step: float = 0.05,
                         labels: Sequence[str] | None = None, cond_dim: int | None = None):
    """Sliders over p -> bar charts of the gate g(p) (and shift b(p)) and the layer's output.

    Returns the ``ipywidgets.interactive``; ``.result`` holds the :func:`gating_state` of the
    current slider values, ``.sliders`` the sliders (one per entry of p, named by ``labels``;
    their label column fits the longest label, see :func:`lorakit.notebook.cost_explorer.slider_layout`).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .cost_explorer import slider_layout

    d = _cond_dim(layer, cond_dim)
    lo, hi = map(float, p_range)
    if not lo < 0 < hi:
        raise ValueError(f"p_range must contain 0 (lo < 0 < hi), got {p_range}")
    labels = list(labels) if labels is not None else [f"p{i + 1}" for i in range(d)]
    if len(labels) != d:
        raise ValueError(f"labels must name the {d} entries of p, got {len(labels)}")
    if x is None:
        x = torch.randn(layer.base_layer.in_features, generator=torch.Generator().manual_seed(0))
    limits = _limits(layer, x, d, lo, hi)
    names = [f"p_{i}" for i in range(d)]

    def update(**values):
        p = [values[n] for n in names]
        state = gating_state(layer, p, x, d)
        fig = plot_gating(state, limits)
        plt.show()
        plt.close(fig)
        return state

    # a label column wide enough for the longest label (the default cuts "p1 (temperature)"
    # to "p1 (temp…"), a track long enough to place p to one step; the full label is also
    # the tooltip
    sliders = {n: widgets.FloatSlider(value=0.5 * hi if i == 0 else 0.0, min=lo, max=hi, step=step,
                                      description=label, tooltip=label, continuous_update=False,
                                      **slider_layout(labels))
               for i, (n, label) in enumerate(zip(names, labels, strict=True))}
    explorer = widgets.interactive(update, **sliders)
    explorer.sliders = list(sliders.values())
    return explorer


__all__ = ["gating_state", "plot_gating", "rank_gating_explorer", "rank_ylabel"]
