"""The nbgrader pipeline (autograde/): release, autograde, feedback, export.

- the committed notebooks/ is what nbgrader generates from solutions/ now, with no solution or
  hidden test in it;
- end to end on a temporary copy of the course, ONE autograde run for every submission: the
  reference solution, the untouched release, every sample in autograde/samples/ (graded as its
  `# expect:` line says), and the hostile ones (endless loop, dying kernel, deleted and edited
  test cells); feedback for every graded submission, none showing a hidden test; a CSV row for
  every student; a regrade gives the same scores;
- the same on a tiny synthetic course (no torch, 5 s time limit) for what the real notebook
  cannot show cheaply: a kernel deaf to interrupts, a misnamed or corrupt notebook, a test cell
  deleted together with the cell before it.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from autograde import config as agconfig  # noqa: E402
from autograde import pipeline as P  # noqa: E402
from autograde.submissions import build_submission, load_sample  # noqa: E402

ASSIGNMENT = "01_lora_linear"
NOTEBOOK = "lora_linear"
SAMPLE_DIR = ROOT / "autograde" / "samples" / ASSIGNMENT
SAMPLES = sorted(SAMPLE_DIR.glob("*.py"))
E2E_TIMEOUT = 15  # seconds per cell in the temporary course (the slowest cell: 1 s alone, 5 s loaded)
E2E_WORKERS = 3  # on 2 cores: a third keeps them busy while hostile ones sleep or time out
NETWORK_PORT = 47613  # hostile_snoop.py tries to reach the host here (loopback only)
DAEMON_MARK = "loralab-hostile-daemon"
HIDDEN_SAMPLE = "bug_subclass_reference"  # fails a hidden test only (the not-reference check)

# nbgrader's own gradebook code trips SQLAlchemy warnings on every new submission
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

needs_course = pytest.mark.skipif(
    not (ROOT / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").exists(),
    reason=f"solutions/{ASSIGNMENT}/{NOTEBOOK}.ipynb not written yet")


# -- helpers -----------------------------------------------------------------------------
def quiet(_message):
    pass


def student_id(sample_path: Path) -> str:
    return "sample-" + sample_path.stem


def header(sample_path: Path, key: str) -> str | None:
    """The sample's optional `# key:` header line (status: the CSV status grading must
    report; flag: text the CSV's flags must contain; needs: a limit that must be proven in
    force before the sample may run)."""
    for line in sample_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# %%"):
            break
        if line.startswith(f"# {key}:"):
            return line.partition(":")[2].strip()
    return None


def expected_status(sample_path: Path) -> str | None:
    return header(sample_path, "status")


def grade_id(cell):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def regions(source: str, begin: str, end: str) -> tuple[list[str], list[str]]:
    """(lines inside begin/end regions, lines outside), stripped, blank lines dropped."""
    inside, outside, active = [], [], False
    for line in source.splitlines():
        if begin in line:
            active = True
        elif end in line:
            active = False
        elif line.strip():
            (inside if active else outside).append(line.strip())
    return inside, outside


def hidden_test_lines(nb) -> list[str]:
    lines = []
    for cell in nb.cells:
        inside, outside = regions(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        lines += [line for line in inside if line not in outside]
    return lines


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("style", "script")

    def handle_endtag(self, tag):
        self.skip -= tag in ("style", "script")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_text(path: Path) -> str:
    """The visible text of an HTML page: code is syntax-highlighted token by token, so a plain
    search of the HTML would miss a leaked line."""
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8"))
    return "".join(parser.parts)


def cell_grades(course, student, assignment) -> dict[str, SimpleNamespace]:
    with course.gradebook() as gb:
        sub = gb.find_submission(assignment, student)
        return {g.name: SimpleNamespace(auto=g.auto_score, max=g.max_score,
                                        manual=g.needs_manual_grade)
                for nb in sub.notebooks for g in nb.grades}


def autograded_names(course, assignment) -> set[str]:
    with course.gradebook() as gb:
        return {name for nb in gb.find_assignment(assignment).notebooks
                for name in P._autograded_cells(nb)}


def autograded_nb(course, student, assignment, name):
    return nbformat.read(course.autograded_dir(student, assignment) / f"{name}.ipynb",
                         as_version=4)


def errors_of(cell) -> list[str]:
    return [o.get("ename") for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def make_course(tmp: Path, timeout: int, solutions: Path | None = None) -> P.Course:
    root = tmp / "course"
    if solutions is not None:
        shutil.copytree(solutions, root / "solutions")
    return P.Course(root, root / "autograde" / "course", timeout=timeout, echo=quiet)


# -- settings, without running anything ----------------------------------------------------
def test_config_file_for_plain_nbgrader_runs():
    """`nbgrader ...` run inside autograde/ loads autograde/nbgrader_config.py: the repo is the
    course root, the working folders and gradebook are in autograde/course/."""
    code = (
        "from traitlets.config.loader import PyFileConfigLoader\n"
        "c = PyFileConfigLoader('nbgrader_config.py', path='.').load_config()\n"
        "d = c.CourseDirectory\n"
        "print(d.root); print(d.source_directory, d.release_directory, d.submitted_directory)\n"
        "print(d.db_url); print(c.Execute.timeout, c.Execute.extra_arguments)\n"
        "print([getattr(p, '__name__', p) for p in c.GenerateFeedback.preprocessors])\n"
        "print(c.OverwriteCells.add_missing_cells)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "autograde", check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert Path(out[0]) == ROOT
    assert out[1] == "solutions notebooks autograde/course/submitted"
    assert out[2] == "sqlite:///" + str(ROOT / "autograde" / "course" / "gradebook.db")
    assert out[3].startswith(f"{agconfig.CELL_TIMEOUT} ")
    assert "--InteractiveShell.xmode=Minimal" in out[3]
    assert "ClearHiddenTests" in out[4] and "GetGrades" in out[4]
    assert out[5] == "True"


def test_course_config_for_a_temporary_course(tmp_path):
    c = agconfig.course_config(tmp_path, tmp_path / "work", timeout=7)
    assert c.CourseDirectory.root == str(tmp_path.resolve())
    assert c.CourseDirectory.feedback_directory == "work/feedback"
    assert c.Execute.timeout == c.ExecutePreprocessor.timeout == 7
    assert c.Execute.extra_arguments == ["--InteractiveShell.xmode=Minimal",
                                         "--HistoryManager.hist_file=:memory:"]
    outside = agconfig.course_config(tmp_path / "a", tmp_path / "b")
    assert outside.CourseDirectory.submitted_directory == str((tmp_path / "b/submitted").resolve())
    with pytest.raises(ValueError):
        agconfig.course_config(tmp_path, timeout=0)


# -- the release ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fresh_release(tmp_path_factory):
    """notebooks/ regenerated from solutions/ in a temporary course."""
    course = make_course(tmp_path_factory.mktemp("release"), agconfig.CELL_TIMEOUT,
                         ROOT / "solutions")
    P.release(course)
    return course


def _files(folder: Path) -> set[str]:
    skip = {".ipynb_checkpoints", "__pycache__"}
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(folder).parts)}


@pytest.mark.slow
@needs_course
def test_committed_release_is_up_to_date(fresh_release):
    committed, fresh = ROOT / "notebooks", fresh_release.release_dir
    hint = "notebooks/ is stale: run `python -m autograde release` and commit notebooks/"
    assert committed.is_dir(), hint
    assert _files(committed) == _files(fresh), hint
    for rel in sorted(_files(fresh)):
        if not rel.endswith(".ipynb"):
            assert (committed / rel).read_bytes() == (fresh / rel).read_bytes(), f"{rel}: {hint}"
            continue
        old = nbformat.read(committed / rel, as_version=4)
        new = nbformat.read(fresh / rel, as_version=4)
        assert len(old.cells) == len(new.cells), f"{rel}: {hint}"
        for index, (a, b) in enumerate(zip(old.cells, new.cells, strict=True)):
            where = f"{rel} cell {index} ({grade_id(b) or b.cell_type}): {hint}"
            assert a.cell_type == b.cell_type, where
            assert a.source == b.source, where
            assert a.metadata.get("nbgrader") == b.metadata.get("nbgrader"), where


@pytest.mark.slow
@needs_course
@pytest.mark.parametrize("release_root", ["committed", "fresh"])
def test_release_holds_no_solution_and_no_hidden_test(release_root, fresh_release):
    folder = ROOT / "notebooks" if release_root == "committed" else fresh_release.release_dir
    sources = sorted((ROOT / "solutions").glob("*/*.ipynb"))
    assert sources
    for source_path in sources:
        rel = source_path.relative_to(ROOT / "solutions")
        assert (folder / rel).exists(), f"{rel} missing from the release"
        source = nbformat.read(source_path, as_version=4)
        release = nbformat.read(folder / rel, as_version=4)
        text = "\n".join(cell.source for cell in release.cells)
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS",
                       "END HIDDEN TESTS", "BEGIN MARK SCHEME"):
            assert marker not in text, f"{rel}: {marker!r} in the release"
        for line in hidden_test_lines(source):
            assert line not in text, f"{rel}: hidden test line {line!r} in the release"
        released = {grade_id(c): c for c in release.cells if grade_id(c)}
        solution_cells = [c for c in source.cells
                          if c.metadata.get("nbgrader", {}).get("solution")]
        assert solution_cells, f"{rel}: no answer cell in the source"
        for cell in solution_cells:
            inside, outside = regions(cell.source, "BEGIN SOLUTION", "END SOLUTION")
            stub = released[grade_id(cell)].source
            stub_lines = {line.strip() for line in stub.splitlines()}
            leaked = [line for line in inside if line not in outside
                      and (line in stub_lines or (len(line) > 20 and line in stub))]
            assert not leaked, f"{rel} {grade_id(cell)}: solution code in the release: {leaked}"


# -- end to end on the real course, ONE autograde run --------------------------------------
def _digests(folder: Path) -> dict[str, str]:
    import hashlib
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class _Listener:
    """A loopback TCP + UDP listener: did anything reach the host's network?"""

    def __init__(self, port):
        import socket
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", port))
        self.tcp.listen(4)
        self.tcp.setblocking(False)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", port))
        self.udp.setblocking(False)

    def received(self) -> list:
        got = []
        for sock, read in ((self.tcp, lambda s: s.accept()), (self.udp, lambda s: s.recv(99))):
            try:
                got.append(read(sock))
            except BlockingIOError:
                pass
            sock.close()
        return got


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every sample of 01 (normal and hostile) plus unreadable, foreign and badly named
    submissions, graded in ONE run with E2E_WORKERS workers, each in its own sandbox. Bombs
    run only after sandbox.prove_limits() shows their limit in force; otherwise they are left
    out, loudly, and their tests skip."""
    from autograde.sandbox import prove_limits
    course = make_course(tmp_path_factory.mktemp("e2e"), E2E_TIMEOUT, ROOT / "solutions")
    course.workers = E2E_WORKERS
    course.limits = dataclasses.replace(course.limits, memory=2 << 30)
    P.release(course, [ASSIGNMENT])
    release_path = course.release_dir / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    source_nb_path = course.source_dir / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    P.submit(course, ASSIGNMENT, "reference", {NOTEBOOK: source_nb_path})
    P.submit(course, ASSIGNMENT, "untouched-release", {NOTEBOOK: release_path})
    proven = prove_limits()
    samples, left_out = {}, {}
    for path in SAMPLES:
        needs = header(path, "needs")
        if needs and proven.get(needs, f"unknown limit {needs!r}"):
            left_out[student_id(path)] = f"{needs} not in force: {proven.get(needs)}"
            warnings.warn(f"NOT RUNNING {path.name}: {left_out[student_id(path)]}", stacklevel=2)
            continue
        sample = load_sample(path)
        sample.status = expected_status(path)
        sample.flag = header(path, "flag")
        samples[student_id(path)] = sample
        P.submit(course, ASSIGNMENT, student_id(path), {NOTEBOOK: build_submission(release_path,
                                                                                   sample)})
    # submissions nbgrader itself cannot take: what reason do they get?
    odd = {"foreign-notebook": "is assignment 05_dora's notebook",
           "unreadable": "not a readable notebook",
           "bad[id": "cannot be graded", "star*id": "cannot be graded"}
    foreign = ROOT / "notebooks" / "05_dora" / "dora.ipynb"
    for student in odd:
        folder = course.submitted_dir(student, ASSIGNMENT)
        folder.mkdir(parents=True)
        if student == "foreign-notebook":
            shutil.copyfile(foreign, folder / f"{NOTEBOOK}.ipynb")
        elif student == "unreadable":
            (folder / f"{NOTEBOOK}.ipynb").write_bytes(b"\x89PNG\r\n not json")
        else:
            shutil.copyfile(release_path, folder / f"{NOTEBOOK}.ipynb")
    submitted = _digests(course.work_dir / "submitted")
    protected = {name: _digests(course.root / name) for name in ("solutions", "notebooks")}
    listener = _Listener(NETWORK_PORT)
    started = time.monotonic()
    rows = P.grade(course, ASSIGNMENT)
    elapsed = time.monotonic() - started
    print(f"\ne2e: graded {len(rows)} submissions in {elapsed:.0f} s with {E2E_WORKERS} workers")
    return SimpleNamespace(course=course, rows={r["student_id"]: r for r in rows},
                           samples=samples, source=nbformat.read(source_nb_path, as_version=4),
                           auto=autograded_names(course, ASSIGNMENT), elapsed=elapsed,
                           left_out=left_out, odd=odd, submitted=submitted,
                           protected=protected, network=listener.received())


def auto_score(graded, student) -> tuple[float, float]:
    grades = cell_grades(graded.course, student, ASSIGNMENT)
    auto = [grades[name] for name in graded.auto]
    return sum(g.auto or 0.0 for g in auto), sum(g.max for g in auto)


@pytest.mark.slow
@needs_course
def test_reference_solution_gets_every_autograded_point(graded):
    score, top = auto_score(graded, "reference")
    assert top > 0 and score == top
    row = graded.rows["reference"]
    assert row["status"] == "graded" and float(row["auto_score"]) == top
    # the written answers are not autograded: they wait for a grader
    assert float(row["max_score"]) > top and row["needs_manual_grade"] == "True"


@pytest.mark.slow
@needs_course
def test_untouched_release_scores_zero(graded):
    score, top = auto_score(graded, "untouched-release")
    assert top > 0 and score == 0
    assert graded.rows["untouched-release"]["status"] == "graded"


@pytest.mark.slow
@needs_course
@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_sample_is_graded_as_expected(graded, path):
    student = student_id(path)
    if student in graded.left_out:
        pytest.skip(f"not run: {graded.left_out[student]}")
    sample = graded.samples[student]
    row = graded.rows[student]
    if sample.status:
        assert row["status"] == sample.status, row["reason"]
    else:  # executed to the end (a demo cell may time out: the checks have their own limit)
        assert row["status"] in ("graded", "timed out"), row["reason"]
    score, top = auto_score(graded, student)
    expected = {"full": score == top, "zero": score == 0, "partial": 0 < score < top}
    assert expected[sample.expect], (f"{path.name}: expected {sample.expect}, got {score:g} of "
                                     f"{top:g} autograded points")
    assert float(row["auto_score"]) == score
    if sample.flag:
        assert sample.flag in row["flags"] and row["flagged"] == "True", row
    if path.stem.startswith("hostile_"):  # every hostile one is 0 or flagged with its reason
        assert score == 0 or row["flags"], row
        assert row["status"] == "graded" or row["reason"], row


@needs_course
def test_hostile_samples_are_there():
    """The robustness cases live in autograde/samples/: keep one of each kind."""
    statuses = {expected_status(path) for path in SAMPLES}
    samples = [load_sample(path) for path in SAMPLES]
    assert {"kernel died", "timed out"} <= statuses
    # deleting the tests of a correct solution earns full marks (they are restored, and run);
    # editing the tests of the stubs to `pass` earns nothing (they are restored, and fail)
    assert any(s.expect == "full" and s.deletes for s in samples)
    assert any(s.expect == "zero" and s.edits and not s.cells for s in samples)
    assert (SAMPLE_DIR / f"{HIDDEN_SAMPLE}.py").exists()


def _students_with(graded, status):
    return [s for s, sample in graded.samples.items() if sample.status == status]


@pytest.mark.slow
@needs_course
def test_endless_loop_is_cut_and_the_batch_goes_on(graded):
    looping = [s for s in _students_with(graded, "timed out")
               if "interrupted after" in graded.rows[s]["reason"]]  # (not the SIGINT-deaf one)
    assert looping
    for student in looping:
        nb = autograded_nb(graded.course, student, ASSIGNMENT, NOTEBOOK)
        assert any(agconfig.TIMEOUT_ENAME in errors_of(cell) for cell in nb.cells)
        assert graded.rows[student]["flagged"] == "True"
        assert (graded.course.feedback_dir(student, ASSIGNMENT) / f"{NOTEBOOK}.html").exists()
    # every other submission that kept its kernel alive was graded, before and after the loop
    for student, row in graded.rows.items():
        if row["status"] != "kernel died" and not row["status"].startswith("killed") \
                and student not in graded.odd and "did not answer" not in row["reason"]:
            assert row["status"] in ("graded", "timed out"), (student, row["reason"])
            assert (graded.course.autograded_dir(student, ASSIGNMENT) / f"{NOTEBOOK}.ipynb").exists()


@pytest.mark.slow
@needs_course
def test_dead_kernel_scores_zero_flagged_and_others_are_unaffected(graded):
    dead = _students_with(graded, "kernel died")
    assert dead
    for student in dead:
        row = graded.rows[student]
        assert row["score"] == "0" and row["auto_score"] == "0"
        assert row["needs_manual_grade"] == "True" and row["flagged"] == "True"
        assert "kernel died" in row["reason"]
        assert not graded.course.autograded_dir(student, ASSIGNMENT).exists()
        assert not graded.course.feedback_dir(student, ASSIGNMENT).exists()
        grades = cell_grades(graded.course, student, ASSIGNMENT)
        assert all(grades[n].auto == 0 and grades[n].manual for n in graded.auto)
    # (the reference and the correct samples, graded in the same run, kept full marks)
    assert auto_score(graded, "reference")[0] == auto_score(graded, "reference")[1]


@pytest.mark.slow
@needs_course
def test_deleted_and_edited_test_cells_are_restored_and_run(graded):
    source_cells = {grade_id(c): c.source for c in graded.source.cells if grade_id(c)}
    checked = 0
    for student, sample in graded.samples.items():
        targets = list(sample.deletes) + list(sample.edits)
        if not targets:
            continue
        nb = autograded_nb(graded.course, student, ASSIGNMENT, NOTEBOOK)
        cells = {grade_id(c): c for c in nb.cells if grade_id(c)}
        grades = cell_grades(graded.course, student, ASSIGNMENT)
        for gid in targets:
            assert gid in cells, f"{student}: {gid} not restored"
            # the gradebook's version, hidden tests included (a restored cell gets a comment)
            assert cells[gid].source.endswith(source_cells[gid])
            assert cells[gid].outputs, f"{student}: restored {gid} did not run"
            assert grades[gid].auto is not None and not grades[gid].manual
            checked += 1
    assert checked


@pytest.mark.slow
@needs_course
def test_feedback_for_every_graded_submission_shows_no_hidden_test(graded):
    hidden = hidden_test_lines(graded.source)
    assert hidden
    for student, row in graded.rows.items():
        html = graded.course.feedback_dir(student, ASSIGNMENT) / f"{NOTEBOOK}.html"
        if row["status"] not in ("graded", "timed out") or "did not answer" in row["reason"]:
            continue
        assert html.exists(), f"no feedback for {student}"
        text = html_text(html)
        assert "BEGIN HIDDEN TESTS" not in text and "END HIDDEN TESTS" not in text, student
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{student}'s feedback shows hidden tests: {leaked}"
    # a submission that fails a hidden test: its failure is reported, not the test's code
    student = student_id(SAMPLE_DIR / f"{HIDDEN_SAMPLE}.py")
    nb = autograded_nb(graded.course, student, ASSIGNMENT, NOTEBOOK)
    assert any(errors_of(c) for c in nb.cells if grade_id(c) in graded.auto)
    text = html_text(graded.course.feedback_dir(student, ASSIGNMENT) / f"{NOTEBOOK}.html")
    assert "reference" in text and not [line for line in hidden if line in text]


@pytest.mark.slow
@needs_course
def test_csv_has_a_row_for_every_submitted_student(graded):
    path = graded.course.work_dir / "grades.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    required = {"student_id", "assignment", "score", "max_score", "status",
                "needs_manual_grade"}
    assert required <= set(rows[0])
    students = {r["student_id"] for r in rows}
    assert students == set(graded.course.submitted_students(ASSIGNMENT))
    assert len(rows) == len(students) == len(graded.samples) + 2 + len(graded.odd)
    assert {r["status"] for r in rows} <= {"graded", "timed out", "kernel died", "not graded",
                                           "killed: memory", "killed: output", "killed: cpu"}
    assert all(r["sandbox"] for r in rows if r["status"] != "not graded")
    assert all(r["assignment"] == ASSIGNMENT for r in rows)


@pytest.mark.slow
@needs_course
def test_submissions_nbgrader_cannot_take_get_their_real_reason(graded):
    for student, why in graded.odd.items():
        row = graded.rows[student]
        assert row["status"] == "not graded" and why in row["reason"], row
        assert row["flagged"] == "True" and row["score"] == "0"


@pytest.mark.slow
@needs_course
def test_no_submission_is_altered_and_nothing_outside_the_sandbox_is_written(graded):
    assert _digests(graded.course.work_dir / "submitted") == graded.submitted
    for name, digests in graded.protected.items():
        assert _digests(graded.course.root / name) == digests, f"{name}/ changed"
    mark = "PWNED-by-hostile-overwrite"
    for top in (graded.course.root, ROOT / "lorakit", Path(tempfile.gettempdir()),
                Path.home()):
        hits = [p for p in top.glob(f"**/{mark}") if ".venv" not in p.parts] \
            if top != Path.home() else list(top.glob(mark))
        assert not hits, hits
    # the overwrite attack did run: its own (sandboxed) view saw writable places
    nb = autograded_nb(graded.course, "sample-hostile_overwrite", ASSIGNMENT, NOTEBOOK)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "overwrote:" in text
    from autograde.sandbox import detect
    if detect().root and detect().isolated:  # its ipc folder is locked once the kernel is up
        assert "ipc: refused" in text and "ipc: wrote" not in text


@pytest.mark.slow
@needs_course
def test_feedback_pages_are_sanitized(graded):
    html = (graded.course.feedback_dir("sample-hostile_html_script", ASSIGNMENT)
            / f"{NOTEBOOK}.html").read_text(encoding="utf-8")
    # (the cell's source shows the attack, escaped; no live tag may carry it)
    assert "<script>document.title" not in html
    assert "<img src=x onerror" not in html and "<iframe srcdoc" not in html


@pytest.mark.slow
@needs_course
def test_a_failing_test_cell_scores_zero_and_outputs_stay_small(graded):
    """Whatever a test cell displayed before its error (nbgrader would take a displayed number
    as partial credit), a test cell with an error earns nothing; and no autograded notebook
    is larger than the output caps allow."""
    limit = graded.course.notebook_output_bytes + (2 << 20)  # outputs + the notebook's cells
    for student in graded.rows:
        path = graded.course.autograded_dir(student, ASSIGNMENT) / f"{NOTEBOOK}.ipynb"
        if not path.exists():
            continue
        assert path.stat().st_size < limit, (student, path.stat().st_size)
        nb = nbformat.read(path, as_version=4)
        grades = cell_grades(graded.course, student, ASSIGNMENT)
        for cell in nb.cells:
            if grade_id(cell) in graded.auto and errors_of(cell):
                assert grades[grade_id(cell)].auto == 0, (student, grade_id(cell))


@pytest.mark.slow
@needs_course
def test_hostile_code_sees_nothing_and_reaches_no_network(graded):
    assert graded.network == [], "a submission reached the host's loopback"
    for student in ("sample-hostile_snoop", "sample-hostile_gradebook"):
        nb = autograded_nb(graded.course, student, ASSIGNMENT, NOTEBOOK)
        text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert "LEAK" not in text and "zeroed" not in text, text[:2000]
    text = "".join(o.get("text", "") for c in autograded_nb(
        graded.course, "sample-hostile_snoop", ASSIGNMENT, NOTEBOOK).cells
        for o in c.get("outputs", []))
    # TCP to the host's port is refused (its loopback is its own); a UDP datagram "sent" there
    # goes nowhere: the host's listener (above) received nothing
    assert "network tcp: sent" not in text and "network tcp:" in text


@pytest.mark.slow
@needs_course
def test_nothing_is_left_running(graded):
    from autograde.sandbox import SANDBOX_UID, detect
    procs = []
    for entry in Path("/proc").iterdir():
        try:
            procs.append((entry.stat().st_uid, (entry / "cmdline").read_bytes()))
        except (OSError, ValueError):
            continue
    assert not [cmd for _, cmd in procs if DAEMON_MARK.encode() in cmd]
    if os.geteuid() == 0 and detect().isolated:
        # a sandbox process whose sandbox (its run folder) is gone has outlived it; (kernels of
        # another grading run on this machine keep their folders)
        def orphan(cmd: bytes) -> bool:
            paths = [a for a in cmd.decode(errors="replace").split("\0") if "/lls-" in a]
            return not paths or not all(Path(p).exists() for p in paths)
        left = [cmd for uid, cmd in procs if uid == SANDBOX_UID and orphan(cmd)]
        assert not left, f"processes outlived their sandbox: {left[:3]}"
    for mount in set(detect().cgroups.values()):
        left = [p for p in (mount / "loralab").glob("*") if p.is_dir()]
        assert not left, left


@pytest.mark.slow
@needs_course
def test_regrade_gives_the_same_scores(graded):
    partial = sorted(s for s, sample in graded.samples.items() if sample.expect == "partial")
    students = ["reference"] + partial[:1]
    before = {s: cell_grades(graded.course, s, ASSIGNMENT) for s in students}
    for student in students:
        outcomes = P.autograde(graded.course, ASSIGNMENT, student, regrade=True)
        assert [o.student for o in outcomes] == [student]
        after = cell_grades(graded.course, student, ASSIGNMENT)
        assert {k: v.auto for k, v in after.items()} == {k: v.auto for k, v in before[student].items()}


# -- every other assignment: reference full marks, release zero, a buggy sample partial -----
OTHERS = sorted(p.parent.name for p in (ROOT / "solutions").glob("*/*.ipynb")
                if p.parent.name != ASSIGNMENT)


def first_buggy_sample(assignment: str):
    paths = sorted((ROOT / "autograde" / "samples" / assignment).glob("bug_*.py"))
    samples = [s for s in map(load_sample, paths) if s.expect == "partial"]
    assert samples, f"autograde/samples/{assignment}/ needs a bug_*.py sample expecting partial"
    return samples[0]


@pytest.fixture(scope="module")
def graded_others(tmp_path_factory):
    """One autograde run per assignment, three submissions each (the full sample matrix of
    every assignment is graded in-process by tests/checks/test_checks_*.py)."""
    course = make_course(tmp_path_factory.mktemp("others"), agconfig.CELL_TIMEOUT,
                         ROOT / "solutions")
    course.workers = 3  # all three at once: the cores stay busy while one waits on a kernel
    P.release(course, OTHERS)
    for assignment in OTHERS:
        (source,) = (course.source_dir / assignment).glob("*.ipynb")
        release_path = course.release_dir / assignment / source.name
        P.submit(course, assignment, "reference", {source.stem: source})
        P.submit(course, assignment, "untouched-release", {source.stem: release_path})
        P.submit(course, assignment, "buggy",
                 {source.stem: build_submission(release_path, first_buggy_sample(assignment))})
        started = time.monotonic()
        P.grade(course, assignment)
        print(f"\n{assignment}: graded 3 submissions in {time.monotonic() - started:.0f} s")
    return course


def assignment_score(course, student, assignment) -> tuple[float, float]:
    auto = autograded_names(course, assignment)
    grades = cell_grades(course, student, assignment)
    return sum(grades[n].auto or 0.0 for n in auto), sum(grades[n].max for n in auto)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", OTHERS)
def test_other_assignment_grades_reference_release_and_bug(graded_others, assignment):
    score, top = assignment_score(graded_others, "reference", assignment)
    assert top > 0 and score == top, f"reference: {score:g} of {top:g}"
    score, _ = assignment_score(graded_others, "untouched-release", assignment)
    assert score == 0, f"untouched release: {score:g} points"
    score, _ = assignment_score(graded_others, "buggy", assignment)
    assert 0 < score < top, f"buggy sample: {score:g} of {top:g}"


# -- a tiny synthetic course: the failure modes that are slow or impossible on the real one --
def _tiny_notebook():
    def meta(gid, **kw):
        return {"nbgrader": {"grade_id": gid, "grade": False, "solution": False, "locked": False,
                             "schema_version": 3, **kw}}
    return new_notebook(cells=[
        new_markdown_cell("# Tiny", metadata=meta("intro", locked=True)),
        new_code_cell("import os\nprint('grading:', os.environ.get('NBGRADER_EXECUTION'))"),
        new_code_cell("def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n"
                      "    ### END SOLUTION", metadata=meta("square", solution=True)),
        new_code_cell('assert square(2) == 4, "square(2)"\n### BEGIN HIDDEN TESTS\n'
                      'assert square(-3) == 9, "negative numbers too"\n### END HIDDEN TESTS',
                      metadata=meta("test_square", grade=True, locked=True, points=2)),
        new_markdown_cell("Read-only text.", metadata=meta("between", locked=True)),
        new_code_cell('assert square(5) == 25', metadata=meta("test_more", grade=True,
                                                               locked=True, points=1)),
        new_code_cell("def cube(x):\n    ### BEGIN SOLUTION\n    return x ** 3\n"
                      "    ### END SOLUTION", metadata=meta("cube", solution=True)),
        new_code_cell('assert cube(2) == 8', metadata=meta("test_cube", grade=True, locked=True,
                                                           points=3)),
        new_markdown_cell("YOUR ANSWER HERE", metadata=meta("explain", grade=True,
                                                            solution=True, points=2)),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("tiny"), timeout=5)
    (course.source_dir / "01_tiny").mkdir(parents=True)
    nbformat.write(_tiny_notebook(), course.source_dir / "01_tiny" / "tiny.ipynb")
    P.release(course)
    release_nb = P.release_notebook(course, "01_tiny")

    def edited(**sources):
        nb = copy.deepcopy(release_nb)
        nb.cells = [c for c in nb.cells if sources.get(grade_id(c), "") is not None]
        for c in nb.cells:
            c.source = sources.get(grade_id(c), c.source)
        return nb

    square, cube = "def square(x):\n    return x * x", "def cube(x):\n    return x ** 3"
    submissions = {
        "reference": course.source_dir / "01_tiny" / "tiny.ipynb",
        "hidden-fail": edited(square="def square(x):\n    return abs(x) * x", cube=cube),
        "deaf": edited(square="import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                              "while True:\n    pass", cube=cube),
        # the test cell after a deleted answer cell and after a read-only cell: nbgrader 0.9.6's
        # own restoring raises KeyError on both
        "deletes-with-neighbours": edited(square=square, cube=None, test_cube=None,
                                          test_more=None),
    }
    for student, nb in submissions.items():
        P.submit(course, "01_tiny", student, {"tiny": nb})
    P.submit(course, "01_tiny", "misnamed", {"tiny-copy": release_nb})
    corrupt = course.submitted_dir("corrupt", "01_tiny")
    corrupt.mkdir(parents=True)
    (corrupt / "tiny.ipynb").write_text("{ not a notebook", encoding="utf-8")
    (corrupt / "timestamp.txt").write_text("2026-01-02 03:04:05 UTC", encoding="utf-8")
    rows = P.grade(course, "01_tiny")
    return SimpleNamespace(course=course, rows={r["student_id"]: r for r in rows})


@pytest.mark.slow
def test_tiny_reference_and_hidden_failure(tiny):
    assert tiny.rows["reference"]["auto_score"] == "6"
    assert tiny.rows["hidden-fail"]["auto_score"] == "4"  # fails only the hidden assert
    nb = autograded_nb(tiny.course, "reference", "01_tiny", "tiny")
    assert "grading: autograde" in nb.cells[1].outputs[0]["text"]  # NBGRADER_EXECUTION
    text = html_text(tiny.course.feedback_dir("hidden-fail", "01_tiny") / "tiny.html")
    assert "negative numbers too" in text  # the failure message teaches...
    assert "square(-3)" not in text and "HIDDEN" not in text  # ...the test stays hidden
    for student in ("reference", "hidden-fail", "deletes-with-neighbours"):
        assert tiny.rows[student]["status"] == "graded"


@pytest.mark.slow
def test_tiny_kernel_deaf_to_interrupts_fails_alone(tiny):
    row = tiny.rows["deaf"]
    assert (row["status"], row["auto_score"], row["flagged"]) == ("timed out", "0", "True")
    assert "did not answer the interrupt" in row["reason"] and "'square'" in row["reason"]
    assert not tiny.course.autograded_dir("deaf", "01_tiny").exists()


@pytest.mark.slow
def test_tiny_deleted_cells_restored_next_to_missing_neighbours(tiny):
    grades = cell_grades(tiny.course, "deletes-with-neighbours", "01_tiny")
    assert (grades["test_square"].auto, grades["test_more"].auto, grades["test_cube"].auto) \
        == (2, 1, 0)
    nb = autograded_nb(tiny.course, "deletes-with-neighbours", "01_tiny", "tiny")
    order = [grade_id(c) for c in nb.cells if grade_id(c)]
    assert order.index("test_more") > order.index("between")
    assert errors_of(next(c for c in nb.cells if grade_id(c) == "test_cube")) == ["NameError"]


@pytest.mark.slow
def test_tiny_unreadable_submissions_are_recorded(tiny):
    for student, why in (("misnamed", "missing tiny.ipynb"),
                         ("corrupt", "not a readable notebook: Notebook does not appear to be JSON")):
        row = tiny.rows[student]
        assert row["status"] == "not graded" and why in row["reason"]
        assert row["score"] == "0" and row["flagged"] == "True"
        assert row["needs_manual_grade"] == "True"
    assert tiny.rows["corrupt"]["timestamp"].startswith("2026-01-02T03:04:05")
    assert set(tiny.rows) == set(tiny.course.submitted_students("01_tiny"))


@pytest.mark.slow
def test_tiny_export_command(tiny, tmp_path):
    out = tmp_path / "grades.csv"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "autograde", "--root", str(tiny.course.root),
                    "--work-dir", str(tiny.course.work_dir), "export", "--out", str(out)],
                   check=True, env=env, capture_output=True, cwd=tmp_path)
    with out.open(newline="", encoding="utf-8") as fh:
        rows = {r["student_id"]: r for r in csv.DictReader(fh)}
    assert rows == tiny.rows


@pytest.mark.slow
def test_feedback_that_does_not_render_is_flagged_by_name(tiny, tmp_path, monkeypatch):
    """On a copy of the tiny course, nbgrader writes no feedback HTML (a stand-in for a
    template error): the student is flagged with where to look, both when grading writes
    the feedback as results arrive and when `feedback` writes what is missing."""
    root = tmp_path / "course"
    shutil.copytree(tiny.course.root, root)
    course = P.Course(root, root / "autograde" / "course", timeout=5, echo=quiet)
    real_api = P.Course.api

    def api(self, **kw):  # nbgrader's API, but its feedback fails: nothing written
        nbgrader = real_api(self, **kw)
        nbgrader.generate_feedback = lambda assignment, student, force=True: {
            "success": False, "log": f"cannot render {student}", "error": ""}
        return nbgrader

    monkeypatch.setattr(P.Course, "api", api)
    logs = course.work_dir / "logs"
    (outcome,) = P.autograde(course, "01_tiny", "reference", regrade=True, with_feedback=True)
    assert outcome.status == "graded"
    assert not course.feedback_dir("reference", "01_tiny").exists()
    row = {r["student_id"]: r for r in P.grade_rows(course)}["reference"]
    assert row["flagged"] == "True" and "feedback did not render" in row["flags"]
    assert "feedback-01_tiny-reference.log" in row["flags"]
    assert "cannot render reference" in (logs / "feedback-01_tiny-reference.log").read_text()

    assert P.feedback(course, "01_tiny", only_missing=True) == []  # tries again, fails again
    rows = {r["student_id"]: r for r in P.grade_rows(course)}
    assert rows["reference"]["flags"].count("feedback did not render") == 1
    assert "feedback-01_tiny.log" in rows["reference"]["flags"]
    assert "cannot render *" in (logs / "feedback-01_tiny.log").read_text()
    assert rows["hidden-fail"]["flagged"] == tiny.rows["hidden-fail"]["flagged"]  # untouched


@pytest.mark.slow
def test_tiny_regrade_after_a_bad_resubmission_keeps_no_stale_grade(tiny):
    """(Runs last: it changes the tiny course.) The reference student resubmits a misnamed
    notebook: the regrade drops the stale autograded copy and feedback, and the scores."""
    course = tiny.course
    folder = course.submitted_dir("reference", "01_tiny")
    (folder / "tiny.ipynb").rename(folder / "tiny (1).ipynb")
    outcomes = P.autograde(course, "01_tiny", "reference")
    assert [(o.student, o.status) for o in outcomes] == [("reference", "not graded")]
    assert "missing tiny.ipynb" in outcomes[0].reason
    assert not course.autograded_dir("reference", "01_tiny").exists()
    assert not course.feedback_dir("reference", "01_tiny").exists()
    row = {r["student_id"]: r for r in P.grade_rows(course)}["reference"]
    assert (row["auto_score"], row["flagged"], row["needs_manual_grade"]) == ("0", "True", "True")
    others = {r["student_id"]: r for r in P.grade_rows(course)}
    assert others["hidden-fail"] == tiny.rows["hidden-fail"]  # the others are untouched


# -- grading a class: Dask, PostgreSQL, resuming, one run at a time, manual scores kept ------
CLASS = ["reference", "sample-correct_einsum", "sample-bug_no_scaling", "sample-bug_ba_first"]


def class_course(tmp: Path, graded, students=CLASS, **settings) -> P.Course:
    """A fresh course holding copies of some of `graded`'s submissions."""
    course = make_course(tmp, E2E_TIMEOUT, ROOT / "solutions")
    course.limits = graded.course.limits
    for key, value in settings.items():
        setattr(course, key, value)
    P.release(course, [ASSIGNMENT])
    for student in students:
        shutil.copytree(graded.course.submitted_dir(student, ASSIGNMENT),
                        course.submitted_dir(student, ASSIGNMENT))
    return course


