"""Interactive explorers for the notebooks (ipywidgets).

The update logic lives in plain functions (:func:`complexity_rows`, :func:`clamp_rank`,
:func:`render_table`, :func:`nearest_option`, :func:`slider_layout`) so it is testable without
a browser; the widgets only wire sliders and buttons to them. ``lorakit/__init__.py`` does not
import this module, so the core library works without ipywidgets.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence

import ipywidgets as widgets

from ..validate import check_int
from .analysis import (
    LORA_B_AX,
    LORA_BA_X,
    STRATEGIES,
    crossover_tokens,
    lora_costs,
    time_orders,
)

RATIO = "(BA)x / B(Ax)"
# log-ish steps: powers of two and the 1.5× points between them
DIMS: tuple[int, ...] = tuple(sorted({2**k for k in range(6, 14)} | {3 * 2**k for k in range(5, 12)}))
TOKENS: tuple[int, ...] = tuple(sorted({2**k for k in range(14)} | {3 * 2**k for k in range(12)}))
COLUMNS: tuple[tuple[str, str], ...] = (
    ("strategy", "strategy"),
    ("params", "trainable params"),
    ("gflops", "GFLOPs (forward)"),
    ("adapter_gflops", "adapter GFLOPs"),
    ("extra_memory_mb", "extra memory (MB)"),
)

# Slider geometry, in CSS pixels. A label gets PX_PER_CHAR per character (the widgets' 13 px
# sans-serif font averages about 7 px a character; 8 leaves room for wide letters) plus
# LABEL_PAD_PX; the track gets TRACK_PX, so the rank slider (1 to 256) moves 2 px per step;
# READOUT_PX is the room for the number next to the track.
PX_PER_CHAR = 8
LABEL_PAD_PX = 8
TRACK_PX = 512
READOUT_PX = 72


def description_width(descriptions: Iterable[str]) -> int:
    """Pixels a slider's label column needs so that the longest description is not cut off."""
    return PX_PER_CHAR * max((len(d) for d in descriptions), default=0) + LABEL_PAD_PX


def slider_layout(descriptions: Iterable[str], readout: bool = True) -> dict[str, Any]:
    """``layout`` and ``style`` keyword arguments for sliders labelled with ``descriptions``.

    Every slider of one explorer gets the same label column (wide enough for the longest
    description, see :func:`description_width`) and the same track of ``TRACK_PX`` pixels, so
    the tracks line up. ``readout=False``: the slider's own readout is hidden and
    ``READOUT_PX`` less width is reserved (a separate readout widget goes next to it).
    """
    label = description_width(descriptions)
    width = label + TRACK_PX + (READOUT_PX if readout else 0)
    return {"layout": widgets.Layout(width=f"{width}px", max_width="100%"),
            "style": {"description_width": f"{label}px"}}


def nearest_option(options: Sequence[int], value: int) -> int:
    """The option closest to ``value`` on a log scale (the sliders' steps are roughly geometric);
    values outside the options' range give the first or the last option."""
    ordered = sorted(options)
    if value <= ordered[0]:
        return ordered[0]
    if value >= ordered[-1]:
        return ordered[-1]
    return min(ordered, key=lambda o: abs(math.log(o / value)))


def _typed_readout(slider: widgets.SelectionSlider) -> widgets.BoundedIntText:
    """An editable number box for a SelectionSlider (whose own readout ignores typing).

    Typing a number and pressing Enter (or leaving the box) moves the slider to the nearest
    option and shows that option; moving the slider updates the box.
    """
    options = [int(o) for o in slider.options]
    box = widgets.BoundedIntText(
        value=int(slider.value), min=min(options), max=max(options), continuous_update=False,
        tooltip="type a value and press Enter: the slider moves to the nearest step",
        layout=widgets.Layout(width=f"{READOUT_PX}px"),
    )

    def typed(change: dict) -> None:
        snapped = nearest_option(options, int(change["new"]))
        slider.value = snapped
        box.value = snapped        # also when the slider did not move (no change event then)

    def moved(change: dict) -> None:
        box.value = int(change["new"])

    box.observe(typed, names="value")
    slider.observe(moved, names="value")
    return box


def clamp_rank(d_in: int, d_out: int, rank: int) -> tuple[int, str]:
    """Rank clamped to r <= min(d_in, d_out), and a note saying so ("" when unchanged)."""
    check_int("rank", rank)
    limit = min(d_in, d_out)
    if rank <= limit:
        return rank, ""
    return limit, f"rank {rank} > min(d_in, d_out) = {limit}: using rank {limit}."


