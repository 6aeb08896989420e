"""The instructor's grading pipeline, on nbgrader's Python API.

    release   solutions/NN_topic/  ->  notebooks/NN_topic/  (+ the gradebook knows every cell)
    grade     one `nbgrader autograde` run for every submitted student, then feedback, then CSV
    feedback  regenerate the feedback HTML (after manual grading, say)
    export    grades.csv from the gradebook

Nothing is lost: every folder under ``submitted/<student>/<assignment>/`` gets a row in the
gradebook and in the CSV, with a status saying how grading went (``graded``, ``timed out``,
``kernel died``, ``not graded``) and why. A submission that could not be executed to the end
scores 0 on its autograded cells, is flagged, and is marked as needing a manual grade; its
submitted notebook is untouched. Scores come from the gradebook (:class:`nbgrader.api.Gradebook`).

The same code drives a temporary course in the tests: build a :class:`Course` with another
root, work directory and per-cell timeout.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import fnmatch
import json
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import nbformat
from sqlalchemy.exc import SAWarning
from nbgrader.api import Gradebook, MissingEntry
from nbgrader import utils as nbgrader_utils
from nbgrader.apps import NbGraderAPI

from .config import (CELL_TIMEOUT, GRADED, NOT_GRADED, ROOT, TIMED_OUT,
                     SafeExecute, course_config, kernel_env, timed_out_cells)

CSV_COLUMNS = ["student_id", "assignment", "score", "max_score", "auto_score", "auto_max_score",
               "late_penalty", "status", "reason", "needs_manual_grade", "flagged", "timestamp"]
STATUS_FILE = "grading_status.json"


class PipelineError(RuntimeError):
    """A step that cannot go on (bad assignment name, nbgrader could not generate, ...)."""


def _tools_on_path() -> None:
    """nbgrader runs the `alembic` *command* when it creates a gradebook: with a virtual
    environment that is not activated (`.venv/bin/python -m autograde`) it is not on PATH."""
    bindir = os.path.dirname(sys.executable)
    if shutil.which("alembic") is None and os.path.exists(os.path.join(bindir, "alembic")):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


_tools_on_path()
# nbgrader's own gradebook code trips this on every new submission; it is noise.
warnings.filterwarnings("ignore", message=r"Object of type <\w+> not in session",
                        category=SAWarning)


def _echo(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def _environment(values: dict[str, str], restore: Iterable[str] = ()) -> Iterator[None]:
    """Set environment variables for the block; afterwards restore them and the ``restore``
    ones, also on error.

    (nbgrader's own ``utils.setenv`` restores the wrong values and nothing at all on error: it
    leaves NBGRADER_EXECUTION=autograde behind in our process after a failed notebook.)
    """
    saved = {key: os.environ.get(key) for key in [*values, *restore]}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Course:
    """Where a course lives and how it is graded.

    root: the folder holding ``solutions/`` and ``notebooks/``; work_dir: nbgrader's working
    folder (``submitted/``, ``autograded/``, ``feedback/``, ``gradebook.db``); timeout: seconds
    per cell.
    """

    root: Path = ROOT
    work_dir: Path | None = None
    timeout: int = CELL_TIMEOUT
    echo: Callable[[str], None] = field(default=_echo, repr=False)

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        self.work_dir = (Path(self.work_dir) if self.work_dir is not None
                         else self.root / "autograde" / "course").resolve()

    # -- configuration ------------------------------------------------------------------
    def config(self, **course_directory):
        """The nbgrader Config of this course (course_config), with CourseDirectory overrides."""
        cfg = course_config(self.root, self.work_dir, timeout=self.timeout)
        for key, value in course_directory.items():
            cfg.CourseDirectory[key] = value
        return cfg

    def api(self, **course_directory) -> NbGraderAPI:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return NbGraderAPI(config=self.config(**course_directory))

    def gradebook(self) -> Gradebook:
        """The gradebook, opened like NbGraderAPI opens it (course id '': no exchange)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return Gradebook("sqlite:///" + str(self.work_dir / "gradebook.db"), course_id="")

    # -- folders --------------------------------------------------------------------------
    @property
    def source_dir(self) -> Path:
        return self.root / "solutions"

    @property
    def release_dir(self) -> Path:
        return self.root / "notebooks"

    def step_dir(self, step: str, student: str, assignment: str) -> Path:
        return self.work_dir / step / student / assignment

    def submitted_dir(self, student: str, assignment: str) -> Path:
        return self.step_dir("submitted", student, assignment)

    def autograded_dir(self, student: str, assignment: str) -> Path:
        return self.step_dir("autograded", student, assignment)

    def feedback_dir(self, student: str, assignment: str) -> Path:
        return self.step_dir("feedback", student, assignment)

    def assignments(self) -> list[str]:
        """Assignment names: the folders of solutions/ that hold a notebook."""
        if not self.source_dir.is_dir():
            return []
        return sorted(p.name for p in self.source_dir.iterdir()
                      if p.is_dir() and any(p.glob("*.ipynb")))

    def notebook_names(self, assignment: str) -> list[str]:
        return sorted(p.stem for p in (self.source_dir / assignment).glob("*.ipynb"))

    def submitted_students(self, assignment: str) -> list[str]:
        """Every student with a folder for this assignment under submitted/."""
        base = self.work_dir / "submitted"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / assignment).is_dir())

    def check_assignment(self, assignment: str) -> None:
        if assignment not in self.assignments():
            known = ", ".join(self.assignments()) or "none"
            raise PipelineError(f"no assignment {assignment!r} under {self.source_dir} "
                                f"(known: {known})")

    # -- status file (how the last grading run of each submission ended) -----------------
    def _status_path(self) -> Path:
        return self.work_dir / STATUS_FILE

    def read_status(self) -> dict:
        path = self._status_path()
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        return {}

    def write_status(self, status: dict) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._status_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(self._status_path())

    def write_log(self, name: str, *results: dict) -> Path:
        logs = self.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{name}.log"
        text = "\n".join((r.get("log") or "") + (r.get("error") or "") for r in results)
        path.write_text(text, encoding="utf-8")
        return path


