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
import dataclasses
import datetime
import fnmatch
import hashlib
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
from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader import utils as nbgrader_utils
from nbgrader.api import Course as NbCourse
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps import NbGraderAPI
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)
from sqlalchemy.exc import IntegrityError, SAWarning

from .config import (
    CELL_OUTPUT_BYTES,
    CELL_TIMEOUT,
    GRADED,
    NOT_GRADED,
    NOTEBOOK_OUTPUT_BYTES,
    NOTEBOOK_TIMEOUT,
    ROOT,
    SANDBOX_LIMITS,
    WORKERS,
    NoPartialCredit,
    course_config,
    first_line,
    gradebook_url,
    is_test_cell,
    kernel_env,
    visible_source,
)
from .ledger import Busy, Ledger, now
from .runner import DaskRunner, LocalRunner, encode_files
from .sandbox import Limits, Plan, detect, sweep

CSV_COLUMNS = ["student_id", "assignment", "score", "max_score", "auto_score", "auto_max_score",
               "late_penalty", "status", "reason", "needs_manual_grade", "flagged", "flags",
               "sandbox", "seconds", "timestamp"]
#: The code whose change changes a grade: a change here regrades every submission.
GRADER_CODE = ("lorakit/**/*.py", "autograde/config.py", "autograde/judge.py",
               "autograde/worker.py", "autograde/cells.py", "autograde/sandbox.py")


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
    #: submissions graded at once (None: config.WORKERS, else the number of cores)
    workers: int | None = None
    limits: Limits = SANDBOX_LIMITS
    notebook_timeout: int = NOTEBOOK_TIMEOUT
    cell_output_bytes: int = CELL_OUTPUT_BYTES
    notebook_output_bytes: int = NOTEBOOK_OUTPUT_BYTES
    #: refuse to grade when a protection of the sandbox is off on this machine
    require_sandbox: bool = False
    progress: bool = True
    keep_scratch: bool = False
    #: the gradebook's SQLAlchemy URL (None: $LORALAB_GRADEBOOK_URL, else work_dir/gradebook.db)
    db_url: str | None = None
    #: a Dask scheduler address (or distributed Client) to grade on; None: local workers
    cluster: object = None

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        self.work_dir = (Path(self.work_dir) if self.work_dir is not None
                         else self.root / "autograde" / "course").resolve()
        if self.workers is not None and (not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise PipelineError(f"workers must be a whole number >= 1, got {self.workers!r}")

    # -- grading in sandboxes --------------------------------------------------------------
    def sandbox_plan(self) -> Plan:
        """What the sandbox can enforce here; off protections are printed loudly and logged,
        and with ``require_sandbox`` they stop grading."""
        plan = detect()
        off = {k: v for k, v in plan.protections().items() if v.startswith("OFF")}
        if off:
            lines = [f"  {k}: {v}" for k, v in off.items()]
            message = ("WARNING: grading without some of the sandbox's protections:\n"
                       + "\n".join(lines))
            logs = self.work_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            with (logs / "sandbox.log").open("a", encoding="utf-8") as fh:
                fh.write(datetime.datetime.now().isoformat(timespec="seconds") + " "
                         + message + "\n")
            if self.require_sandbox:
                raise PipelineError(message.replace("WARNING: grading", "refusing to grade")
                                    + "\n(--require-sandbox)")
            print(message, file=sys.stderr, flush=True)
        return plan

    def worker_count(self, tasks: int) -> int:
        wanted = self.workers or WORKERS or os.cpu_count() or 1
        return max(1, min(wanted, tasks or 1))

    def task(self, assignment: str, student: str, folder: Path, submitted: Path,
             fingerprint: str) -> dict:
        """What a worker needs to execute one prepared submission, and nothing more (no
        gradebook, no solutions, no paths of this machine): the prepared notebook's JSON
        (sent to the kernel cell by cell), the files the kernel sees (the assignment's data
        and the student's *own* notebook, as contents: the prepared one holds the hidden
        tests), the limits."""
        (name,) = self.notebook_names(assignment)
        files = {p.name: str(p) for p in sorted(folder.iterdir())
                 if p.is_file() and p.suffix != ".ipynb" and p.name != "timestamp.txt"
                 and self._is_data(assignment, p.name)}
        files[f"{name}.ipynb"] = str(submitted / f"{name}.ipynb")
        return {"assignment": assignment, "student": student, "notebook": name,
                "fingerprint": fingerprint,
                "source": (folder / f"{name}.ipynb").read_text(encoding="utf-8"),
                "files": encode_files(files), **self.grading_settings()}

    def grading_settings(self) -> dict:
        """The settings a task runs under (part of every submission's fingerprint)."""
        return {"limits": dataclasses.asdict(self.limits), "timeout": self.timeout,
                "notebook_timeout": self.notebook_timeout,
                "cell_output_bytes": self.cell_output_bytes,
                "notebook_output_bytes": self.notebook_output_bytes}

    def runner(self, tasks: int):
        """Where tasks run: the Dask cluster ``self.cluster``, else local worker processes."""
        if self.cluster is not None:
            return DaskRunner(self.cluster)
        return LocalRunner(self.worker_count(tasks))

    def _is_data(self, assignment: str, name: str) -> bool:
        """A file the assignment's source ships (nbgrader copied it in), not a student's."""
        return (self.source_dir / assignment / name).is_file()

    # -- configuration ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The gradebook's database URL: ``db_url``, else $LORALAB_GRADEBOOK_URL, else SQLite
        in the work directory."""
        return gradebook_url(self.work_dir, self.db_url)

    def config(self, **course_directory):
        """The nbgrader Config of this course (course_config), with CourseDirectory overrides."""
        cfg = course_config(self.root, self.work_dir, timeout=self.timeout, db_url=self.url)
        for key, value in course_directory.items():
            cfg.CourseDirectory[key] = value
        return cfg

    def api(self, **course_directory) -> NbGraderAPI:
        self.gradebook().close()  # the course row exists before nbgrader writes
        return NbGraderAPI(config=self.config(**course_directory))

    def gradebook(self) -> Gradebook:
        """The gradebook, opened like NbGraderAPI opens it (course id '': no exchange).

        nbgrader never creates the row of the course '' that every assignment then refers
        to: SQLite does not check that reference, PostgreSQL does. So it is created here."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        gb = Gradebook(self.url, course_id="")
        if gb.db.get(NbCourse, "") is None:
            gb.db.add(NbCourse(id=""))
            try:
                gb.db.commit()
            except IntegrityError:  # another process created it meanwhile
                gb.db.rollback()
        return gb

    def ledger(self) -> Ledger:
        """The grading runs' bookkeeping (autograde/ledger.py), in the gradebook's database
        (created by nbgrader first: it stamps its schema only in an empty database)."""
        self.gradebook().close()
        return Ledger(self.url)

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
    flags: list[str] = field(default_factory=list)
    sandbox: str = ""
    seconds: float | None = None
    #: seconds: the worker process's wall time, and the judge's part of ``seconds``
    timing: dict = field(default_factory=dict)


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
            nb.flagged = outcome.status != GRADED or bool(outcome.flags)
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


def _matching(course: Course, assignment: str, student: str) -> list[str]:
    return [s for s in course.submitted_students(assignment)
            if fnmatch.fnmatchcase(s, student)]


#: Student ids nbgrader can handle: it builds glob patterns and regular expressions from them.
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: nbgrader's markers: in an answer they are text nbgrader would act on (flagged).
#: (Solution markers are left alone: a reference solution carries them and they do no harm.)
MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "BEGIN MARK SCHEME", "END MARK SCHEME")


