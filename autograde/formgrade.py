"""The formgrader's submission page, with each answer's model answer and rubric beside it,
and its maths rendered offline.

nbgrader's formgrader renders a submission with nbconvert's HTMLExporter and shows the
student's answers, but nothing of the source: a grader who scores a written answer has to
open ``solutions/`` in another window. This module is a Jupyter server extension, enabled by
``autograde/jupyter-config/`` (the instructor's launch, ``python -m autograde formgrader``).
When the server starts, it replaces the formgrader's exporter with :class:`FormgradeExporter`,
the same exporter (same configuration) plus two things:

- :class:`ModelAnswers`, a preprocessor: after every answer cell of the submission it inserts
  a plain markdown cell for the grader, taken from the source notebook of the same name in
  ``solutions/`` (the cell with the same ``grade_id``). A written answer (a markdown solution
  cell) gets its model answer and its rubric: the text between ``BEGIN SOLUTION`` and
  ``END SOLUTION``, split at ``**Rubric.**``. A code answer gets the reference solution.
- the template ``autograde/templates/loralab_formgrade`` (nbgrader's ``formgrade`` with one
  file changed): MathJax from this server (jupyter-server-mathjax) rather than a CDN, so
  ``$B(Ax)$`` renders without a network.

It also puts ``autograde/templates/formgrader/`` in front of the formgrader's own page
templates: "Manage Assignments" says how this exchange-free course works instead of warning
that the exchange and the course id are missing.

The inserted cells carry no nbgrader metadata, so the formgrader gives them no score box and
saves nothing for them. They exist only on that page: the submission's files, the gradebook
and the feedback (rendered by nbgrader's converters with their own exporter) never see them.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
from jinja2 import ChoiceLoader, FileSystemLoader, PrefixLoader
from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import Preprocessor
from nbformat.v4 import new_markdown_cell

BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"
RUBRIC = re.compile(r"^\s*\*\*Rubric\.?\*\*\s*", re.MULTILINE)
MODEL = re.compile(r"^\s*\*\*Model answer\.?\*\*\s*", re.MULTILINE)
GRADER_CLASS = "loralab-for-grader"  # a marker in the inserted cells' metadata (tests read it)
TEMPLATES = Path(__file__).resolve().parent / "templates"
CONFIG_DIR = Path(__file__).resolve().parent / "jupyter-config"  # the instructor's launch
TEMPLATE_NAME = "loralab_formgrade"


def solution_region(source: str) -> str:
    """The lines between the ``BEGIN SOLUTION`` and ``END SOLUTION`` markers (every region,
    joined), or the whole source when it has none."""
    lines, out, inside, found = source.splitlines(), [], False, False
    for line in lines:
        if BEGIN in line:
            inside = found = True
        elif END in line:
            inside = False
        elif inside:
            out.append(line)
    return "\n".join(out).strip() if found else source.strip()


def model_and_rubric(text: str) -> tuple[str, str]:
    """(model answer, rubric) of a written answer's solution text: split at ``**Rubric.**``
    (the rubric is empty when the text has none); a leading ``**Model answer.**`` goes."""
    parts = RUBRIC.split(text, maxsplit=1)
    model = MODEL.sub("", parts[0], count=1).strip()
    rubric = parts[1].strip() if len(parts) > 1 else ""
    return model, rubric


def _quote(text: str) -> str:
    return "\n".join("> " + line if line.strip() else ">" for line in text.splitlines())


def grader_cell(source_cell) -> nbformat.NotebookNode:
    """The markdown cell shown to the grader after the student's answer to ``source_cell``."""
    meta = source_cell.metadata.nbgrader
    grade_id, points = meta["grade_id"], meta.get("points")
    text = solution_region(source_cell.source)
    if source_cell.cell_type == "markdown":
        model, rubric = model_and_rubric(text)
        worth = f" ({points:g} point{'s' if points != 1 else ''})" if meta.get("grade") else ""
        body = [f"#### For the grader: model answer to `{grade_id}`{worth}", "", _quote(model),
                "", f"#### Rubric for `{grade_id}`", "",
                _quote(rubric) if rubric else "> (the source gives no rubric for this answer)"]
    else:
        fence = "````" if "```" in text else "```"
        body = [f"#### For the grader: reference solution of `{grade_id}`", "",
                f"{fence}python", text, fence]
    cell = new_markdown_cell("\n".join(body))
    cell.metadata[GRADER_CLASS] = {"grade_id": grade_id}
    return cell