# -- release ------------------------------------------------------------------------------
def _generate(course: Course, assignment: str, **course_directory) -> dict:
    result = course.api(**course_directory).generate_assignment(assignment, force=True,
                                                                create=True)
    if not result["success"]:
        path = course.write_log(f"release-{assignment}", result)
        errors = [line for line in (result.get("log") or "").splitlines()
                  if line.startswith("[ERROR]") or "Error:" in line]
        raise PipelineError(f"nbgrader could not generate {assignment} (full log: {path}):\n"
                            + "\n".join(errors[-8:]))
    return result


def release(course: Course, assignments: Iterable[str] | None = None) -> list[str]:
    """generate_assignment for each assignment: solutions/ -> notebooks/ (overwriting), and the
    gradebook records every graded cell, its points, checksum and (hidden) tests."""
    names = list(assignments or course.assignments())
    if not names:
        raise PipelineError(f"no assignments under {course.source_dir}")
    for name in names:
        course.check_assignment(name)
        _generate(course, name)
        course.echo(f"released {name}: {course.release_dir / name}")
    return names


def sync_gradebook(course: Course, assignment: str) -> None:
    """Record the current source of ``assignment`` in the gradebook without touching
    notebooks/: generate into a scratch folder of the work directory.

    Grading restores test cells (with their hidden tests) from the gradebook, so it must hold
    what solutions/ holds now.
    """
    scratch = course.work_dir / "release_check"
    try:
        rel = scratch.relative_to(course.root).as_posix()
    except ValueError:
        rel = str(scratch)
    _generate(course, assignment, release_directory=rel)


# -- grading ----------------------------------------------------------------------------
@dataclass
class Outcome:
    student: str
    status: str
    reason: str = ""


