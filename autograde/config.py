"""The nbgrader settings of LoRA Lab, in one function that everything shares.

``autograde/nbgrader_config.py`` (plain ``nbgrader ...`` run from ``autograde/``), the pipeline
(``python -m autograde ...``) and the tests (a temporary course) all call
:func:`course_config`, so a course in a temporary directory is graded exactly like the real one.

Layout: ``solutions/NN_topic/topic.ipynb`` (source) -> ``notebooks/NN_topic/topic.ipynb``
(release); nbgrader's working folders (submitted, autograded, feedback, the gradebook) live in
a work directory, ``autograde/course/`` by default (gitignored).

Besides settings, this module holds two small preprocessors that close gaps in nbgrader 0.9.6:

- :class:`SafeExecute` (nbgrader's ``Execute``) records, for each submission, how its execution
  ended (graded, a cell timed out, the kernel died, the kernel did not answer an interrupt), so
  the pipeline can report a reason instead of a silently missing notebook.
- :class:`RestoreCells` (nbgrader's ``OverwriteCells``) puts deleted test cells back even when
  the cell before them in the source is not a grade or solution cell (a read-only cell, or a
  solution cell the student also deleted): nbgrader's own ``add_missing_cells`` raises a
  ``KeyError`` there, and the student's whole notebook goes ungraded.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearHiddenTests,
    Execute,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    NbGraderPreprocessor,
    OverwriteCells,
    SaveAutoGrades,
)
from traitlets.config import Config

from .sandbox import Limits

ROOT = Path(__file__).resolve().parents[1]
WORK_DIR = ROOT / "autograde" / "course"
SOURCE_DIRECTORY = "solutions"
RELEASE_DIRECTORY = "notebooks"

#: Seconds one cell may run before the kernel is interrupted. The kernel imports torch, and
#: the notebooks are sized to run top to bottom in about a minute on a 2-core CPU.
CELL_TIMEOUT = 180

#: Seconds a kernel may take to start (importing IPython on a cold, busy machine).
STARTUP_TIMEOUT = 120

#: Seconds to wait for the rest of a cell's output once the kernel has replied.
IOPUB_TIMEOUT = 15

#: Arguments for every grading kernel. Minimal tracebacks show only "ErrorType: message", so a
#: failing hidden assert does not print its own source into the output (and the feedback).
#: History in memory: no sqlite history file written (or shared) by concurrent kernels.
KERNEL_ARGUMENTS = ["--InteractiveShell.xmode=Minimal", "--HistoryManager.hist_file=:memory:"]

#: Environment variables set for the kernels that grade (inherited from the nbgrader process).
#: nbgrader itself sets NBGRADER_EXECUTION=autograde while it executes a submission (and
#: =validate for `nbgrader validate`): notebooks test *that* to know they are being graded.
KERNEL_ENV = {"PYTHONHASHSEED": "0"}

# The reasons the pipeline reports, one word or two each (the CSV's `status` column).
GRADED = "graded"
TIMED_OUT = "timed out"
KERNEL_DIED = "kernel died"
NOT_GRADED = "not graded"

TIMEOUT_ENAME = "CellTimeoutError"

# -- grading each submission in its own sandbox (autograde/sandbox.py, autograde/README.md) --
#: Limits per submission: processes (threads count too: a torch kernel has ~15), memory of the
#: whole sandbox, CPU seconds per process, CPU bandwidth in cores, bytes per file written, bytes
#: of scratch (private home and /tmp, each), open files, torch/BLAS threads.
SANDBOX_LIMITS = Limits(processes=128, memory=4 << 30, cpu_seconds=1200, cpus=1.0,
                        file_size=256 << 20, scratch=512 << 20, open_files=1024, threads=1)
#: Seconds one notebook may run in all (on top of the per-cell CELL_TIMEOUT).
NOTEBOOK_TIMEOUT = 900
#: Output a cell / a notebook may produce, in bytes, counted on the host as messages arrive.
CELL_OUTPUT_BYTES = 2 << 20
NOTEBOOK_OUTPUT_BYTES = 16 << 20
#: Submissions graded at once (None: the number of cores).
WORKERS = None


class SafeExecute(Execute):
    """nbgrader's ``Execute`` that remembers how each submission's execution ended.

    ``outcomes[(assignment_id, student_id)] = (status, reason)`` with status one of
    ``graded``, ``timed out`` or ``kernel died`` (``not graded`` for anything else). An
    exception still propagates, so nbgrader does what it always does with a failed notebook
    (removes the half-written autograded copy and goes on with the next student): a run that
    never reached the end of a notebook must not be scored, because nbgrader gives full marks
    to a test cell that has no error output, and a cell that never ran has none.
    """

    outcomes: ClassVar[dict[tuple[str, str], tuple[str, str]]] = {}
    _running = ""  # the cell being executed, for the reasons above

    def preprocess_cell(self, cell, resources, index):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        self._running = f"cell {grade_id!r}" if grade_id else f"cell {index}"
        return super().preprocess_cell(cell, resources, index)

    def preprocess(self, nb, resources=None, km=None):
        info = (resources or {}).get("nbgrader", {})
        key = (info.get("assignment", "?"), info.get("student", "?"))
        self._running = ""
        try:
            nb, resources = super().preprocess(nb, resources, km=km)
        except DeadKernelError:
            self.outcomes[key] = (KERNEL_DIED, f"the kernel died while running {self._running} "
                                               "(the code exited or crashed Python); nothing "
                                               "after it ran")
            raise
        except CellTimeoutError:
            self.outcomes[key] = (TIMED_OUT, f"{self._running} ran past {self.timeout} s and the "
                                             "kernel did not answer the interrupt; nothing after "
                                             "it ran")
            raise
        except Exception as error:
            self.outcomes[key] = (NOT_GRADED, f"{type(error).__name__}: {first_line(error)}")
            raise
        timed_out = timed_out_cells(nb)
        if timed_out:
            where = ", ".join(timed_out)
            self.outcomes[key] = (TIMED_OUT, f"interrupted after {self.timeout} s: {where}")
        else:
            self.outcomes[key] = (GRADED, "")
        return nb, resources


def timed_out_cells(nb) -> list[str]:
    """Names of the cells (grade_id, else 'cell N') that carry a timeout error."""
    names = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") == TIMEOUT_ENAME:
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
                names.append(grade_id or f"cell {index}")
                break
    return names


def first_line(error: BaseException) -> str:
    """The first line of an error's message (at most 300 characters), for a one-line reason."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