def complexity_rows(d_in: int, d_out: int, rank: int, tokens: int) -> list[dict[str, Any]]:
    """Table rows: one per strategy of :func:`lorakit.notebook.analysis.lora_costs`, then a ratio row.

    Strategy rows: params, GFLOPs (= FLOPs / 1e9, multiply-add = 2), adapter GFLOPs (beyond
    the base matmul), extra memory in MB (10⁶ bytes, float32). The last row, "(BA)x / B(Ax)",
    holds the same columns as ratios. ``rank`` is clamped to min(d_in, d_out) (see
    :func:`clamp_rank`); every row carries the rank actually used.
    """
    rank, _ = clamp_rank(d_in, d_out, rank)
    costs = lora_costs(d_in, d_out, rank, tokens)
    rows = [
        {
            "strategy": name,
            "rank": rank,
            "params": c["params"],
            "gflops": c["flops"] / 1e9,
            "adapter_gflops": c["adapter_flops"] / 1e9,
            "extra_memory_mb": c["extra_memory_bytes"] / 1e6,
        }
        for name, c in ((name, costs[name]) for name in STRATEGIES)
    ]
    ba, bax = (next(r for r in rows if r["strategy"] == n) for n in (LORA_BA_X, LORA_B_AX))
    numeric = ("params", "gflops", "adapter_gflops", "extra_memory_mb")
    ratio = {key: ba[key] / bax[key] for key in numeric}
    rows.append({"strategy": RATIO, "rank": rank, **ratio})
    return rows


def _format(key: str, row: dict[str, Any]) -> str:
    """One cell: ints with thousands separators, ratios with ×, floats to 4 significant digits."""
    value = row[key]
    if key == "strategy":
        return html.escape(str(value))
    if row["strategy"] == RATIO:
        return f"{value:.3g}×"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


TABLE_CLASS = "lorakit-cost-table"
# The HTML widget renders its value as plain HTML, outside the notebook's own table styles, so
# the table brings its own: padded cells, a ruled header, the strategy column left-aligned and
# the numbers right-aligned in tabular (equal-width) digits, the ratio row set off by a rule.
TABLE_CSS = (
    f".{TABLE_CLASS} {{border-collapse: collapse; margin: 0.5em 0; line-height: 1.4; "
    "font-variant-numeric: tabular-nums;}\n"
    f".{TABLE_CLASS} th, .{TABLE_CLASS} td {{padding: 4px 12px; text-align: right; "
    "white-space: nowrap;}\n"
    f".{TABLE_CLASS} th {{font-weight: bold; border-bottom: 2px solid currentColor; "
    "vertical-align: bottom;}\n"
    f".{TABLE_CLASS} th:first-child, .{TABLE_CLASS} td:first-child {{text-align: left;}}\n"
    f".{TABLE_CLASS} tbody tr:nth-child(even) {{background: rgba(127, 127, 127, 0.08);}}\n"
    f".{TABLE_CLASS} tbody tr:last-child td {{border-top: 1px solid currentColor; "
    "font-style: italic;}"
)


def render_table(rows: list[dict[str, Any]], note: str = "") -> str:
    """HTML of the rows from :func:`complexity_rows`, with an optional note above it.

    The table carries the class ``TABLE_CLASS`` and a ``<style>`` block (``TABLE_CSS``) scoped
    to it: the notebook's table styles do not reach inside a widget.
    """
    head = "".join(f"<th>{label}</th>" for _, label in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{_format(key, row)}</td>" for key, _ in COLUMNS) + "</tr>"
        for row in rows
    )
    parts = [f"<style>\n{TABLE_CSS}\n</style>"]
    if note:
        parts.append(f"<p><b>Note:</b> {html.escape(note)}</p>")
    parts.append(f'<table class="{TABLE_CLASS}"><thead><tr>{head}</tr></thead>'
                 f"<tbody>{body}</tbody></table>")
    return "\n".join(parts)


def _crossover_note(d_in: int, d_out: int, rank: int) -> str:
    """Where (if anywhere) (BA)x stops being the more expensive order."""
    t_star = crossover_tokens(d_in, d_out, rank)
    if t_star is None:
        return "B(Ax) needs fewer FLOPs than (BA)x for every token count."
    return f"B(Ax) needs fewer FLOPs than (BA)x only below {t_star} tokens (rank is large)."


