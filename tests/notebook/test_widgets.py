"""lorakit.notebook.cost_explorer: the complexity explorer's logic, driven without a browser."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ipywidgets as widgets
import pytest

from lorakit.notebook.analysis import LORA_B_AX, LORA_BA_X, STRATEGIES, lora_costs
from lorakit.notebook.cost_explorer import (
    DIMS,
    RATIO,
    READOUT_PX,
    TABLE_CLASS,
    TOKENS,
    TRACK_PX,
    clamp_rank,
    complexity_explorer,
    complexity_rows,
    description_width,
    nearest_option,
    render_table,
    slider_layout,
)

ROOT = Path(__file__).resolve().parents[2]


def controls(explorer: widgets.interactive) -> dict[str, widgets.ValueWidget]:
    """The explorer's sliders by description (d_in, d_out, rank, tokens)."""
    return {c.description: c for c in explorer.kwargs_widgets}


def by_strategy(rows: list[dict]) -> dict[str, dict]:
    return {row["strategy"]: row for row in rows}


def test_rows_match_the_cost_model() -> None:
    rows = by_strategy(complexity_rows(4096, 4096, 16, 512))
    assert list(rows) == [*STRATEGIES, RATIO]
    costs = lora_costs(4096, 4096, 16, 512)
    for name in STRATEGIES:
        assert rows[name]["params"] == costs[name]["params"]
        assert rows[name]["gflops"] == pytest.approx(costs[name]["flops"] / 1e9)
        assert rows[name]["extra_memory_mb"] == pytest.approx(costs[name]["extra_memory_bytes"] / 1e6)
    assert rows[LORA_BA_X]["gflops"] == pytest.approx(34.89660928)
    assert rows[LORA_B_AX]["extra_memory_mb"] == pytest.approx(8.421376)
    # adapter-only: (2·4096·16·4096 + 2·512·4096²) / (2·512·16·8192) = 4 + 128
    assert rows[RATIO]["adapter_gflops"] == pytest.approx(132.0)
    assert rows[RATIO]["params"] == 1.0


def test_clamp_rank() -> None:
    assert clamp_rank(64, 128, 16) == (16, "")
    rank, note = clamp_rank(64, 128, 256)
    assert rank == 64 and "min(d_in, d_out) = 64" in note
    with pytest.raises(ValueError, match="rank must be a positive int"):
        clamp_rank(64, 64, 0)


def test_render_table_has_every_row_and_the_note() -> None:
    text = render_table(complexity_rows(256, 512, 8, 64), note="a <note>")
    for name in (*STRATEGIES, RATIO):
        assert f"<td>{name}</td>" in text
    assert "a &lt;note&gt;" in text and text.count("<tr>") == 1 + 4


def test_explorer_result_follows_the_sliders() -> None:
    explorer = complexity_explorer(device="cpu")
    assert explorer.result == complexity_rows(1024, 1024, 16, 256)
    sliders = controls(explorer)
    assert set(sliders) == {"d_in", "d_out", "rank", "tokens"}
    sliders["d_in"].value = 4096
    sliders["d_out"].value = 4096
    sliders["tokens"].value = 512
    assert explorer.result == complexity_rows(4096, 4096, 16, 512)
    assert by_strategy(explorer.result)[LORA_BA_X]["gflops"] == pytest.approx(34.89660928)
    assert "34.9" in explorer.table.value
    sliders["rank"].value = 64
    assert by_strategy(explorer.result)[LORA_B_AX]["params"] == 64 * 8192


def test_explorer_clamps_rank_with_a_note() -> None:
    explorer = complexity_explorer(d_in=64, d_out=128, device="cpu")
    controls(explorer)["rank"].value = 200  # > min(d_in, d_out) = 64: no exception
    assert all(row["rank"] == 64 for row in explorer.result)
    assert explorer.result == complexity_rows(64, 128, 64, 256)
    assert "using rank 64" in explorer.table.value


def test_measure_button_writes_times_to_the_output() -> None:
    explorer = complexity_explorer(d_in=128, d_out=256, rank=8, tokens=32, device="cpu")
    explorer.measure_button.click()
    text = "".join(o["text"] for o in explorer.measure_output.outputs)
    assert "ms" in text and "ratio" in text
    m = explorer.measurement
    assert m["ba_x_ms"] > 0 and m["b_ax_ms"] > 0 and m["ratio"] > 0
    explorer.measure_button.click()  # a second click replaces, not appends
    assert len(explorer.measure_output.outputs) == 1


