"""The formgrader's submission page (autograde/formgrade.py), without a server: the model
answers and rubrics it inserts, where it inserts nothing, its MathJax, and the launch command.
The page in a real browser, after a release and a grade, is in tests/coursework/test_browser.py."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from autograde import formgrade as F  # noqa: E402
from autograde.config import course_config  # noqa: E402
from autograde.pipeline import Course  # noqa: E402

SOURCES = sorted((ROOT / "solutions").glob("*/*.ipynb"))
SUBMISSION = {"assignment_id": "01_lora_linear", "notebook_id": "lora_linear",
              "submission_id": "abc", "index": 0, "total": 1, "base_url": "",
              "student": "s1", "last_name": None, "first_name": None, "notebook_path": ""}


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def written_answers(path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "markdown" and nbgrader_meta(c).get("solution")]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.parent.name)
def test_every_written_answer_has_a_model_answer_and_a_rubric(path):
    answers = written_answers(path)
    assert answers, f"{path.name} has no written answer"
    for cell in answers:
        model, rubric = F.model_and_rubric(F.solution_region(cell.source))
        grade_id = nbgrader_meta(cell)["grade_id"]
        assert len(model) > 80, f"{grade_id}: model answer missing or too short: {model!r}"
        assert re.search(r"\d+(\.\d+)? pts?\b", rubric), (
            f"{grade_id}: the rubric should give points per criterion: {rubric!r}")


def test_solution_region_and_split():
    source = "intro\n### BEGIN SOLUTION\n**Model answer.** It is A.\n\n**Rubric.** 1 pt: A.\n" \
             "### END SOLUTION\noutro"
    assert F.solution_region(source) == "**Model answer.** It is A.\n\n**Rubric.** 1 pt: A."
    assert F.model_and_rubric(F.solution_region(source)) == ("It is A.", "1 pt: A.")
    assert F.solution_region("no markers") == "no markers"
    assert F.model_and_rubric("just an answer") == ("just an answer", "")


def graded_copy(source_path: Path):
    """What the formgrader renders: the release notebook (solutions cleared, as a student
    who wrote nothing would hand in), from the source with nbgrader's own ClearSolutions."""
    from nbgrader.preprocessors import ClearSolutions

    nb = nbformat.read(source_path, as_version=4)
    nb, _ = ClearSolutions().preprocess(nb, {})
    return nb


def course_exporter_config(tmp_path: Path):
    return course_config(ROOT, tmp_path / "work")


def test_model_answers_follow_each_answer_on_the_submission_page(tmp_path):
    source_path = ROOT / "solutions" / "01_lora_linear" / "lora_linear.ipynb"
    source = nbformat.read(source_path, as_version=4)
    nb = graded_copy(source_path)
    pre = F.ModelAnswers(config=course_exporter_config(tmp_path))
    out, _ = pre.preprocess(nb, dict(SUBMISSION))
    answers = [c for c in source.cells if nbgrader_meta(c).get("solution")]
    inserted = [c for c in out.cells if F.GRADER_CLASS in c.metadata]
    assert len(inserted) == len(answers)
    for i, cell in enumerate(out.cells):
        if F.GRADER_CLASS in cell.metadata:
            before = out.cells[i - 1]
            assert nbgrader_meta(before)["grade_id"] == cell.metadata[F.GRADER_CLASS]["grade_id"]
            assert "nbgrader" not in cell.metadata  # no score box, nothing saved for it
    written = {nbgrader_meta(c)["grade_id"]: c for c in answers if c.cell_type == "markdown"}
    for cell in inserted:
        grade_id = cell.metadata[F.GRADER_CLASS]["grade_id"]
        if grade_id in written:
            model, rubric = F.model_and_rubric(F.solution_region(written[grade_id].source))
            assert f"model answer to `{grade_id}`" in cell.source
            assert f"Rubric for `{grade_id}`" in cell.source
            assert rubric.splitlines()[0] in cell.source
        else:
            assert f"reference solution of `{grade_id}`" in cell.source
            assert "```python" in cell.source


def test_model_answers_leave_feedback_and_other_notebooks_alone(tmp_path):
    """nbgrader's converters (feedback) pass resources with "nbgrader", not a submission id:
    the same preprocessor in the same server must not put model answers there."""
    source_path = ROOT / "solutions" / "01_lora_linear" / "lora_linear.ipynb"
    pre = F.ModelAnswers(config=course_exporter_config(tmp_path))
    for resources in ({"nbgrader": {"assignment": "01_lora_linear", "notebook": "lora_linear",
                                    "student": "s1"}},
                      dict(SUBMISSION, nbgrader={"student": "s1"}), {}):
        nb = graded_copy(source_path)
        before = nbformat.writes(nb)
        out, _ = pre.preprocess(nb, resources)
        assert nbformat.writes(out) == before


def test_feedback_configuration_has_no_model_answers(tmp_path):
    """The course's configuration (grading, feedback) never names the formgrader's parts."""
    text = repr(course_exporter_config(tmp_path))
    assert "ModelAnswers" not in text and "loralab_formgrade" not in text


def test_submission_page_loads_mathjax_from_this_server(tmp_path):
    from nbgrader.server_extensions.formgrader import handlers

    exporter = F.FormgradeExporter(config=course_exporter_config(tmp_path),
                                   formgrade_template_dirs=[handlers.template_path])
    nb = graded_copy(ROOT / "solutions" / "01_lora_linear" / "lora_linear.ipynb")
    html, _ = exporter.from_notebook_node(nb, resources=dict(SUBMISSION))
    scripts = re.findall(r'<script src="([^"]*)"', html)
    mathjax = [s for s in scripts if "MathJax" in s]
    assert mathjax == ["../../../static/jupyter_server_mathjax/MathJax.js"
                       "?config=TeX-AMS-MML_HTMLorMML-full,Safe"]
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts
    # the relative URL reaches the file jupyter-server-mathjax serves
    import jupyter_server_mathjax
    config = re.search(r"config=([^,]+)", mathjax[0]).group(1)
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    assert (static / "MathJax.js").is_file() and (static / "config" / f"{config}.js").is_file()
    assert 'class="score' in html  # still nbgrader's grading form
    assert "For the grader: model answer to `critique_q1`" in html or \
        "model answer to <code>critique_q1</code>" in html


def test_launch_command_names_the_course(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", "/elsewhere")
    course = Course(tmp_path / "root", tmp_path / "work", db_url="sqlite:////tmp/x.db")
    cmd, env = F.launch_command(course, python="py", port=9999, browser=False,
                                extra=["--ServerApp.ip=0.0.0.0"])
    assert cmd[:3] == ["py", "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={course.root}" in cmd and "--no-browser" in cmd
    assert "--ServerApp.port=9999" in cmd and cmd[-1] == "--ServerApp.ip=0.0.0.0"
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [str(F.CONFIG_DIR), "/elsewhere"]
    assert env["LORALAB_COURSE_ROOT"] == str(course.root)
    assert env["LORALAB_WORK_DIR"] == str(course.work_dir)
    assert env["LORALAB_GRADEBOOK_URL"] == "sqlite:////tmp/x.db"


def test_cli_rejects_an_abbreviated_option():
    from autograde.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["formgrader", "--no-brow"])
    args = build_parser().parse_args(["formgrader", "--no-browser", "--", "--ServerApp.ip=x"])
    assert args.no_browser and args.jupyter_args == ["--ServerApp.ip=x"]