class ModelAnswers(Preprocessor):
    """Insert the model answer and rubric (or reference solution) after each answer cell of
    the formgrader's submission page. Configured with the course directory (nbgrader's
    ``CourseDirectory`` settings, from the same configuration)."""

    def source_notebook(self, assignment: str, notebook: str) -> Path:
        from nbgrader.coursedir import CourseDirectory

        course = CourseDirectory(config=self.config)
        return Path(course.format_path(course.source_directory, ".", assignment)) / (
            notebook + ".ipynb")

    def preprocess(self, nb, resources):
        if "submission_id" not in resources or "nbgrader" in resources:
            return nb, resources  # not the formgrader's submission page (feedback, ...)
        path = self.source_notebook(resources["assignment_id"], resources["notebook_id"])
        if not path.is_file():
            self.log.warning("formgrader: no source notebook %s: model answers not shown", path)
            return nb, resources
        source = {c.metadata.nbgrader["grade_id"]: c
                  for c in nbformat.read(path, as_version=4).cells
                  if c.metadata.get("nbgrader", {}).get("solution")}
        cells = []
        for cell in nb.cells:
            cells.append(cell)
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if cell.metadata.get("nbgrader", {}).get("solution") and grade_id in source:
                cells.append(grader_cell(source[grade_id]))
        nb.cells = cells
        return nb, resources


class FormgradeExporter(HTMLExporter):
    """The formgrader's HTMLExporter with :class:`ModelAnswers` and the MathJax served here."""

    def __init__(self, formgrade_template_dirs=(), **kwargs):
        super().__init__(template_name=TEMPLATE_NAME,
                         extra_template_basedirs=[str(TEMPLATES), *formgrade_template_dirs],
                         **kwargs)
        self.register_preprocessor(ModelAnswers(parent=self), enabled=True)


# -- the server extension -------------------------------------------------------------------

def _jupyter_server_extension_points():
    return [{"module": "autograde.formgrade"}]


def _load_jupyter_server_extension(serverapp) -> None:
    """Nothing to load: nbgrader's formgrader is not set up yet (extensions load in
    alphabetical order); the exporter is replaced when the server starts."""


async def _start_jupyter_server_extension(serverapp) -> None:
    """Replace the formgrader's exporter (``nbgrader_exporter`` in the web app's settings,
    read on every submission page) by a :class:`FormgradeExporter` with its configuration,
    and put this package's page templates first."""
    from nbgrader.server_extensions.formgrader import handlers

    settings = serverapp.web_app.settings
    exporter = settings.get("nbgrader_exporter")
    if exporter is None:
        serverapp.log.warning("autograde.formgrade: the formgrader is not loaded; "
                              "model answers are not shown")
        return
    settings["nbgrader_exporter"] = FormgradeExporter(
        config=exporter.config, formgrade_template_dirs=[handlers.template_path])
    pages = settings["nbgrader_jinja2_env"]  # {% extends "nbgrader/NAME" %} reaches the original
    pages.loader = ChoiceLoader([FileSystemLoader(str(TEMPLATES / "formgrader")),
                                 PrefixLoader({"nbgrader": pages.loader}), pages.loader])
    serverapp.log.info("autograde.formgrade: the formgrader shows model answers and rubrics")


# -- the instructor's launch ----------------------------------------------------------------

def launch_command(course, python: str = sys.executable, port: int | None = None,
                   browser: bool = True, extra=()) -> tuple[list[str], dict[str, str]]:
    """(command, environment) of ``python -m autograde formgrader``: JupyterLab serving the
    course root, with autograde/jupyter-config/ alone first on JUPYTER_CONFIG_PATH and the
    course (root, working folder, gradebook URL) in the environment it reads."""
    cmd = [python, "-m", "jupyterlab", f"--ServerApp.root_dir={course.root}"]
    if not browser:
        cmd.append("--no-browser")
    if port is not None:
        cmd.append(f"--ServerApp.port={port}")
    if os.name == "posix" and os.geteuid() == 0:
        cmd.append("--allow-root")  # Jupyter refuses to start as root without it
    env = dict(os.environ)
    paths = [str(CONFIG_DIR)] + ([env["JUPYTER_CONFIG_PATH"]] if env.get("JUPYTER_CONFIG_PATH")
                                 else [])
    env.update(JUPYTER_CONFIG_PATH=os.pathsep.join(paths), LORALAB_COURSE_ROOT=str(course.root),
               LORALAB_WORK_DIR=str(course.work_dir), LORALAB_GRADEBOOK_URL=course.url)
    return cmd + list(extra), env


def launch(course, port: int | None = None, browser: bool = True, extra=()) -> int:
    """Run the formgrader until it is stopped (Ctrl-C); return JupyterLab's exit status."""
    course.gradebook().close()  # the gradebook exists (with its course row) before the server
    cmd, env = launch_command(course, port=port, browser=browser, extra=extra)
    print("Starting the formgrader (JupyterLab; the browser opens on /formgrader, Ctrl-C "
          "stops it):\n$ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=str(course.root), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return proc.wait()