def _grade_ids(nb) -> set[str]:
    return {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.cells} - {None}


def _source_ids(course: Course) -> dict[str, set[str]]:
    """{assignment: grade_ids of its source notebooks}, to recognise a foreign notebook."""
    return {a: set().union(*(_grade_ids(nbformat.read(p, as_version=4))
                             for p in sorted((course.source_dir / a).glob("*.ipynb"))))
            for a in course.assignments()}


def _screen(course: Course, assignment: str, student: str,
            known: dict[str, set[str]]) -> tuple[str, list[str]]:
    """(why this submission cannot be graded or '', flags) before anything runs."""
    if not STUDENT_ID.fullmatch(student):
        return (f"student id {student!r} cannot be graded: nbgrader builds file patterns from "
                f"ids, so characters such as '[', '*', ' ' break them; rename the folder under "
                f"submitted/ to letters, digits, '_', '-', '.'"), []
    missing = _missing_notebooks(course, student, assignment)
    folder = course.submitted_dir(student, assignment)
    if missing:
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        return f"missing {', '.join(missing)} in the submission (found: {found})", []
    flags = []
    for name in course.notebook_names(assignment):
        path = folder / f"{name}.ipynb"
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as error:  # JSON or schema errors, binary junk, ...
            return f"{name}.ipynb is not a readable notebook: {first_line(error)}", []
        ids = _grade_ids(nb)
        ours = len(ids & known.get(assignment, set()))
        best = max(known, key=lambda a: len(ids & known[a]), default=assignment)
        if best != assignment and len(ids & known[best]) > ours:
            return (f"{name}.ipynb is assignment {best}'s notebook, not {assignment}'s (its "
                    f"cells belong to {best}); nothing was graded"), []
        if not ids:
            return f"{name}.ipynb has no nbgrader cells: it is not this assignment's notebook", []
        flags += _tampering(course, assignment, name, nb)
        for index, cell in enumerate(nb.cells):
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("solution") or not meta.get("locked"):
                hits = [m for m in MARKERS if m in cell.get("source", "")]
                if hits:
                    where = meta.get("grade_id") or f"cell {index}"
                    flags.append(f"answer {where!r} contains nbgrader's marker {hits[0]!r}")
    return "", flags


