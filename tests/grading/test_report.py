"""The class report (autograde/report.py), on a temporary course with fabricated results.

No kernel runs: the release is generated once (nbgrader generate_assignment), then each
"executed" notebook is written by hand (test cells with the outputs and ``metadata.loralab``
the judge writes) and scored by nbgrader's own scoring pass (the pipeline's
SCORE_PREPROCESSORS, nothing executed), so the gradebook and autograded/ hold what a grading
run would leave. A failed run and a submission that could not be graded are recorded as the
pipeline records them (zeros needing a manual grade; a row in the ledger).
"""
from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_output

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from autograde import pipeline as P  # noqa: E402
from autograde import report as R  # noqa: E402

A = "01_lora_linear"
NB = "lora_linear"
SCRIPT = '<script>alert("pwned")</script>'
ODD_ID = "<img src=x onerror=alert(1)>"  # a folder name nbgrader cannot grade (no '/')

pytestmark = [
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"),
    pytest.mark.skipif(not (ROOT / "solutions" / A / f"{NB}.ipynb").exists(),
                       reason=f"solutions/{A}/{NB}.ipynb missing"),
]

# What each executed submission's test cells did: {grade_id: (ename, message, concept)}.
SCALING = "scaling is wrong: expected alpha/r = 2, got 1"
FAILS = {
    "ada": {},
    "bob": {"test_scaling": ("CheckFailure", SCALING, "lora.scaling"),
            "test_update": ("CheckFailure", SCALING + " (in the update)", "lora.scaling")},
    "cat": {"test_scaling": ("CheckFailure", f"scaling {SCRIPT} " + "x" * 400, "lora.scaling"),
            "test_merge": ("NameError", "name 'merge_lora' is not defined", None)},
}
#: Written answers each student filled in (nbgrader: a changed answer needs a manual grade).
ANSWERS = {"ada": ["critique_q1"], "cat": ["critique_q1", "critique_q2"]}
SECONDS = {"ada": 3.2, "bob": 4.0, "cat": 2.5, "dan": 9.9}
BOB_FLAG = "passed in the kernel, failed on the host: test_scaling (the grade is the host's)"
DAN_REASON = "the kernel died while running cell 'test_order' (the code exited or crashed Python)"
EVE_REASON = "missing lora_linear.ipynb in the submission (found: notes.txt)"


def quiet(_message):
    pass


def make_course(tmp: Path, work: str = "course") -> P.Course:
    root = tmp / "root"
    if not (root / "solutions" / A).is_dir():
        (root / "solutions" / A).mkdir(parents=True)
        shutil.copy(ROOT / "solutions" / A / f"{NB}.ipynb", root / "solutions" / A)
    return P.Course(root=root, work_dir=tmp / work, progress=False, echo=quiet)


def executed_notebook(release, fails: dict, answers: list[str]):
    """The release notebook as the worker hands it back: every test cell judged (outputs and
    metadata.loralab), the given answers written."""
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        gid = meta.get("grade_id")
        if gid in answers:
            cell.source = f"My answer to {gid}."
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        cell.outputs, loralab = [], {"judged_on_host": True, "passed_in_kernel": True}
        if gid in fails:
            ename, message, concept = fails[gid]
            cell.outputs = [new_output("error", ename=ename, evalue=message,
                                       traceback=[f"{ename}: {message}"])]
            if concept:
                loralab["concept"] = concept
        cell.metadata["loralab"] = loralab
    return nb


def score_with_nbgrader(course: P.Course, executed: Path) -> None:
    """nbgrader's scoring pass of the pipeline over ``executed`` (nothing is executed)."""
    from nbgrader.apps import NbGraderAPI

    cfg = course.config(submitted_directory=str(executed),
                        autograded_directory=str(course.work_dir / "autograded"))
    cfg.Autograde.sanitize_preprocessors = []
    cfg.Autograde.autograde_preprocessors = P.SCORE_PREPROCESSORS
    result = NbGraderAPI(config=cfg).autograde(A, "*", force=True, create=True)
    assert result["success"], result.get("log")


def record_failed_run(course: P.Course, student: str) -> None:
    """What the pipeline records for a run that died: every autograded cell 0 and needing a
    manual grade, the notebook flagged, no autograded notebook."""
    with course.gradebook() as gb:
        gb.update_or_create_student(student)
        sub = gb.update_or_create_submission(A, student)
        for nb in sub.notebooks:
            auto = P._autograded_cells(nb.notebook)
            for grade in nb.grades:
                if grade.name in auto:
                    grade.auto_score, grade.needs_manual_grade = 0.0, True
            nb.flagged = True
        gb.db.commit()


