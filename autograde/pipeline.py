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
import json
import os
import re
import shutil
import signal
import subprocess
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

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern,
                                    LimitOutput, SaveAutoGrades)

from .config import (CELL_OUTPUT_BYTES, CELL_TIMEOUT, GRADED, NOT_GRADED, NOTEBOOK_OUTPUT_BYTES,
                     NOTEBOOK_TIMEOUT, ROOT, SANDBOX_LIMITS, STARTUP_TIMEOUT, WORKERS,
                     NoPartialCredit, course_config, first_line, is_test_cell, kernel_env,
                     visible_source)
from .sandbox import Limits, Plan, detect, sweep

CSV_COLUMNS = ["student_id", "assignment", "score", "max_score", "auto_score", "auto_max_score",
               "late_penalty", "status", "reason", "needs_manual_grade", "flagged", "flags",
               "sandbox", "seconds", "timestamp"]
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
             task_dir: Path) -> dict:
        """What a worker needs to execute one prepared submission (no gradebook, no
        solutions): the prepared notebook's JSON (sent to the kernel cell by cell), the files
        the kernel sees (the assignment's data and the student's *own* notebook: the prepared
        one holds the hidden tests), the limits."""
        (name,) = self.notebook_names(assignment)
        task_dir.mkdir(parents=True, exist_ok=True)
        files = {p.name: str(p) for p in sorted(folder.iterdir())
                 if p.is_file() and p.suffix != ".ipynb" and p.name != "timestamp.txt"
                 and self._is_data(assignment, p.name)}
        files[f"{name}.ipynb"] = str(submitted / f"{name}.ipynb")
        return {"assignment": assignment, "student": student, "notebook": name,
                "source": (folder / f"{name}.ipynb").read_text(encoding="utf-8"),
                "files": files, "limits": dataclasses.asdict(self.limits),
                "timeout": self.timeout, "notebook_timeout": self.notebook_timeout,
                "cell_output_bytes": self.cell_output_bytes,
                "notebook_output_bytes": self.notebook_output_bytes,
                "task_dir": str(task_dir)}

    def _is_data(self, assignment: str, name: str) -> bool:
        """A file the assignment's source ships (nbgrader copied it in), not a student's."""
        return (self.source_dir / assignment / name).is_file()

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
    flags: list[str] = field(default_factory=list)
    sandbox: str = ""
    seconds: float | None = None


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


def autograde(course: Course, assignment: str, student: str = "*") -> list[Outcome]:
    """Autograde every submitted student matching ``student`` (a glob).

    1. screen: ids nbgrader cannot handle, missing, unreadable or foreign notebooks are
       recorded with their reason (answers holding nbgrader markers are flagged);
    2. prepare (nbgrader, this process): a copy of each submission with its test cells
       restored from the gradebook;
    3. execute: each prepared notebook in its own sandbox, ``course.workers`` at a time
       (autograde/worker.py in a fresh process per submission);
    4. score (nbgrader, this process): the executed notebooks into autograded/ and the
       gradebook. Only this process writes the gradebook, autograded/ and the status file.

    Returns one Outcome per matching student.
    """
    course.check_assignment(assignment)
    students = _matching(course, assignment, student)
    if not students:
        course.echo(f"no submissions of {assignment} under {course.work_dir / 'submitted'}")
        return []
    plan = course.sandbox_plan()
    sweep(plan)
    sync_gradebook(course, assignment)
    scratch = course.work_dir / "grading" / assignment
    shutil.rmtree(scratch, ignore_errors=True)
    incoming, prepared, executed = (scratch / n for n in ("incoming", "prepared", "executed"))
    for folder in (incoming, prepared, executed):
        folder.mkdir(parents=True)

    outcomes: dict[str, Outcome] = {}
    known = _source_ids(course)
    for name in students:
        why, flags = _screen(course, assignment, name, known)
        if why:
            outcomes[name] = Outcome(name, NOT_GRADED, why, flags)
        else:
            shutil.copytree(course.submitted_dir(name, assignment), incoming / name / assignment)
            outcomes[name] = Outcome(name, GRADED, "", flags)
    staged = [s for s in students if outcomes[s].reason == ""]
    workers = course.worker_count(len(staged))
    course.echo(f"autograding {len(staged)} submission(s) of {assignment} with {workers} "
                f"worker(s) (time limit {course.timeout} s per cell; sandbox: "
                f"{plan.summary()})...")

    with _environment(kernel_env(), restore=("NBGRADER_EXECUTION",)):
        # post=[]: nothing runs here; execution happens in the sandboxes only
        ready = _nbgrader_pass(course, assignment, incoming, prepared, post=[]) \
            if staged else set()
    tasks = []
    for name in staged:
        folder = prepared / name / assignment
        if name not in ready or not _all_notebooks(course, assignment, folder):
            outcomes[name] = Outcome(name, NOT_GRADED, "nbgrader could not prepare the "
                                     "submission (see logs/autograde-*-prepared.log)",
                                     outcomes[name].flags)
            continue
        tasks.append(course.task(assignment, name, folder, incoming / name / assignment,
                                 scratch / "tasks" / name))
    results = run_tasks(course, tasks, workers, label=assignment)

    for task in tasks:
        name, result = task["student"], results[task["student"]]
        out = outcomes[name]
        out.flags += result.get("flags", [])
        out.sandbox = result.get("sandbox", "")
        out.seconds = result.get("seconds")
        out.status, out.reason = result["status"], result["reason"]
        if result.get("notebook") is not None:
            target = executed / name / assignment
            target.mkdir(parents=True)
            (target / f"{task['notebook']}.ipynb").write_text(result["notebook"],
                                                               encoding="utf-8")
            stamp = incoming / name / assignment / "timestamp.txt"
            if stamp.is_file():
                shutil.copyfile(stamp, target / "timestamp.txt")
    with _environment({"NBGRADER_EXECUTION": "autograde"}):
        scored = _nbgrader_pass(course, assignment, executed, course.work_dir / "autograded",
                                sanitize=[], post=SCORE_PREPROCESSORS) \
            if any(executed.iterdir()) else set()

    status_file = course.read_status()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    log = [f"{now} grading {assignment}: {len(students)} submission(s), {workers} worker(s), "
           f"sandbox {plan.summary()}"]
    for name in students:
        out = outcomes[name]
        ok = name in scored and _autograded_ok(course, name, assignment)
        if not ok:
            if out.status == GRADED:
                out.status, out.reason = NOT_GRADED, "nbgrader could not score the executed " \
                                                     "notebook (see the grading log)"
            shutil.rmtree(course.feedback_dir(name, assignment), ignore_errors=True)
            shutil.rmtree(course.autograded_dir(name, assignment), ignore_errors=True)
        if STUDENT_ID.fullmatch(name):
            _record(course, assignment, out, zero=not ok)
        status_file.setdefault(assignment, {})[name] = {
            "status": out.status, "reason": out.reason, "autograded": ok, "at": now,
            "flags": out.flags, "sandbox": out.sandbox or plan.summary(),
            "seconds": out.seconds}
        line = (f"  {name:24s} {out.status}" + (f" ({out.reason})" if out.reason else "")
                + "".join(f"\n  {'':24s} flag: {f}" for f in out.flags))
        course.echo(line)
        log.append(line)
    course.write_status(status_file)
    logs = course.work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"grading-{assignment}.log").open("a", encoding="utf-8") as fh:
        fh.write("\n".join(log) + "\n")
    if not course.keep_scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return [outcomes[name] for name in students]