def scores_of(course, students) -> dict[str, dict[str, float]]:
    return {s: {k: v.auto for k, v in cell_grades(course, s, ASSIGNMENT).items()}
            for s in students}


def ledger_rows(course) -> dict[str, dict]:
    with course.ledger() as ledger:
        return ledger.results(ASSIGNMENT).get(ASSIGNMENT, {})


def test_ledger_lock_refuses_a_second_run_and_takes_over_a_dead_one(tmp_path):
    from sqlalchemy import insert

    from autograde.ledger import LOCKS, Busy, Ledger
    ledger = Ledger(f"sqlite:///{tmp_path / 'gb.db'}")
    with ledger.lock("A") as run:
        with pytest.raises(Busy, match=r"another grading run of A is in progress \(pid "
                                       rf"{os.getpid()}"):
            with ledger.lock("A"):
                pass
        with ledger.lock("B") as other:  # another assignment: no conflict
            assert other != run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    with ledger.engine.begin() as conn:  # a killed run left its lock behind
        conn.execute(insert(LOCKS).values(assignment="A", owner="x", host=socket.gethostname(),
                                          pid=dead.pid, started="then", heartbeat=time.time()))
    with ledger.lock("A"):
        assert ledger.holder("A")["pid"] == os.getpid()
    with ledger.engine.begin() as conn:  # a silent run on another machine
        conn.execute(insert(LOCKS).values(assignment="A", owner="y", host="elsewhere", pid=1,
                                          started="then", heartbeat=time.time() - 3600))
    with ledger.lock("A"):
        pass
    assert ledger.holder("A") is None
    ledger.put("A", "ada", fingerprint="f", status="graded", flags=["x; y"], seconds=1.5)
    ledger.put("A", "ada", fingerprint="g", status="timed out", reason="r")
    assert [(r["fingerprint"], r["status"], r["flags"]) for r in ledger.results()["A"].values()
            ] == [("g", "timed out", [])]
    ledger.close()