class RestoreCells(OverwriteCells):
    """``OverwriteCells`` whose restoring of deleted grade cells does not crash.

    nbgrader 0.9.6 inserts a missing grade cell after the source cell that precedes it, looked up
    among the *grade and solution* cells of the submission: when that cell is a read-only cell,
    or was deleted too, the lookup raises ``KeyError`` and the whole notebook goes ungraded.
    Here a missing cell goes after the nearest earlier source cell still in the notebook.
    """

    def add_missing_grade_cells(self, nb, resources):
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        order = [cell.name for cell in source_cells]
        grade_cells = {cell.name: cell for cell in source_nb.grade_cells}
        solution_ids = {cell.name for cell in source_nb.solution_cells}

        def position(grade_id):
            for index, cell in enumerate(nb.cells):
                if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
                    return index
            return None

        for index, name in enumerate(order):
            if name not in grade_cells or position(name) is not None:
                continue
            self.log.warning("Missing grade cell %s encountered, adding it back", name)
            cell = self.missing_cell_transform(source_cells[index], grade_cells[name].max_score,
                                               is_solution=name in solution_ids)
            cell["id"] = "restored-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)[:55]
            insert_at = 0
            for previous in reversed(order[:index]):
                found = position(previous)
                if found is not None:
                    insert_at = found + 1
                    break
            nb.cells.insert(insert_at, cell)
        return nb, resources


class NoPartialCredit(NbGraderPreprocessor):
    """A test cell scores all its points or none: its ``execute_result`` outputs are dropped
    before grades are saved.

    nbgrader takes a test cell's first ``execute_result`` as partial credit and looks no
    further, so student code called by a test could display a number (``displayhook(2)``) and
    earn it even though the check fails after it. This course's test cells never display a
    value themselves (they end in a check or an assert): such an output can only come from
    student code, and the pipeline flags it (``test_cells_displaying``).
    """

    def preprocess_cell(self, cell, resources, index):
        if is_test_cell(cell):
            cell.outputs = [o for o in cell.outputs if o.get("output_type") != "execute_result"]
        return cell, resources


def visible_source(source: str) -> str:
    """A test cell's source without its hidden-test region (the source notebook's own test
    cells carry one; the release's do not)."""
    lines, hidden = [], False
    for line in source.splitlines():
        if "BEGIN HIDDEN TESTS" in line:
            hidden = True
        elif "END HIDDEN TESTS" in line:
            hidden = False
        elif not hidden:
            lines.append(line)
    return "\n".join(lines)


def is_test_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) \
        and not meta.get("solution")


def test_cells_displaying(nb) -> list[str]:
    """grade_ids of the test cells that carry an ``execute_result`` (see NoPartialCredit)."""
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if is_test_cell(c)
            and any(o.get("output_type") == "execute_result" for o in c.get("outputs", []))]


class ClearHiddenTestsAnywhere(ClearHiddenTests):
    """ClearHiddenTests for feedback: an answer that carries the hidden-test markers (a
    student typed them) is cleared like a test cell instead of failing the whole feedback
    (nbgrader's ``enforce_metadata`` raises on it). The release keeps the strict check."""

    def preprocess_cell(self, cell, resources, cell_index):
        self.enforce_metadata = False
        return super().preprocess_cell(cell, resources, cell_index)