def _measure(explorer: widgets.interactive, out: widgets.Output, device: str, max_flops: float) -> None:
    """Time both orders at the explorer's current values and write the result to ``out``."""
    kw = explorer.kwargs
    rank, note = clamp_rank(kw["d_in"], kw["d_out"], kw["rank"])
    costs = lora_costs(kw["d_in"], kw["d_out"], rank, kw["tokens"])
    work = costs[LORA_BA_X]["adapter_flops"] + costs[LORA_B_AX]["adapter_flops"]
    out.outputs = ()
    if note:
        out.append_stdout(note + "\n")
    if work > max_flops:
        explorer.measurement = None
        out.append_stdout(
            f"Not measured: one pair of calls is {work / 1e9:.3g} GFLOPs, above the "
            f"{max_flops / 1e9:.3g} GFLOPs limit. Lower tokens or the dimensions.\n"
        )
        return
    m = time_orders(kw["d_in"], kw["d_out"], rank, kw["tokens"], device=device)
    predicted = costs[LORA_BA_X]["adapter_flops"] / costs[LORA_B_AX]["adapter_flops"]
    explorer.measurement = m
    out.append_stdout(
        f"(BA)x: {m['ba_x_ms']:.3f} ms   B(Ax): {m['b_ax_ms']:.3f} ms   "
        f"measured ratio (BA)x / B(Ax): {m['ratio']:.3g}×   "
        f"(adapter FLOP ratio {predicted:.3g}×; median of {m['repeats']} interleaved pairs on {device})\n"
    )


def complexity_explorer(
    d_in: int = 1024,
    d_out: int = 1024,
    rank: int = 16,
    tokens: int = 256,
    device: str | None = None,
    max_measure_flops: float = 2e10,
) -> widgets.interactive:
    """Sliders (d_in, d_out, rank, tokens) → cost table of full fine-tuning, (BA)x and B(Ax).

    Returns the ``ipywidgets.interactive``: ``.result`` holds the rows of
    :func:`complexity_rows` for the current values. Extra attributes: ``.table`` (the HTML
    widget), ``.measure_button`` and ``.measure_output`` (the "Measure" button runs
    :func:`lorakit.notebook.analysis.time_orders` and prints ms and ratio there), ``.measurement``
    (the last timing dict, or None), ``.readouts`` (the number boxes of d_in, d_out and
    tokens: a SelectionSlider's own readout ignores typing, so it is hidden and a box that
    accepts a typed value, moved to the nearest step, stands next to the slider). Sizes whose
    (BA)x + B(Ax) adapter FLOPs exceed ``max_measure_flops`` are not timed (a note says so) to
    keep the kernel responsive.
    """
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    table = widgets.HTML()

    def update(d_in: int, d_out: int, rank: int, tokens: int) -> list[dict[str, Any]]:
        used, note = clamp_rank(d_in, d_out, rank)
        rows = complexity_rows(d_in, d_out, used, tokens)
        notes = [note, _crossover_note(d_in, d_out, used)]
        table.value = render_table(rows, " ".join(n for n in notes if n))
        return rows

    names = ("d_in", "d_out", "rank", "tokens")

    def stepped(options: tuple[int, ...], value: int, name: str) -> widgets.SelectionSlider:
        return widgets.SelectionSlider(options=options, value=value, description=name,
                                       readout=False, **slider_layout(names, readout=False))

    selection = {"d_in": stepped(DIMS, d_in, "d_in"), "d_out": stepped(DIMS, d_out, "d_out"),
                 "tokens": stepped(TOKENS, tokens, "tokens")}
    explorer = widgets.interactive(
        update,
        d_in=selection["d_in"],
        d_out=selection["d_out"],
        rank=widgets.IntSlider(value=rank, min=1, max=256, description="rank",
                               **slider_layout(names)),
        tokens=selection["tokens"],
    )
    readouts = {name: _typed_readout(slider) for name, slider in selection.items()}
    rows_of = {id(slider): widgets.HBox([slider, readouts[name]])
               for name, slider in selection.items()}
    button = widgets.Button(description="Measure", tooltip="time (BA)x vs B(Ax) at these sizes")
    out = widgets.Output()
    button.on_click(lambda _: _measure(explorer, out, device, max_measure_flops))
    explorer.children = (*(rows_of.get(id(c), c) for c in explorer.children), table, button, out)
    explorer.table, explorer.measure_button, explorer.measure_output = table, button, out
    explorer.readouts = readouts
    explorer.measurement = None
    return explorer


__all__ = ["clamp_rank", "complexity_rows", "render_table", "complexity_explorer", "DIMS", "TOKENS",
           "description_width", "slider_layout", "nearest_option"]