def _tampering(course: Course, assignment: str, name: str, nb) -> list[str]:
    """Flags for locked test cells the student deleted or edited (nbgrader restores them
    from the gradebook, so they cost nothing; an instructor may still want to know)."""
    path = course.release_dir / assignment / f"{name}.ipynb"
    if not path.is_file():
        return []
    release = nbformat.read(path, as_version=4)
    tests = {c.metadata["nbgrader"]["grade_id"]: c.source for c in release.cells
             if is_test_cell(c)}
    mine = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id"): c.get("source", "")
            for c in nb.cells}
    deleted = sorted(g for g in tests if g not in mine)
    edited = sorted(g for g in tests if g in mine
                    and visible_source(mine[g]).strip() != visible_source(tests[g]).strip())
    flags = []
    if deleted:
        flags.append(f"test cell(s) deleted: {', '.join(deleted)} (restored from the gradebook)")
    if edited:
        flags.append(f"test cell(s) edited: {', '.join(edited)} (restored from the gradebook)")
    return flags


def _nbgrader_pass(course: Course, assignment: str, source: Path, target: Path,
                   post: list, sanitize=None) -> set[str]:
    """One `nbgrader autograde` over every student folder under ``source`` into ``target``,
    with the given sanitize / autograde preprocessors; returns the students it attempted."""
    attempted: set[str] = set()

    def seen(assignment=None, student=None, notebooks=()):
        attempted.update(Path(nb).parent.parent.name for nb in notebooks)

    cfg = course.config(submitted_directory=_rel(course, source),
                        autograded_directory=_rel(course, target))
    if sanitize is not None:
        cfg.Autograde.sanitize_preprocessors = sanitize
    cfg.Autograde.autograde_preprocessors = post
    cfg.Autograde.pre_convert_hook = seen
    result = NbGraderAPI(config=cfg).autograde(assignment, "*", force=True, create=True)
    course.write_log(f"autograde-{assignment}-{target.name}", result)
    return attempted


def _rel(course: Course, path: Path) -> str:
    try:
        return path.resolve().relative_to(course.root).as_posix()
    except ValueError:
        return str(path.resolve())


#: What nbgrader's autograde does after executing; the executing itself happens in sandboxes.
SCORE_PREPROCESSORS = [IgnorePattern, ClearMetadataPreprocessor, LimitOutput, NoPartialCredit,
                       SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]


def grader_digest() -> bytes:
    """sha256 of the grader's code (GRADER_CODE, in this repository) and of the versions of
    torch and nbgrader: what decides a grade besides the submission and the source."""
    from importlib.metadata import version

    h = hashlib.sha256()
    repo = Path(__file__).resolve().parents[1]
    for pattern in GRADER_CODE:
        for path in sorted(repo.glob(pattern)):
            h.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes())
    for package in ("torch", "nbgrader"):
        h.update(f"{package}=={version(package)}".encode())
    return h.digest()


def run_digest(course: Course, assignment: str) -> bytes:
    """What every submission of ``assignment`` is graded against, as one digest: the
    assignment's source files, the grading settings, the grader's code."""
    h = hashlib.sha256(grader_digest())
    source = course.source_dir / assignment
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        h.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes())
    h.update(json.dumps(course.grading_settings(), sort_keys=True).encode())
    return h.digest()


