"""The notebooks' claims follow the measurements (issue 11, deliverable 6), read statically.

Nothing here executes a notebook (CI runs them under nbval): the tests read the solution sources and
the saved results, and check what can go stale — verdicts typed in by hand where a run decides them,
references to checks that do not exist, figures quoted from a saved run that no longer match it, and
the student's layer being the one notebook 02's fine-tuning runs train.
"""
import json
import math
import re
from pathlib import Path

import pytest
import torch

from lorakit.experiments import init_race, load_results
from lorakit.notebook.analysis import adapter_param_count, effective_rank

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "solutions").glob("*/*.ipynb"))


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell):
    return "".join(cell["source"])


def is_grade(cell):
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("grade"))


def ids(path):
    return [p.parent.name for p in path]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_every_check_that_is_cited_exists(path):
    text = [source(c) for c in cells(path)]
    defined = {int(n) for t in text for n in re.findall(r"\*\*Check (\d+) —", t)}
    cited = {int(n) for t in text for n in re.findall(r"\b[Cc]heck (\d+)\b", t)}
    assert cited <= defined, f"{path.parent.name} cites checks {sorted(cited - defined)} that have no heading"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_the_claims_verdicts_are_computed(path):
    cs = cells(path)
    start = next(i for i, c in enumerate(cs) if c["cell_type"] == "markdown" and "Claims check" in source(c))
    after = cs[start:]
    table_cells = [c for c in after if "| Verdict |" in source(c) or "Verdict | Evidence" in source(c)]
    assert table_cells, f"{path.parent.name}: no claims table after the 'Claims check' heading"
    assert all(c["cell_type"] == "code" for c in table_cells), \
        f"{path.parent.name}: the claims table is typed in markdown, not computed from the run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_the_source_document_is_named_where_a_seed_first_appears(path):
    first = next(source(c) for c in cells(path)
                 if c["cell_type"] == "markdown" and re.search(r"\bseed 00\d\b", source(c), re.I))
    first = " ".join(first.split())
    assert "source documents" in first and "ATTRIBUTION.md" in first, \
        f"{path.parent.name}: the first mention of a seed does not say what the document is"


def test_no_speed_verdict_is_typed_in_notebook_01():
    nb = ROOT / "solutions/01_lora_linear/lora_linear.ipynb"
    claims = [source(c) for c in cells(nb) if "saves massive amounts" in source(c)]
    assert claims and all("measured[\"ratio\"]" in s or "speed_verdict" in s for s in claims)


def test_notebook_06_overhead_figure_is_the_arithmetic():
    shapes = [(128, 128), (128, 64), (128, 64), (128, 128)]               # q, k, v, o of one block
    dora = sum(adapter_param_count("dora", i, o, 8) for i, o in shapes)
    extra = sum(adapter_param_count("hylorada", i, o, 8) for i, o in shapes) - dora
    text = "".join(source(c) for c in cells(ROOT / "solutions/06_hylorada/hylorada.ipynb"))
    assert (dora, extra) == (7552, 8)
    assert f"+{100 * extra / dora:.2f} %" in text and "+0.03 %" not in text


def test_notebook_06_setup_imports_functional():
    setup = next(c for c in cells(ROOT / "solutions/06_hylorada/hylorada.ipynb")
                 if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup")
    assert "import torch.nn.functional as F" in source(setup)


def _pm(text):
    return re.findall(r"([+-]?\d+\.\d{3}) ± (\d+\.\d{3})", text)


def test_notebook_06_saved_run_prose_quotes_the_saved_file():
    full = load_results("replication")
    rows = {r["method"]: r for r in full["rows"]}
    known = {(f"{r['val_ppl']['mean']:.3f}", f"{r['val_ppl']['std']:.3f}") for r in rows.values()}
    for r in rows.values():
        d = torch.tensor(r["val_ppl"]["values"]) - torch.tensor(rows["DoRA"]["val_ppl"]["values"])
        known.add((f"{d.mean().item():+.3f}", f"{d.std().item():.3f}"))
    prose = next(source(c) for c in cells(ROOT / "solutions/06_hylorada/hylorada.ipynb")
                 if source(c).startswith("What the saved run shows"))
    quoted = _pm(prose)
    assert quoted
    for mean, std in quoted:
        assert (mean, std) in known or (f"+{mean}", std) in known, f"{mean} ± {std} is not in replication.json"
    assert f"{full['baseline_val_ppl']:.3f}" in prose


def test_notebook_07_saved_run_prose_quotes_the_saved_file():
    code = load_results("structure")["code"]
    gain = code["pretrained_val_loss"] - min(m["val_loss"]["mean"] for m in code["methods"].values())
    prose = next(source(c) for c in cells(ROOT / "solutions/07_hylorada_v2/hylorada_v2.ipynb")
                 if source(c).startswith("**Reading the table**"))
    assert f"about {gain:.2f} nats/byte" in prose


def test_notebook_02_runs_train_the_layer_the_selection_chose():
    cs = cells(ROOT / "solutions/02_lora_in_practice/lora_in_practice.ipynb")
    grade_ids = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in cs]
    answer = grade_ids.index("fixed_lora_linear")
    select = next(i for i, c in enumerate(cs) if "LoRALayer = " in source(c))
    first_run = next(i for i, c in enumerate(cs) if "train_lm(" in source(c) and c["cell_type"] == "code")
    adapters = next(i for i, c in enumerate(cs) if source(c).startswith("## 7. One base model"))
    assert answer < select < first_run, "the runs must come after the student's layer and the choice"
    selection = source(cs[select])
    assert "checks.report(layer_cls" in selection and "lorakit.LoRALinear if problems else FixedLoRALinear" in selection
    for c in cs[select + 1:adapters]:
        s = source(c)
        if c["cell_type"] == "code":
            assert "lora_model(" not in s and "inject_adapters(" not in s, "a run between §3 and §7 ignores LoRALayer"
            if "train_lm(" in s:
                assert "LoRALayer" in s


def _notebook_race():
    cell = next(source(c) for c in cells(ROOT / "solutions/06_hylorada/hylorada.ipynb")
                if "def init_race(" in source(c))
    code = cell.split("\n\nnames, eranks, losses, best = init_race(")[0]
    ns = {"torch": torch, "math": math, "effective_rank": effective_rank, "device": torch.device("cpu")}
    exec(code, ns)                                           # the notebook's own definitions, nothing else
    return ns


def test_the_init_race_command_runs_the_notebooks_code():
    ns = _notebook_race()
    assert ns["INITS"] == init_race.INITS
    got = init_race.init_race((0, 3), 6)
    want = ns["init_race"]((0, 3), 6)
    assert got[0] == want[0] and got[3] == want[3]
    torch.testing.assert_close(got[1], want[1])
    torch.testing.assert_close(got[2], want[2])


def test_paired_comparison_and_the_saved_race():
    names, eranks, losses, best = init_race.init_race((0, 1, 2), 8)
    same = init_race.paired(losses, names, names[0], names[0])
    assert same["percent"] == 0 and same["first_lower"] == 0 and same["seeds"] == 3
    saved = load_results("init_race")
    assert [p["label"] for p in saved["pairs"]] == [label for label, _, _ in init_race.PAIRS]
    for p in saved["pairs"]:
        m = p["mean_log_loss"]
        assert m["seeds"] == saved["seeds"] and 0 <= m["first_lower"] <= m["seeds"] and m["se_percent"] > 0
    assert set(saved["final_effective_rank"]) == set(init_race.INITS)