def _all_notebooks(course: Course, assignment: str, folder: Path) -> bool:
    return all((folder / f"{n}.ipynb").is_file() for n in course.notebook_names(assignment))


def run_tasks(course: Course, tasks: list[dict], workers: int, label: str = "") -> dict:
    """Execute tasks (one per submission) ``workers`` at a time, each in a fresh worker
    process (``python -m autograde.worker``); {student: result}. A worker that crashes, hangs
    or is killed loses its own task only, which is reported with the reason."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    results: dict[str, dict] = {}
    if not tasks:
        return results
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(tasks), unit="student", desc=f"grading {label}".strip(),
                 disable=not course.progress, file=sys.stderr) as bar:
        futures = {pool.submit(_run_worker, course, task): task for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                results[task["student"]] = future.result()
            except Exception as error:  # a bug of ours: report it for this student only
                results[task["student"]] = _failed(f"the worker failed: {first_line(error)}")
            bar.update()
    return results


def _failed(reason: str) -> dict:
    return {"status": NOT_GRADED, "reason": reason, "notebook": None, "flags": []}


def _run_worker(course: Course, task: dict) -> dict:
    folder = Path(task["task_dir"])
    task_file, result_file, log = (folder / n for n in ("task.json", "result.json",
                                                        "worker.log"))
    task_file.write_text(json.dumps(task), encoding="utf-8")
    env = dict(os.environ, **kernel_env(), NBGRADER_EXECUTION="autograde",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                           os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    limit = task["notebook_timeout"] + STARTUP_TIMEOUT + 120
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "autograde.worker", str(task_file),
                                 str(result_file)], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return _failed(f"the grading worker ran past {limit} s and was killed")
    if result_file.is_file():
        return json.loads(result_file.read_text(encoding="utf-8"))
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
    return _failed(f"the grading worker died (exit status {code}): {tail[0][:300]}")


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
    failed = [s for s in students if s not in done]
    if failed:  # flag each one, by name, with where to look
        status_file = course.read_status()
        for name in failed:
            info = status_file.setdefault(assignment, {}).setdefault(name, {})
            flag = f"feedback did not render (see {log_path})"
            info["flags"] = [f for f in info.get("flags", []) if not f.startswith(
                "feedback did not render")] + [flag]
            course.echo(f"  {name}: {flag}")
        course.write_status(status_file)
        with course.gradebook() as gb:
            for name in failed:
                for nb in gb.find_submission(assignment, name).notebooks:
                    nb.flagged = True
            gb.db.commit()
    course.echo(f"feedback for {len(done)} of {len(students)} autograded submission(s) in "
                f"{course.work_dir / 'feedback'}")
    return done


def grade(course: Course, assignment: str, student: str = "*",
          out: str | os.PathLike | None = None) -> list[dict]:
    """autograde (every submission in its sandbox, course.workers at a time), feedback,
    export: the whole grading of an assignment."""
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