@pytest.mark.slow
@needs_course
def test_a_second_grading_run_of_an_assignment_is_refused(graded):
    with graded.course.ledger() as ledger, ledger.lock(ASSIGNMENT):
        with pytest.raises(P.PipelineError, match="another grading run of 01_lora_linear"):
            P.autograde(graded.course, ASSIGNMENT)


@pytest.mark.slow
@needs_course
def test_an_unchanged_class_is_not_graded_again_and_a_change_is(graded):
    """Re-running grades only what changed: a resubmission, nothing else."""
    course = graded.course
    before = ledger_rows(course)
    assert set(before) >= set(graded.rows) - set(graded.odd) - {"bad[id", "star*id"}
    started = time.monotonic()
    outcomes = P.autograde(course, ASSIGNMENT)
    assert time.monotonic() - started < 30  # fingerprints only: no sandbox, no nbgrader
    assert ledger_rows(course) == before
    assert {o.student: o.status for o in outcomes} == {
        s: r["status"] for s, r in graded.rows.items()}
    student = "sample-bug_no_scaling"
    path = course.submitted_dir(student, ASSIGNMENT) / "timestamp.txt"
    path.write_text("2026-01-01 12:00:00 UTC\n")  # resubmitted (same notebook, new time)
    try:
        P.autograde(course, ASSIGNMENT)
        after = ledger_rows(course)
        assert after[student]["run"] != before[student]["run"]
        assert {s: r["run"] for s, r in after.items() if s != student} == {
            s: r["run"] for s, r in before.items() if s != student}
    finally:
        path.unlink()