def _autograded_ok(course: Course, student: str, assignment: str) -> bool:
    folder = course.autograded_dir(student, assignment)
    return all((folder / f"{name}.ipynb").is_file() for name in course.notebook_names(assignment))


def _autograded_cells(notebook) -> set[str]:
    """grade_ids of the autograded cells of a gradebook Notebook: code grade cells that are not
    also solution cells (those are answers graded by hand)."""
    solutions = {cell.name for cell in notebook.solution_cells}
    return {cell.name for cell in notebook.grade_cells
            if cell.cell_type == "code" and cell.name not in solutions}


def _record(course: Course, assignment: str, outcome: Outcome, zero: bool) -> None:
    """Write a run's outcome into the gradebook.

    The student and the submission always exist afterwards. ``zero``: the submission could not
    be executed to the end, so every autograded cell scores 0 and needs a manual grade (on a
    regrade this replaces the scores of an earlier run, which nbgrader would leave in place).
    Anything but ``graded`` flags the notebook. Manual scores and comments are never touched.
    """
    stamp = _submitted_timestamp(course, outcome.student, assignment)
    with course.gradebook() as gb:
        gb.update_or_create_student(outcome.student)
        submission = gb.update_or_create_submission(
            assignment, outcome.student, **({"timestamp": stamp} if stamp else {}))
        for nb in submission.notebooks:
            auto = _autograded_cells(nb.notebook)
            if zero:
                for grade in nb.grades:
                    if grade.name in auto:
                        grade.auto_score = 0.0
                        grade.needs_manual_grade = True
            nb.flagged = outcome.status != GRADED
        gb.db.commit()


def _submitted_timestamp(course: Course, student: str, assignment: str):
    path = course.submitted_dir(student, assignment) / "timestamp.txt"
    if path.is_file():
        try:
            return nbgrader_utils.parse_utc(path.read_text(encoding="utf-8").strip()) or None
        except (ValueError, OverflowError):
            return None
    return None


def _missing_notebooks(course: Course, student: str, assignment: str) -> list[str]:
    folder = course.submitted_dir(student, assignment)
    return [f"{name}.ipynb" for name in course.notebook_names(assignment)
            if not (folder / f"{name}.ipynb").is_file()]


def _why_not_graded(course: Course, student: str, assignment: str) -> str:
    folder = course.submitted_dir(student, assignment)
    missing = _missing_notebooks(course, student, assignment)
    if missing:
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        return f"missing {', '.join(missing)} in the submission (found: {found})"
    return "nbgrader could not process the submission (see the grading log)"


def _matching(course: Course, assignment: str, student: str) -> list[str]:
    return [s for s in course.submitted_students(assignment)
            if fnmatch.fnmatchcase(s, student)]