def record_outcomes(course: P.Course, outcomes: dict[str, dict]) -> None:
    """How each run ended, where the pipeline keeps it (the ledger: status, reason, flags,
    seconds)."""
    with course.ledger() as ledger:
        for student, out in outcomes.items():
            ledger.put(A, student, fingerprint="", autograded=out["status"] == "graded",
                       sandbox="test", run="test", **out)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    course = make_course(tmp)
    P.release(course, [A])
    release = P.release_notebook(course, A)
    executed = course.work_dir / "executed"
    for student, fails in FAILS.items():
        nb = executed_notebook(release, fails, ANSWERS.get(student, []))
        (executed / student / A).mkdir(parents=True)
        nbformat.write(nb, executed / student / A / f"{NB}.ipynb")
        P.submit(course, A, student, {NB: release})
    score_with_nbgrader(course, executed)
    shutil.rmtree(executed)
    P.submit(course, A, "dan", {NB: release})
    record_failed_run(course, "dan")
    for odd in ("eve", ODD_ID):
        folder = course.submitted_dir(odd, A)
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("my notebook is elsewhere\n")
    outcomes = {s: {"status": "graded", "seconds": SECONDS[s]} for s in FAILS}
    outcomes["bob"]["flags"] = [BOB_FLAG]
    outcomes["dan"] = {"status": "kernel died", "reason": DAN_REASON, "seconds": SECONDS["dan"]}
    outcomes["eve"] = {"status": "not graded", "reason": EVE_REASON}
    outcomes[ODD_ID] = {"status": "not graded",
                        "reason": f"student id {ODD_ID!r} cannot be graded"}
    record_outcomes(course, outcomes)
    return course


@pytest.fixture(scope="module")
def written(course):
    html_path, json_path = R.write_report(course, A)
    return html_path.read_text(encoding="utf-8"), json.loads(json_path.read_text("utf-8"))


def by(items: list[dict], key: str) -> dict:
    return {item[key]: item for item in items}


# -- the data ----------------------------------------------------------------------------
def test_files_are_written_in_reports(course, written):
    folder = course.work_dir / "reports"
    assert sorted(p.name for p in folder.iterdir()) == [f"{A}.html", f"{A}.json"]
    _, data = written
    assert data["schema"] == 1 and data["assignment"] == A
    assert "base64" not in json.dumps(data)  # the pictures are in the HTML only


def test_metadata_loralab_survives_nbgrader_scoring(course):
    nb = nbformat.read(course.autograded_dir("bob", A) / f"{NB}.ipynb", as_version=4)
    meta = {c.metadata["nbgrader"]["grade_id"]: c.metadata.get("loralab")
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id", "")
            .startswith("test_")}
    assert meta["test_scaling"] == {"judged_on_host": True, "passed_in_kernel": True,
                                    "concept": "lora.scaling"}
    assert meta["test_shapes"] == {"judged_on_host": True, "passed_in_kernel": True}


def test_summary_counts_statuses_and_scores(written):
    s = written[1]["summary"]
    assert s["submissions"] == 6 and s["graded"] == 3 and s["not_graded"] == 2
    assert s["by_status"] == {"graded": 3, "kernel died": 1, "not graded": 2}
    assert s["executed"] == 3 and s["scored"] == 4
    assert s["auto_max_score"] == 14 and s["max_score"] == 14 + 7
    # autograded points: ada 14, bob 14 - 1 - 2, cat 14 - 1 - 3, dan 0 (the run died)
    assert s["auto_score"]["mean"] == pytest.approx((14 + 11 + 10 + 0) / 4)
    assert s["auto_score"]["median"] == pytest.approx(10.5)


def test_failure_share_per_test_cell(written):
    cells = by(written[1]["cells"], "grade_id")
    order = ["test_shapes", "test_frozen", "test_identity", "test_update", "test_scaling",
             "test_order", "test_gradients", "test_merge"]
    assert list(cells) == order  # notebook order, test cells only
    executed = ["ada", "bob", "cat"]
    for gid, cell in cells.items():
        failed = [s for s in executed if gid in FAILS[s]]
        assert cell["executed"] == 3 and cell["failed"] == len(failed), gid
        assert cell["failed_share"] == len(failed) / 3 and cell["failed_students"] == failed
    assert cells["test_scaling"]["max_score"] == 1 and cells["test_merge"]["max_score"] == 3
    (scaling,) = cells["test_scaling"]["concepts"]
    assert (scaling["concept"], scaling["kind"], scaling["count"]) == ("lora.scaling", "check", 2)
    assert scaling["example"] in (SCALING, R.shorten(FAILS["cat"]["test_scaling"][1]))
    (merge,) = cells["test_merge"]["concepts"]
    assert (merge["concept"], merge["kind"], merge["count"]) == ("NameError", "exception", 1)
    assert merge["example"] == "name 'merge_lora' is not defined"