def fingerprint(course: Course, assignment: str, student: str, base: bytes) -> str:
    """The submission's fingerprint: its submitted files (names and contents, timestamp.txt
    included) on top of ``base`` (run_digest). Equal fingerprints, equal grades."""
    h = hashlib.sha256(base)
    folder = course.submitted_dir(student, assignment)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0"
                 + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def autograde(course: Course, assignment: str, student: str = "*",
              regrade: bool = False, with_feedback: bool = False) -> list[Outcome]:
    """Autograde the submissions of ``assignment`` matching ``student`` (a glob) that have
    no result yet or changed since (their fingerprint differs); ``regrade``: all of them.

    1. screen: ids nbgrader cannot handle, missing, unreadable or foreign notebooks are
       recorded with their reason (answers holding nbgrader markers are flagged);
    2. prepare (nbgrader, this process): a copy of each submission with its test cells
       restored from the gradebook;
    3. execute: each prepared notebook in its own sandbox, on local worker processes
       (``course.workers`` at a time) or on a Dask cluster (``course.cluster``);
    4. score (nbgrader, this process), as results arrive: the executed notebooks into
       autograded/ and the gradebook, then the submission's row in the ledger. Only this
       process writes the gradebook, autograded/ and the ledger;
    5. ``with_feedback``: the feedback HTML of each scored submission, written here while the
       workers run the next ones (``grade`` does; see :func:`feedback`).

    One run per assignment at a time (the ledger's lock); a run that was killed is resumed
    by the next, which grades what has no result. Returns one Outcome per matching student.
    """
    course.check_assignment(assignment)
    students = _matching(course, assignment, student)
    if not students:
        course.echo(f"no submissions of {assignment} under {course.work_dir / 'submitted'}")
        return []
    with course.ledger() as ledger, contextlib.ExitStack() as held:
        try:
            run = held.enter_context(ledger.lock(assignment))
        except Busy as error:
            raise PipelineError(str(error)) from None
        return _autograde(course, ledger, run, assignment, students, regrade, with_feedback)


def _autograde(course: Course, ledger: Ledger, run: str, assignment: str,
               students: list[str], regrade: bool, with_feedback: bool) -> list[Outcome]:
    rows = ledger.results(assignment).get(assignment, {})
    base = run_digest(course, assignment)
    prints = {s: fingerprint(course, assignment, s, base) for s in students}
    todo = [s for s in students if regrade or rows.get(s, {}).get("fingerprint") != prints[s]]
    outcomes = {s: Outcome(s, rows[s]["status"], rows[s]["reason"], rows[s]["flags"],
                           rows[s]["sandbox"], rows[s]["seconds"], rows[s]["timing"])
                for s in students if s not in todo}
    if outcomes:
        course.echo(f"{len(outcomes)} submission(s) of {assignment} unchanged since they were "
                    f"graded: kept (--regrade grades them again)")
    if not todo:
        return [outcomes[s] for s in students]
    plan = course.sandbox_plan()
    sweep(plan)
    sync_gradebook(course, assignment)
    scratch = course.work_dir / "grading" / assignment
    shutil.rmtree(scratch, ignore_errors=True)
    incoming, prepared, executed = (scratch / n for n in ("incoming", "prepared", "executed"))
    for folder in (incoming, prepared, executed):
        folder.mkdir(parents=True)
    log = [f"{now()} grading {assignment}: {len(todo)} submission(s) (run {run}), "
           f"sandbox {plan.summary()}"]

    def finish(out: Outcome, ok: bool, final: bool = True) -> None:
        """Record one submission: gradebook, then ledger (so a killed run keeps it)."""
        if not ok:
            if out.status == GRADED:
                out.status, out.reason = NOT_GRADED, ("nbgrader could not score the executed "
                                                      "notebook (see the grading log)")
                final = False
            shutil.rmtree(course.autograded_dir(out.student, assignment), ignore_errors=True)
        if STUDENT_ID.fullmatch(out.student):
            _record(course, assignment, out, zero=not ok)
        ledger.put(assignment, out.student, fingerprint=prints[out.student] if final else "",
                   status=out.status, reason=out.reason, autograded=ok, flags=out.flags,
                   sandbox=out.sandbox or plan.summary(), seconds=out.seconds,
                   timing=out.timing, run=run)
        outcomes[out.student] = out
        line = (f"  {out.student:24s} {out.status}" + (f" ({out.reason})" if out.reason else "")
                + "".join(f"\n  {'':24s} flag: {f}" for f in out.flags))
        course.echo(line)
        log.append(line)

    known = _source_ids(course)
    staged = []
    for name in todo:
        # feedback is rewritten for every submission graded now (and only for those)
        shutil.rmtree(course.feedback_dir(name, assignment), ignore_errors=True)
        why, flags = _screen(course, assignment, name, known)
        if why:
            finish(Outcome(name, NOT_GRADED, why, flags), ok=False)
        else:
            shutil.copytree(course.submitted_dir(name, assignment), incoming / name / assignment)
            staged.append(Outcome(name, GRADED, "", flags))
    with _environment(kernel_env(), restore=("NBGRADER_EXECUTION",)):
        # post=[]: nothing runs here; execution happens in the sandboxes only
        ready = _nbgrader_pass(course, assignment, incoming, prepared, post=[]) \
            if staged else set()
    tasks, pending = [], {}
    for out in staged:
        folder = prepared / out.student / assignment
        if out.student not in ready or not _all_notebooks(course, assignment, folder):
            out.status, out.reason = NOT_GRADED, ("nbgrader could not prepare the submission "
                                                  "(see logs/autograde-*-prepared.log)")
            finish(out, ok=False)
            continue
        tasks.append(course.task(assignment, out.student, folder,
                                 incoming / out.student / assignment, prints[out.student]))
        pending[out.student] = out
    try:
        _execute(course, assignment, tasks, pending, incoming, executed, finish,
                 with_feedback)
    finally:
        logs = course.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"grading-{assignment}.log").open("a", encoding="utf-8") as fh:
            fh.write("\n".join(log) + "\n")
        if not course.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return [outcomes[name] for name in students]