def autograde(course: Course, assignment: str, student: str = "*") -> list[Outcome]:
    """Autograde every submitted student matching ``student`` (a glob) in ONE nbgrader run.

    nbgrader grades the students one after another; a failure of one (kernel death, a kernel
    deaf to interrupts, an unreadable notebook) removes that student's autograded copy and
    nbgrader raises at the end of the batch: caught here, recorded per student, and the others
    keep their grades. Returns one Outcome per matching student.
    """
    course.check_assignment(assignment)
    students = _matching(course, assignment, student)
    if not students:
        course.echo(f"no submissions of {assignment} under {course.work_dir / 'submitted'}")
        return []
    sync_gradebook(course, assignment)

    course.echo(f"autograding {len(students)} submission(s) of {assignment} "
                f"(time limit {course.timeout} s per cell)...")
    attempted: set[str] = set()

    def seen(assignment=None, student=None, notebooks=()):
        # nbgrader's pre-convert hook, once per submission it starts on (after removing the
        # old autograded copy): the notebooks are submitted/<student>/<assignment>/*.ipynb
        attempted.update(Path(nb).parent.parent.name for nb in notebooks)

    for name in students:
        SafeExecute.outcomes.pop((assignment, name), None)
    cfg = course.config()
    cfg.Autograde.pre_convert_hook = seen
    course.work_dir.mkdir(parents=True, exist_ok=True)
    api = NbGraderAPI(config=cfg)
    with _environment(kernel_env(), restore=("NBGRADER_EXECUTION",)):
        result = api.autograde(assignment, student, force=True, create=True)
    log_path = course.write_log(f"autograde-{assignment}", result)
    if not result["success"]:
        course.echo(f"nbgrader reported failures (details in {log_path}); recording them")

    outcomes = []
    status_file = course.read_status()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for name in students:
        outcome, ok, zero = _outcome(course, assignment, name, name in attempted)
        if not ok:
            shutil.rmtree(course.feedback_dir(name, assignment), ignore_errors=True)
            shutil.rmtree(course.autograded_dir(name, assignment), ignore_errors=True)
        _record(course, assignment, outcome, zero)
        status_file.setdefault(assignment, {})[name] = {
            "status": outcome.status, "reason": outcome.reason, "autograded": ok, "at": now}
        outcomes.append(outcome)
        course.echo(f"  {name:24s} {outcome.status}"
                    + (f" ({outcome.reason})" if outcome.reason else ""))
    course.write_status(status_file)
    return outcomes


def _outcome(course: Course, assignment: str, name: str, attempted: bool):
    """(Outcome, autograded in this run, zero the autograded cells) for one student."""
    status, reason = SafeExecute.outcomes.pop((assignment, name), (None, ""))
    ok = attempted and _autograded_ok(course, name, assignment)
    if ok:
        if status in (None, NOT_GRADED):  # executed by a plain Execute (other config)
            folder = course.autograded_dir(name, assignment)
            timed_out = [c for p in sorted(folder.glob("*.ipynb"))
                         for c in timed_out_cells(nbformat.read(p, as_version=4))]
            status = TIMED_OUT if timed_out else GRADED
            reason = f"interrupted: {', '.join(timed_out)}" if timed_out else ""
        return Outcome(name, status, reason), True, False
    if attempted or _missing_notebooks(course, name, assignment):
        if status in (None, GRADED):
            status, reason = NOT_GRADED, _why_not_graded(course, name, assignment)
        return Outcome(name, status, reason), False, True
    # nbgrader stopped (a database error, say) before it reached this submission: flag it,
    # keep whatever the gradebook holds from an earlier run
    return Outcome(name, NOT_GRADED, "nbgrader stopped before this submission (see the "
                                     "grading log); earlier grades, if any, kept"), False, False


def feedback(course: Course, assignment: str, student: str = "*") -> list[str]:
    """Feedback HTML for every autograded submission matching ``student`` (one nbgrader run).

    The HTML shows the student's cells, outputs and scores; hidden tests are cleared first
    (course_config adds ClearHiddenTests to GenerateFeedback).
    """
    course.check_assignment(assignment)
    students = [s for s in _matching(course, assignment, student)
                if _autograded_ok(course, s, assignment)]
    if not students:
        course.echo(f"no autograded submissions of {assignment}: no feedback to write")
        return []
    result = course.api().generate_feedback(assignment, student, force=True)
    log_path = course.write_log(f"feedback-{assignment}", result)
    if not result["success"]:
        course.echo(f"nbgrader could not write some feedback (details in {log_path})")
    done = [s for s in students
            if all((course.feedback_dir(s, assignment) / f"{n}.html").is_file()
                   for n in course.notebook_names(assignment))]
    course.echo(f"feedback for {len(done)} of {len(students)} autograded submission(s) in "
                f"{course.work_dir / 'feedback'}")
    return done


def grade(course: Course, assignment: str, student: str = "*",
          out: str | os.PathLike | None = None) -> list[dict]:
    """autograde (one run for everyone), feedback, export: the whole grading of an assignment."""
    autograde(course, assignment, student)
    feedback(course, assignment, student)
    return export(course, out)


