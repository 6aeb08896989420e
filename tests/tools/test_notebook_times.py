"""lorakit.tools.notebook_times: seconds per notebook, non-zero exit over the limit or on an error.

CI already executes every solution notebook under nbval; here one small notebook is enough.
"""
import json

import nbformat
import pytest

from lorakit.tools import notebook_times

pytest.importorskip("nbclient")

NB01 = notebook_times.REPO / "solutions" / "01_lora_linear" / "lora_linear.ipynb"


def _tiny_notebook(path, source):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def test_default_list_is_every_solution_notebook():
    found = notebook_times.default_notebooks()
    assert found == sorted(notebook_times.REPO.glob("solutions/*/*.ipynb"))
    assert all(p.suffix == ".ipynb" for p in found)


@pytest.mark.slow
@pytest.mark.skipif(not NB01.exists(), reason="notebook 01 is not in this checkout")
def test_notebook_01_is_timed_within_the_limit(tmp_path, capsys):
    out = tmp_path / "times.json"
    assert notebook_times.main([str(NB01), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lora_linear.ipynb" in printed and " s  ok" in printed
    result = json.loads(out.read_text())
    (row,) = result["results"]
    assert row["error"] is None and 0 < row["seconds"] <= notebook_times.LIMIT_S
    assert result["limit_s"] == notebook_times.LIMIT_S


def test_over_the_limit_and_errors_exit_non_zero(tmp_path, capsys):
    slow = _tiny_notebook(tmp_path / "slow.ipynb", "import time\ntime.sleep(0.2)")
    broken = _tiny_notebook(tmp_path / "broken.ipynb", "1 / 0")
    assert notebook_times.main([str(slow), "--limit", "0.1"]) == 1
    assert "over 0.1 s" in capsys.readouterr().out
    assert notebook_times.main([str(broken)]) == 1
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "ZeroDivisionError" in printed


def test_verdicts():
    assert notebook_times.verdict({"seconds": 5.0, "error": None}, 90) == "ok"
    assert notebook_times.verdict({"seconds": 95.0, "error": None}, 90) == "over 90 s"
    assert notebook_times.verdict({"seconds": 1.0, "error": "boom"}, 90) == "FAILED"