def _execute(course: Course, assignment: str, tasks: list[dict], pending: dict,
             incoming: Path, executed: Path, finish: Callable,
             with_feedback: bool) -> None:
    """Run the tasks; score each batch of results as it arrives (one nbgrader pass), and
    with ``with_feedback`` write its feedback, while the workers go on with the next tasks."""
    from tqdm.auto import tqdm

    if not tasks:
        return
    runner = course.runner(len(tasks))
    course.echo(f"autograding {len(tasks)} submission(s) of {assignment} on "
                f"{runner.describe()} (time limit {course.timeout} s per cell)...")
    try:
        with tqdm(total=len(tasks), unit="student", desc=f"grading {assignment}",
                  disable=not course.progress, file=sys.stderr) as bar:
            for number, batch in enumerate(runner.batches(tasks)):
                folder = executed / f"batch-{number}"
                folder.mkdir()
                for task, result in batch:
                    out = pending[task["student"]]
                    out.flags += result.get("flags", [])
                    out.sandbox = result.get("sandbox", "")
                    out.seconds = result.get("seconds")
                    out.timing = {k: result[k] for k in ("worker_seconds", "judge_seconds")
                                  if k in result}
                    out.status, out.reason = result["status"], result["reason"]
                    if result.get("notebook") is not None:
                        target = folder / out.student / assignment
                        target.mkdir(parents=True)
                        (target / f"{task['notebook']}.ipynb").write_text(result["notebook"],
                                                                           encoding="utf-8")
                        stamp = incoming / out.student / assignment / "timestamp.txt"
                        if stamp.is_file():
                            shutil.copyfile(stamp, target / "timestamp.txt")
                with _environment({"NBGRADER_EXECUTION": "autograde"}):
                    scored = _nbgrader_pass(course, assignment, folder,
                                            course.work_dir / "autograded", sanitize=[],
                                            post=SCORE_PREPROCESSORS) \
                        if any(folder.iterdir()) else set()
                for task, result in batch:
                    name = task["student"]
                    ok = name in scored and _autograded_ok(course, name, assignment)
                    finish(pending.pop(name), ok, final=result.get("final", True))
                    if with_feedback and ok:
                        _write_feedback(course, assignment, [name], name, force=True)
                bar.update(len(batch))
    finally:
        runner.close()


def _all_notebooks(course: Course, assignment: str, folder: Path) -> bool:
    return all((folder / f"{n}.ipynb").is_file() for n in course.notebook_names(assignment))