@pytest.mark.slow
@needs_course
def test_dask_cluster_grades_like_the_local_path(graded, tmp_path):
    """A real LocalCluster with 2 worker processes; one of them is killed mid-task: the task
    is rescheduled, and every score equals the local run's."""
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        course = class_course(tmp_path, graded, cluster=cluster.scheduler_address)
        killed = []

        def kill_one_worker():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    pids = client.run(os.getpid, workers=busy[:1])
                    time.sleep(2)  # its task is running
                    os.kill(next(iter(pids.values())), 9)
                    killed.append(busy[0])
                time.sleep(0.2)

        killer = threading.Thread(target=kill_one_worker)
        killer.start()
        P.autograde(course, ASSIGNMENT)
        killer.join()
    assert killed, "no worker was busy"
    assert scores_of(course, CLASS) == scores_of(graded.course, CLASS)
    rows = ledger_rows(course)
    assert {s: rows[s]["status"] for s in CLASS} == {s: "graded" for s in CLASS}
    assert all(rows[s]["fingerprint"] for s in CLASS)


def _workers_running(kind: str = "any") -> list:
    """Grading processes of this machine: fork servers (`python -m autograde.worker --serve`)
    and workers (forked from one, so with its command line, and named loralab-worker; or
    started on their own). ``kind``: "any", or "worker" for the workers only."""
    import psutil
    found = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "autograde.worker" not in cmdline:
                continue
            if kind == "any" or proc.info["name"] == "loralab-worker" or "--serve" not in cmdline:
                found.append(proc)
    return found