def _step_directory(root: Path, path: Path) -> str:
    """A CourseDirectory step directory: relative to root when inside it (nbgrader builds
    regular expressions from these paths, so keep them short and plain)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


#: Environment variable naming the gradebook's database (any SQLAlchemy URL); --db wins.
DB_URL_ENV = "LORALAB_GRADEBOOK_URL"


def gradebook_url(work_dir: str | os.PathLike, db_url: str | None = None) -> str:
    """The gradebook's database: ``db_url``, else $LORALAB_GRADEBOOK_URL, else SQLite in
    ``work_dir``."""
    return (db_url or os.environ.get(DB_URL_ENV)
            or "sqlite:///" + str(Path(work_dir).resolve() / "gradebook.db"))


def course_config(root: str | os.PathLike = ROOT, work_dir: str | os.PathLike | None = None,
                  timeout: int = CELL_TIMEOUT, db_url: str | None = None) -> Config:
    """The nbgrader configuration of a LoRA Lab course.

    root: the course root holding ``solutions/`` and ``notebooks/`` (the repository root).
    work_dir: nbgrader's working folder (submitted/, autograded/, feedback/, gradebook.db);
        ``root/autograde/course`` by default.
    timeout: seconds per cell before the grading kernel is interrupted.
    db_url: the gradebook's SQLAlchemy URL (default: $LORALAB_GRADEBOOK_URL, else
        ``work_dir/gradebook.db`` in SQLite).
    """
    root = Path(root).resolve()
    work_dir = Path(work_dir).resolve() if work_dir is not None else root / "autograde" / "course"
    if int(timeout) <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    step = lambda name: _step_directory(root, work_dir / name)  # noqa: E731

    c = Config()
    course = c.CourseDirectory
    course.root = str(root)
    course.source_directory = SOURCE_DIRECTORY
    course.release_directory = RELEASE_DIRECTORY
    course.submitted_directory = step("submitted")
    course.autograded_directory = step("autograded")
    course.feedback_directory = step("feedback")
    course.solution_directory = step("solution")
    course.source_with_tests_directory = step("source_with_tests")
    course.db_url = gradebook_url(work_dir, db_url)
    course.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]

    # Release: nbgrader's default GenerateAssignment list already clears solutions, hidden tests
    # and mark schemes, locks grade cells and records checksums; make the checks strict.
    c.ClearSolutions.enforce_metadata = True
    c.ClearHiddenTests.enforce_metadata = True
    c.LockCells.lock_grade_cells = True
    c.LockCells.lock_readonly_cells = True
    c.LockCells.lock_solution_cells = True

    # Autograde: restore deleted/edited test cells, execute with time limits, score.
    c.OverwriteCells.add_missing_cells = True
    c.Autograde.sanitize_preprocessors = [
        "nbgrader.preprocessors.ClearOutput",
        "nbgrader.preprocessors.DeduplicateIds",
        "nbgrader.preprocessors.OverwriteKernelspec",
        RestoreCells,
        "nbgrader.preprocessors.CheckCellMetadata",
    ]
    c.Autograde.autograde_preprocessors = [
        SafeExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, NoPartialCredit,
        SaveAutoGrades, AssignLatePenalties, CheckCellMetadata,
    ]
    for name in ("ExecutePreprocessor", "Execute"):
        c[name].timeout = int(timeout)
        c[name].startup_timeout = STARTUP_TIMEOUT
        c[name].interrupt_on_timeout = True
        c[name].extra_arguments = list(KERNEL_ARGUMENTS)
    # A kernel deaf to the interrupt (it ignores SIGINT) never sends the rest of the timed-out
    # cell's output: after iopub_timeout more seconds the notebook fails as a whole (nbgrader's
    # default would then go on and send every later cell to the stuck kernel, a full timeout
    # each). 15 s rather than nbgrader's 4 s, so a slow machine never trips it on a good cell.
    c.Execute.raise_on_iopub_timeout = True
    c.Execute.iopub_timeout = IOPUB_TIMEOUT
    c.Execute.execute_retries = 0

    # Feedback: nbgrader's default list (GetGrades, CSSHTMLHeaderPreprocessor) shows hidden
    # tests to the student; clear them before the HTML is written.
    c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTestsAnywhere,
                                        CSSHTMLHeaderPreprocessor]
    # Feedback is opened by students and instructors: a submission's outputs must not bring
    # scripts, iframes or event handlers into it (nbconvert sanitizes outputs and markdown).
    c.HTMLExporter.sanitize_html = True
    return c


def kernel_env() -> dict[str, str]:
    """The environment variables grading kernels should inherit (see KERNEL_ENV)."""
    return dict(KERNEL_ENV)


def apply_kernel_env(environ=os.environ) -> None:
    """Set KERNEL_ENV in ``environ`` where not set already (for plain `nbgrader` runs)."""
    for key, value in KERNEL_ENV.items():
        environ.setdefault(key, value)


__all__ = ["CELL_TIMEOUT", "GRADED", "KERNEL_DIED", "NOT_GRADED", "ROOT", "RestoreCells",
           "SafeExecute", "TIMED_OUT", "WORK_DIR", "apply_kernel_env", "course_config",
           "kernel_env", "timed_out_cells"]