def feedback(course: Course, assignment: str, student: str = "*",
             only_missing: bool = False) -> list[str]:
    """Feedback HTML for every autograded submission matching ``student`` (one nbgrader run);
    ``only_missing``: only where there is none (grading removes the feedback of every
    submission it grades, so after a run that is exactly what it graded).

    The HTML shows the student's cells, outputs and scores; hidden tests are cleared first
    (course_config adds ClearHiddenTests to GenerateFeedback).
    """
    course.check_assignment(assignment)
    students = [s for s in _matching(course, assignment, student)
                if _autograded_ok(course, s, assignment)]
    if only_missing:
        students = [s for s in students if not _has_feedback(course, assignment, s)]
    if not students:
        which = " without feedback" if only_missing else ""
        course.echo(f"no autograded submissions of {assignment}{which}: no feedback to write")
        return []
    done = _write_feedback(course, assignment, students, student, force=not only_missing)
    course.echo(f"feedback for {len(done)} of {len(students)} autograded submission(s) in "
                f"{course.work_dir / 'feedback'}")
    return done


def _has_feedback(course: Course, assignment: str, student: str) -> bool:
    return all((course.feedback_dir(student, assignment) / f"{n}.html").is_file()
               for n in course.notebook_names(assignment))


def _write_feedback(course: Course, assignment: str, students: list[str], pattern: str,
                    force: bool) -> list[str]:
    """One nbgrader GenerateFeedback run over ``pattern`` (a student id or glob covering
    ``students``); a student whose HTML did not appear is flagged in the ledger and the
    gradebook, with where to look. Returns the students that have their feedback."""
    result = course.api().generate_feedback(assignment, pattern, force=force)
    one = not any(c in pattern for c in "*?[")  # one student: a log of its own
    log_path = course.write_log(f"feedback-{assignment}" + (f"-{pattern}" if one else ""),
                                result)
    if not result["success"]:
        course.echo(f"nbgrader could not write some feedback (details in {log_path})")
    done = [s for s in students if _has_feedback(course, assignment, s)]
    failed = [s for s in students if s not in done]
    if failed:  # flag each one, by name, with where to look
        with course.ledger() as ledger:
            for name in failed:
                flag = f"feedback did not render (see {log_path})"
                ledger.add_flag(assignment, name, flag, "feedback did not render")
                course.echo(f"  {name}: {flag}")
        with course.gradebook() as gb:
            for name in failed:
                for nb in gb.find_submission(assignment, name).notebooks:
                    nb.flagged = True
            gb.db.commit()
    return done


def grade(course: Course, assignment: str, student: str = "*",
          out: str | os.PathLike | None = None, regrade: bool = False) -> list[dict]:
    """autograde (what changed or has no result; every submission in its sandbox), feedback
    where it is missing, export, the class report: the whole grading of an assignment."""
    autograde(course, assignment, student, regrade=regrade, with_feedback=True)
    feedback(course, assignment, student, only_missing=True)  # any a killed run left out
    rows = export(course, out)
    report(course, assignment)
    return rows


def report(course: Course, assignment: str) -> tuple[Path, Path]:
    """Write the class report of ``assignment`` (autograde/report.py): HTML and JSON."""
    from .report import write_report

    course.check_assignment(assignment)
    html, data = write_report(course, assignment)
    course.echo(f"class report: {html}")
    return html, data


# -- export ----------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    value = float(value or 0.0)
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


def grade_rows(course: Course, assignments: Iterable[str] | None = None) -> list[dict]:
    """One row per (assignment, submitted student), scores from the gradebook, how grading
    went from the ledger."""
    with course.ledger() as ledger:
        status_file = ledger.results()
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
                                     info.get("reason") or "not autograded yet", True, True,
                                     None, info))
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
                                 sub.timestamp, info))
    return rows


def _row(student, assignment, score, max_score, auto, auto_max, late, status, reason,
         needs_manual, flagged, timestamp, info) -> dict:
    return {"student_id": student, "assignment": assignment, "score": _fmt(score),
            "max_score": _fmt(max_score), "auto_score": _fmt(auto),
            "auto_max_score": _fmt(auto_max), "late_penalty": _fmt(late), "status": status,
            "reason": reason, "needs_manual_grade": str(bool(needs_manual)),
            "flagged": str(bool(flagged or info.get("flags"))),
            "flags": "; ".join(info.get("flags") or []), "sandbox": info.get("sandbox", ""),
            "seconds": "" if info.get("seconds") is None else f"{info['seconds']:.1f}",
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
    if not STUDENT_ID.fullmatch(student):
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