@pytest.mark.slow
@needs_course
def test_a_killed_coordinator_and_a_killed_worker_lose_and_duplicate_nothing(graded, tmp_path):
    """`python -m autograde grade` is killed (SIGKILL) after its first result; its workers die
    with it; the next run takes the lock over and grades only the rest. A worker killed in
    that run is retried. Scores equal the local run's, one row and one submission each.
    (Both runs use 1 worker and no hostile neighbours: the scores also equal those of a
    serial run of each student alone.)"""
    students = CLASS
    # the command line's limits (the default ones): the settings are part of a fingerprint
    course = class_course(tmp_path, graded, students, limits=agconfig.SANDBOX_LIMITS)
    cmd = [sys.executable, "-m", "autograde", "--root", str(course.root), "--work-dir",
           str(course.work_dir), "grade", ASSIGNMENT, "--workers", "1",
           "--timeout", str(E2E_TIMEOUT)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if course.work_dir.joinpath("gradebook.db").exists() and ledger_rows(course):
            break
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    first = ledger_rows(course)
    assert 1 <= len(first) < len(students), "the run ended before it could be killed"
    time.sleep(3)  # the orphaned fork server kills its worker and exits
    assert not _workers_running()

    killed = []

    def kill_a_worker():
        end = time.monotonic() + 120
        while time.monotonic() < end and not killed:
            running = _workers_running("worker")  # a worker, not its fork server
            if running:
                time.sleep(2)
                running[0].kill()
                killed.append(running[0].pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    course.workers = 1
    P.autograde(course, ASSIGNMENT)
    killer.join()
    assert killed
    rows = ledger_rows(course)
    assert sorted(rows) == sorted(students)
    assert {s: rows[s]["run"] for s in first} == {s: r["run"] for s, r in first.items()}
    assert {s: rows[s]["status"] for s in students} == {s: "graded" for s in students}
    assert scores_of(course, students) == scores_of(graded.course, students)
    with course.gradebook() as gb:
        subs = [s.student.id for s in gb.find_assignment(ASSIGNMENT).submissions]
    assert sorted(subs) == sorted(students)


# -- the fork server's workers (autograde/runner.py: ForkServer, autograde/worker.py: serve) --
STATE_CELL = """import lorakit
print("left by an earlier task:", getattr(lorakit, "_loralab_mark", None))
lorakit._loralab_mark = {student!r}"""


def _tiny_task(student: str, *extra, notebook_timeout: int = 60) -> dict:
    """A task as Course.task makes it, from the tiny notebook (its source: solutions and
    hidden tests in place) and ``extra`` cells."""
    from autograde.sandbox import Limits
    nb = _tiny_notebook()
    nb.cells.extend(extra)
    return {"assignment": "01_tiny", "student": student, "notebook": "tiny",
            "fingerprint": "f" * 40, "source": nbformat.writes(nb), "files": {},
            "limits": dataclasses.asdict(Limits(memory=1 << 30)), "timeout": 20,
            "notebook_timeout": notebook_timeout, "cell_output_bytes": 1 << 20,
            "notebook_output_bytes": 4 << 20}


def _test_cell(grade_id: str, source: str):
    return new_code_cell(source, metadata={"nbgrader": {
        "grade_id": grade_id, "grade": True, "solution": False, "locked": True, "points": 1,
        "schema_version": 3}})


def _printed(result: dict, gid: str) -> str:
    """What the judge's run of test cell ``gid`` printed, in the executed notebook."""
    nb = nbformat.reads(result["notebook"], as_version=4)
    (cell,) = [c for c in nb.cells if grade_id(c) == gid]
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def _forked_workers(server) -> list:
    import psutil
    with contextlib.suppress(psutil.Error, TypeError):
        return [c for c in psutil.Process(server.pid).children()
                if c.name() == "loralab-worker"]
    return []


@pytest.mark.slow
def test_forked_workers_share_no_state():
    """Two tasks forked from one server: each in a process of its own, each from the
    server's pristine state. The test cell runs here on the host, in the worker (the judge):
    it reads, then sets, a mark on a module; the second task must not see the first's mark.
    The kernel still sees NBGRADER_EXECUTION=autograde."""
    from autograde import runner
    server = runner.ForkServer()
    try:
        results = [runner.run_task(_tiny_task(student, _test_cell("test_state", STATE_CELL
                                                                   .format(student=student))),
                                   server) for student in ("first", "second")]
        server_pid = server.pid
    finally:
        server.stop()
    for result in results:
        assert result["status"] == "graded", result["reason"]
        assert "left by an earlier task: None" in _printed(result, "test_state")
        nb = nbformat.reads(result["notebook"], as_version=4)
        assert "grading: autograde" in nb.cells[1].outputs[0]["text"]
    pids = {r["worker_pid"] for r in results}
    assert len(pids) == 2 and server_pid not in pids
    assert server.pid is None  # stopped
    assert server.starts == 1  # both forked from the same server


@pytest.mark.slow
def test_a_killed_forked_worker_is_retried_and_one_past_its_limit_is_killed_with_its_sandbox():
    """LocalRunner: the forked worker of a task is killed (SIGKILL) mid-task; the task is
    tried once more and graded. ForkServer.run: a worker past its limit is killed with its
    process group, and its sandbox (bubblewrap, the kernel) dies with it."""
    import psutil

    from autograde import runner
    local = runner.LocalRunner(1)
    killed = []

    def kill_the_first_worker():
        end = time.monotonic() + 120
        while time.monotonic() < end and not killed:
            workers = _forked_workers(local.server) if local.server is not None else []
            if workers:
                time.sleep(1)  # its sandbox is starting
                workers[0].kill()
                killed.append(workers[0].pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_worker)
    killer.start()
    ((task, result),) = [pair for batch in local.batches([_tiny_task("killed-once")])
                         for pair in batch]
    killer.join()
    assert killed
    assert result["status"] == "graded" and result.get("final", True), result
    assert result["worker_pid"] != killed[0]
    assert local.server is None  # stopped when batches ended

    server = runner.ForkServer()
    family = []

    def watch():
        end = time.monotonic() + 60
        while time.monotonic() < end and not family:
            for worker in _forked_workers(server):
                with contextlib.suppress(psutil.Error):
                    below = worker.children(recursive=True)
                    if any("ipykernel" in " ".join(p.cmdline()) for p in below):
                        family.extend([worker, *below])
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            task = _tiny_task("sleeper", new_code_cell("import time\ntime.sleep(600)"),
                              notebook_timeout=900)
            Path(tmp, "task.json").write_text(json.dumps(task), encoding="utf-8")
            started = time.monotonic()
            ended, _ = server.run(Path(tmp), limit=15)
            assert ended == runner.KILLED
            assert time.monotonic() - started < 15 + 10
            assert not Path(tmp, "result.json").exists()
        watcher.join()
        assert family, "the worker never had its kernel running"
        _, alive = psutil.wait_procs(family, timeout=10)
        assert not alive, [p.pid for p in alive]
        assert server.pid is not None  # the server itself goes on
    finally:
        server.stop()


@pytest.mark.slow
def test_the_fork_server_and_its_workers_die_with_the_process_that_started_them(tmp_path):
    """A process runs a task through its fork server and is killed (SIGKILL) mid-task: the
    server kills the worker (and with it its sandbox) and exits. The server has imported
    torch, and has one thread (it forks)."""
    import psutil
    task = tmp_path / "task.json"
    task.write_text(json.dumps(_tiny_task("orphan", new_code_cell("import time\n"
                                                                  "time.sleep(600)"))))
    code = ("import json, sys\nfrom autograde import runner\n"
            "runner.run_task(json.loads(open(sys.argv[1]).read()))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(task)], cwd=ROOT)
    try:
        family = []
        end = time.monotonic() + 120
        while time.monotonic() < end and not family:
            with contextlib.suppress(psutil.Error):
                for server in psutil.Process(proc.pid).children():
                    workers = [c for c in server.children() if c.name() == "loralab-worker"]
                    if workers:
                        assert server.name() == "loralab-forksrv"
                        assert server.num_threads() == 1
                        family = [server, *workers, *workers[0].children(recursive=True)]
            time.sleep(0.2)
        assert family, "no worker started"
        assert "libtorch" in Path(f"/proc/{family[0].pid}/maps").read_text()  # imported there
    finally:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, [(p.pid, p.name()) for p in alive]


@pytest.mark.slow
@needs_course
def test_regrading_keeps_manual_scores_and_comments(graded):
    """A score and a comment entered in the formgrader (the gradebook) survive a regrade."""
    course, student = graded.course, "sample-bug_no_scaling"
    with course.gradebook() as gb:
        sub = gb.find_submission(ASSIGNMENT, student)
        (nb,) = sub.notebooks
        auto = sorted(P._autograded_cells(nb.notebook))
        test_grade = next(g for g in nb.grades if g.name == auto[0])
        written = next(g for g in nb.grades if g.name not in auto)
        test_grade.manual_score, written.manual_score = 0.5, 1.0
        answer = written.name
        comment = next(c for c in nb.comments if c.name == answer)
        comment.manual_comment = "<b>good</b> reasoning"
        gb.db.commit()
    P.autograde(course, ASSIGNMENT, student, regrade=True)
    with course.gradebook() as gb:
        (nb,) = gb.find_submission(ASSIGNMENT, student).notebooks
        grades = {g.name: g for g in nb.grades}
        comments = {c.name: c for c in nb.comments}
        assert grades[auto[0]].manual_score == 0.5
        assert grades[answer].manual_score == 1.0
        assert comments[answer].manual_comment == "<b>good</b> reasoning"
        grades[auto[0]].manual_score = None  # the other tests read autograded scores only
        gb.db.commit()


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server on loopback in a temp dir (autograde/postgres.py)."""
    from autograde.postgres import LocalPostgres, PostgresUnavailable
    folder = tempfile.mkdtemp(prefix="loralab-pg-")  # the postgres user must reach it
    try:
        server = LocalPostgres(folder)
        server.start()
    except PostgresUnavailable as error:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"no PostgreSQL server here: {error}")
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@needs_course
def test_postgresql_gradebook_release_grade_export(graded, postgres, tmp_path):
    """Release, grade with 2 workers, export: into PostgreSQL, with the local run's scores."""
    course = class_course(tmp_path, graded, db_url=postgres.url, workers=2)
    assert not (course.work_dir / "gradebook.db").exists()
    rows = P.grade(course, ASSIGNMENT, out=tmp_path / "grades.csv")
    assert scores_of(course, CLASS) == scores_of(graded.course, CLASS)
    mine = {r["student_id"]: (r["score"], r["auto_score"], r["status"]) for r in rows}
    local = {s: (graded.rows[s]["score"], graded.rows[s]["auto_score"], graded.rows[s]["status"])
             for s in CLASS}
    assert mine == local
    assert (tmp_path / "grades.csv").read_text().count("\n") == len(CLASS) + 1
    assert not (course.work_dir / "gradebook.db").exists()
    import sqlalchemy
    engine = sqlalchemy.create_engine(postgres.url)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text(
            "select count(*) from loralab_results where assignment = :a"), {"a": ASSIGNMENT}
        ).scalar() == len(CLASS)
    engine.dispose()
    report = json.loads((course.work_dir / "reports" / f"{ASSIGNMENT}.json").read_text())
    assert report["summary"]["submissions"] == len(CLASS)