# -- export ----------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    value = float(value or 0.0)
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


def grade_rows(course: Course, assignments: Iterable[str] | None = None) -> list[dict]:
    """One row per (assignment, submitted student), scores from the gradebook."""
    status_file = course.read_status()
    rows = []
    with course.gradebook() as gb:
        names = list(assignments) if assignments else sorted(
            set(a.name for a in gb.assignments) | set(status_file))
        for name in names:
            try:
                assignment = gb.find_assignment(name)
            except MissingEntry:
                assignment = None
            submitted = set(course.submitted_students(name))
            by_student = {s.student.id: s for s in assignment.submissions} if assignment else {}
            for student in sorted(submitted | set(by_student)):
                info = status_file.get(name, {}).get(student, {})
                sub = by_student.get(student)
                if sub is None:
                    rows.append(_row(student, name, 0.0, assignment.max_score if assignment
                                     else 0.0, 0.0, 0.0, 0.0, info.get("status", NOT_GRADED),
                                     info.get("reason") or "not autograded yet", True, False,
                                     None))
                    continue
                auto = auto_max = 0.0
                for nb in sub.notebooks:
                    cells = _autograded_cells(nb.notebook)
                    for g in nb.grades:
                        if g.name in cells:
                            auto += g.auto_score or 0.0
                            auto_max += g.max_score
                status = info.get("status")
                if status is None:  # graded outside the pipeline (plain `nbgrader autograde`)
                    status = GRADED if _autograded_ok(course, student, name) else NOT_GRADED
                rows.append(_row(student, name, sub.score, sub.max_score, auto, auto_max,
                                 sub.late_submission_penalty, status, info.get("reason", ""),
                                 sub.needs_manual_grade, any(nb.flagged for nb in sub.notebooks),
                                 sub.timestamp))
    return rows


def _row(student, assignment, score, max_score, auto, auto_max, late, status, reason,
         needs_manual, flagged, timestamp) -> dict:
    return {"student_id": student, "assignment": assignment, "score": _fmt(score),
            "max_score": _fmt(max_score), "auto_score": _fmt(auto),
            "auto_max_score": _fmt(auto_max), "late_penalty": _fmt(late), "status": status,
            "reason": reason, "needs_manual_grade": str(bool(needs_manual)),
            "flagged": str(bool(flagged)),
            "timestamp": timestamp.isoformat() if timestamp else ""}


def export(course: Course, out: str | os.PathLike | None = None,
           assignments: Iterable[str] | None = None) -> list[dict]:
    """Write grades.csv (``work_dir/grades.csv`` unless ``out``) and return its rows."""
    rows = grade_rows(course, assignments)
    path = Path(out) if out is not None else course.work_dir / "grades.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    course.echo(f"wrote {len(rows)} row(s) to {path}")
    return rows


# -- submissions (autograde/submissions.py builds them from the sample files) ------------
def submit(course: Course, assignment: str, student: str, notebooks: dict) -> Path:
    """Put a submission where nbgrader looks: submitted/<student>/<assignment>/<name>.ipynb.

    notebooks: {notebook name: NotebookNode or path of an .ipynb}.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", student):
        raise PipelineError(f"student id {student!r}: use letters, digits, '_', '-', '.'")
    folder = course.submitted_dir(student, assignment)
    folder.mkdir(parents=True, exist_ok=True)
    for name, nb in notebooks.items():
        target = folder / f"{name}.ipynb"
        if isinstance(nb, (str, os.PathLike)):
            shutil.copyfile(nb, target)
        else:
            nbformat.write(nb, target)
    return folder


def release_notebook(course: Course, assignment: str, name: str | None = None):
    """The release notebook of an assignment (from notebooks/), read with nbformat."""
    name = name or course.notebook_names(assignment)[0]
    return nbformat.read(course.release_dir / assignment / f"{name}.ipynb", as_version=4)