def test_share_per_concept(written):
    concepts = by(written[1]["concepts"], "concept")
    assert set(concepts) == {"lora.scaling", "NameError"}
    scaling = concepts["lora.scaling"]
    # bob fails it twice (two cells), cat once: 2 submissions of 3, 3 failures
    assert scaling["submissions"] == 2 and scaling["share"] == 2 / 3
    assert scaling["failures"] == 3 and scaling["students"] == ["bob", "cat"]
    assert scaling["cells"] == ["test_update", "test_scaling"]
    messages = [m["message"] for m in scaling["messages"]]
    assert len(messages) == len(set(messages)) == 3
    assert all(len(m) <= R.MESSAGE_CHARS for m in messages)
    assert any(m.endswith("…") and m.startswith("scaling <script>") for m in messages)
    assert concepts["NameError"]["share"] == 1 / 3 and concepts["NameError"]["kind"] == "exception"


def test_flagged_and_not_graded_students(written):
    data = written[1]
    flagged = by(data["flagged"], "student_id")
    assert set(flagged) == {"bob", "dan", "eve", ODD_ID}
    assert flagged["bob"]["flags"] == BOB_FLAG and flagged["bob"]["status"] == "graded"
    assert flagged["dan"]["status"] == "kernel died" and flagged["dan"]["reason"] == DAN_REASON
    assert by(data["not_graded"], "student_id")["eve"]["reason"] == EVE_REASON
    assert {x["student_id"] for x in data["not_graded"]} == {"eve", ODD_ID}


def test_manual_work_lists_the_waiting_students(written):
    manual = written[1]["manual"]
    answers = by(manual["answers"], "grade_id")
    assert list(answers) == ["critique_q1", "critique_q2", "critique_q3", "no_grad_answer"]
    # dan's run died before nbgrader saw his answers: each of them waits for a grader
    assert answers["critique_q1"]["students"] == ["ada", "cat", "dan"]
    assert answers["critique_q2"]["students"] == ["cat", "dan"]
    assert answers["critique_q3"]["students"] == ["dan"] and answers["critique_q3"]["waiting"] == 1
    assert answers["critique_q1"]["max_score"] == 2
    (tests,) = manual["test_cells"]  # and so do the test cells of his failed run
    assert tests["student_id"] == "dan" and len(tests["cells"]) == 8


def test_time_per_student(written):
    t = written[1]["time"]
    assert [x["student_id"] for x in t["students"]] == ["dan", "bob", "ada", "cat"]
    assert t["max"] == 9.9 and t["mean"] == pytest.approx(sum(SECONDS.values()) / 4)


# -- the page ----------------------------------------------------------------------------
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr"}


class Strict(HTMLParser):
    """Records every start tag and fails on an end tag that closes the wrong element."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open, self.tags, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Strict:
    parser = Strict()
    parser.feed(page)
    parser.close()
    assert parser.open == [], f"unclosed: {parser.open}"
    return parser


def test_page_is_well_formed_and_offline(written):
    parser = parse(written[0])
    names = {tag for tag, _ in parser.tags}
    assert "script" not in names and "link" not in names
    for _tag, attrs in parser.tags:  # nothing is fetched from elsewhere
        for value in (attrs.get("src"), attrs.get("href")):
            assert value is None or value.startswith("data:image/png;base64,")


def test_histograms_are_embedded_pngs(written):
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', written[0])
    assert len(images) == 3  # total score, autograded score, time
    for image in images:
        png = base64.b64decode(image, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in png[-12:]


def test_student_text_is_escaped(written):
    page = written[0]
    assert SCRIPT not in page and ODD_ID not in page
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    text = "".join(parse(page).text)
    assert SCRIPT in text and ODD_ID in text  # shown as text, not markup
    for needle in (BOB_FLAG, DAN_REASON, "lora.scaling", "NameError",
                   "exception, no concept key"):
        assert needle in text


def test_no_submissions(tmp_path, course):
    empty = P.Course(root=course.root, work_dir=tmp_path / "empty", progress=False, echo=quiet)
    html_path, json_path = R.write_report(empty, A)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["summary"]["submissions"] == 0 and data["summary"]["score"]["mean"] is None
    assert data["flagged"] == data["not_graded"] == data["concepts"] == []
    assert len(data["cells"]) == 8 and all(c["failed_share"] is None for c in data["cells"])
    page = html_path.read_text(encoding="utf-8")
    assert "No submissions for this assignment yet." in "".join(parse(page).text)


def test_unknown_assignment_is_refused(course):
    with pytest.raises(P.PipelineError):
        R.collect(course, "99_nothing")


def test_plots_use_no_pyplot():
    code = ("import sys; from autograde import report as R; "
            "png = R.histogram_png([1.0, 2.0, 2.0], 3, 'x', 't'); "
            "assert 'matplotlib.pyplot' not in sys.modules; print(len(png) > 100)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