def test_measure_uses_the_clamped_rank_and_refuses_huge_sizes() -> None:
    explorer = complexity_explorer(d_in=64, d_out=64, rank=100, tokens=8, device="cpu")
    explorer.measure_button.click()
    text = "".join(o["text"] for o in explorer.measure_output.outputs)
    assert "using rank 64" in text and explorer.measurement["ratio"] > 0

    tiny_limit = complexity_explorer(device="cpu", max_measure_flops=1)
    tiny_limit.measure_button.click()
    text = "".join(o["text"] for o in tiny_limit.measure_output.outputs)
    assert "Not measured" in text and tiny_limit.measurement is None


def test_core_package_does_not_import_ipywidgets() -> None:
    code = (
        "import sys, lorakit, lorakit.notebook.analysis\n"
        "assert 'ipywidgets' not in sys.modules, 'lorakit imported ipywidgets'\n"
        "assert 'lorakit.notebook.cost_explorer' not in sys.modules, 'lorakit imported the explorer'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def px(value: str) -> int:
    assert value.endswith("px"), value
    return int(value[:-2])


def test_sliders_are_wide_and_their_labels_fit() -> None:
    explorer = complexity_explorer(device="cpu")
    sliders = list(controls(explorer).values())
    tracks = set()
    for s in sliders:
        label = px(s.style.description_width)
        assert label >= 7 * len(s.description), s.description   # ~7 px per character
        track = px(s.layout.width) - label - (READOUT_PX if s.readout else 0)
        tracks.add(track)
        assert s.layout.max_width == "100%"
    assert tracks == {TRACK_PX}                                    # the tracks line up
    rank = controls(explorer)["rank"]
    assert TRACK_PX / (rank.max - rank.min) >= 1.5                 # px per rank step


def test_description_width_fits_the_longest_label() -> None:
    assert description_width(["a", "p1 (temperature)"]) >= 7 * len("p1 (temperature)")
    geometry = slider_layout(["d_in", "tokens"], readout=False)
    assert px(geometry["style"]["description_width"]) == description_width(["tokens"])
    assert px(geometry["layout"].width) == description_width(["tokens"]) + TRACK_PX


def test_nearest_option() -> None:
    assert nearest_option(DIMS, 5000) == 4096 and nearest_option(DIMS, 5500) == 6144
    assert nearest_option(DIMS, 1) == DIMS[0] and nearest_option(DIMS, 10**9) == DIMS[-1]
    assert nearest_option(DIMS, 768) == 768


def test_selection_sliders_take_typed_values() -> None:
    explorer = complexity_explorer(device="cpu")
    sliders = controls(explorer)
    assert set(explorer.readouts) == {"d_in", "d_out", "tokens"}
    for name, box in explorer.readouts.items():
        assert sliders[name].readout is False         # its own readout ignores typing: hidden
        assert box.value == sliders[name].value
        assert any(box in c.children and sliders[name] in c.children
                   for c in explorer.children if isinstance(c, widgets.HBox))
    box = explorer.readouts["d_in"]
    box.value = 5000                                   # typed: snaps to the nearest step
    assert sliders["d_in"].value == 4096 and box.value == 4096
    assert explorer.result == complexity_rows(4096, 1024, 16, 256)
    box.value = 4000                                   # snaps to the step it is already on
    assert box.value == 4096
    sliders["d_in"].value = 2048                       # dragged: the box follows
    assert box.value == 2048
    explorer.readouts["tokens"].value = 10**6          # beyond the range: clamped to the last
    assert sliders["tokens"].value == TOKENS[-1] == explorer.readouts["tokens"].value


def test_table_is_styled() -> None:
    text = render_table(complexity_rows(256, 512, 8, 64))
    assert f'<table class="{TABLE_CLASS}">' in text and "<style>" in text
    css = text[text.index("<style>"):text.index("</style>")]
    assert f".{TABLE_CLASS} th, .{TABLE_CLASS} td" in css and "padding:" in css
    assert "text-align: right" in css                            # numbers right-aligned
    assert "td:first-child {text-align: left;}" in css           # the strategy column left
    assert f".{TABLE_CLASS} th {{font-weight: bold; border-bottom" in css
    assert "tabular-nums" in css
