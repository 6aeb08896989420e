"""The course in a real browser: JupyterLab started as `course.py launch` starts it, driven by
headless Chromium through Playwright's sync API.

* the complexity explorer of notebook 01 answers a slider moved by keyboard and by mouse,
  and a number typed into its box moves the slider;
* the rank-gating explorers of notebooks 03 and 04, after Run All, redraw their plot when a
  slider is moved by keyboard or dragged;
* the release notebook of 01 opens without being marked modified, and nbgrader's Validate
  button reports its failures;
* the class report (autograde.report.render_html) renders its histograms from file://;
* after a release and a grade, the formgrader (`python -m autograde formgrader`) lists the
  assignment and shows a submission with each answer's model answer and rubric, its maths
  rendered by the MathJax the server itself serves.

Needs the Debian package `chromium` and the PyPI package `playwright` (never
`playwright install`: the system Chromium is used); the module is skipped without them.
Any browser console error fails a test, except the messages in CONSOLE_ALLOWLIST. A failing
test leaves a screenshot under its tmp_path and names it in the assertion message.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no `chromium` on PATH (apt-get install chromium)", allow_module_level=True)
try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    pytest.skip("the playwright package is not installed (pip install playwright)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # autograde/ is a folder of the repository, not installed
    sys.path.insert(0, str(ROOT))

from servers import UNWANTED, course_lab, jupyter_server, load_course  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
KERNEL_SECONDS = 120      # a kernel start plus `import torch` on a busy 2-core machine
VALIDATE_SECONDS = 150    # nbgrader runs the whole release notebook

#: Console errors a machine without network access cannot avoid. Each entry is a regular
#: expression searched in the message text; anything else fails the test.
CONSOLE_ALLOWLIST = [
    # Chromium's own report of a resource that could not be loaded from an external host
    # (no network here); the page's own resources come from 127.0.0.1 or file://.
    r"Failed to load resource: net::ERR_(NAME_NOT_RESOLVED|INTERNET_DISCONNECTED|"
    r"CONNECTION_REFUSED|ADDRESS_UNREACHABLE)",
    # MathJax 2's HTML-CSS output (the formgrader's maths) probes for fonts before it uses
    # the STIX-Web web fonts that jupyter-server-mathjax ships: a blank font face
    # ("MathJax_Blank", src about:blank) and its TeX AMS font, which is not shipped.
    r"Access to font at 'about:blank' .* CORS policy",
    r"Failed to load resource: net::ERR_FAILED \(about:blank\)",
    r"Failed to load resource: the server responded with a status of 404 \(Not Found\) "
    r"\(http://127\.0\.0\.1:\d+/static/jupyter_server_mathjax/fonts/HTML-CSS/TeX/otf/"
    r"MathJax_AMS-Regular\.otf\)",
]


# -- JupyterLab -----------------------------------------------------------------------------
def _explorer_source():
    """The cell of solutions/01 that shows the complexity explorer, as it stands there."""
    nb = nbformat.read(ROOT / "solutions" / "01_lora_linear" / "lora_linear.ipynb", as_version=4)
    (source,) = [c.source for c in nb.cells
                 if c.cell_type == "code" and "complexity_explorer(" in c.source]
    return source, nb.metadata


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab with course.py launch's command and environment, on a free loopback port,
    serving a copy of notebooks/ and solutions/ (plus explorer.ipynb: the explorer cell of
    solutions/01 alone, since Run All of 01 trains models); stopped by its PID."""
    course = load_course()
    tmp = tmp_path_factory.mktemp("browser_lab")
    served = tmp / "served"
    served.mkdir()
    for name in ("notebooks", "solutions"):
        shutil.copytree(ROOT / name, served / name)
    source, metadata = _explorer_source()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)],
                                            metadata=metadata), served / "explorer.ipynb")

    with course_lab(course, tmp, served) as lab:
        server, token = lab["server"], lab["token"]
        yield {"server": server, "served": served, "log": lab["log"],
               "url": lambda path: f"{server.url}/lab/tree/{path}?token={token}&reset"}


# -- the browser ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Console:
    """The page's console errors and uncaught exceptions, less the allowlisted ones."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and self._add(
            f"console.error: {msg.text} ({msg.location.get('url', '')})"))
        page.on("pageerror", lambda exc: self._add(f"uncaught: {exc}"))

    def _add(self, text: str) -> None:
        if not any(re.search(pattern, text) for pattern in CONSOLE_ALLOWLIST):
            self.errors.append(text)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.console = Console(page)
    try:
        yield page
    finally:
        context.close()


@contextmanager
def evidence(page, tmp_path):
    """Fail with a screenshot: any error inside (an assertion, a Playwright timeout) or a
    console error at the end is re-raised with the path of a full-page screenshot."""
    try:
        yield
        assert not page.console.errors, "browser console errors:\n" + "\n".join(
            page.console.errors)
    except (AssertionError, PlaywrightError) as exc:
        folder = tmp_path / "screenshots"
        folder.mkdir(exist_ok=True)
        shot = folder / "failure.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
        except PlaywrightError as shot_error:
            shot = f"(no screenshot: {shot_error})"
        raise AssertionError(f"{exc}\nscreenshot: {shot}") from exc


def wait_for_idle_kernel(page):
    """The status bar says the notebook's kernel is idle. (The toolbar's execution indicator
    says "idle" before the kernel has connected: a cell run then is not executed.)"""
    expect(page.locator("#jp-main-statusbar").get_by_text(
        re.compile(r"^Python 3 \(ipykernel\) \| Idle$"))).to_be_visible(
        timeout=KERNEL_SECONDS * 1000)


def slider_row(page, name):
    """The explorer's widget (a slider, or an HBox of slider and number box) labelled name."""
    label = page.locator(".widget-label", has_text=re.compile(rf"^{re.escape(name)}$"))
    return page.locator(".widget-hslider").filter(has=label)


def drag(page, handle, dx: float) -> None:
    """Drag a slider's handle dx pixels to the right with the mouse, in ten moves."""
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y, steps=10)
    page.mouse.up()


def number_box(page, slider):
    """The number box in the same HBox as slider."""
    return page.locator(".jp-OutputArea .widget-hbox").filter(has=slider).locator("input")


# -- tests ----------------------------------------------------------------------------------
def test_explorer_answers_keyboard_mouse_and_typing(lab, page, tmp_path):
    """Run the explorer cell; ArrowRight on the d_in slider, a drag of the rank slider's
    handle, and a number typed into the tokens box each change the cost table; the drag
    changes the rank readout, the typed number moves the tokens slider."""
    with evidence(page, tmp_path):
        page.goto(lab["url"]("explorer.ipynb"))
        wait_for_idle_kernel(page)
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Shift+Enter")
        expect(page.locator(".jp-Cell .jp-InputPrompt").first).not_to_have_text("[ ]:")
        table = page.locator(".jp-OutputArea .widget-html table")
        expect(table).to_be_visible(timeout=KERNEL_SECONDS * 1000)

        # keyboard: d_in (a SelectionSlider, 4096 here) one step right
        d_in = slider_row(page, "d_in")
        d_in_box = number_box(page, d_in)
        expect(d_in_box).to_have_value("4096")
        before = table.inner_text()
        d_in.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        expect(d_in_box).not_to_have_value("4096")
        expect(table).not_to_have_text(before)

        # mouse: drag the rank handle 100 px right (2 px a step: about 50 ranks more)
        rank = slider_row(page, "rank")
        readout = rank.locator(".widget-readout")
        expect(readout).to_have_text("8")
        before = table.inner_text()
        drag(page, rank.locator(".noUi-handle"), 100)
        expect(readout).not_to_have_text("8")
        assert int(readout.inner_text()) > 8, readout.inner_text()
        expect(table).not_to_have_text(before)

        # typing: 64 into the tokens box (512 here) moves the tokens slider left
        tokens = slider_row(page, "tokens")
        tokens_box = number_box(page, tokens)
        expect(tokens_box).to_have_value("512")
        handle = tokens.locator(".noUi-handle")
        x_before = handle.bounding_box()["x"]
        now_before = handle.get_attribute("aria-valuenow")
        before = table.inner_text()
        tokens_box.fill("64")
        tokens_box.press("Enter")
        expect(handle).not_to_have_attribute("aria-valuenow", now_before)
        expect(table).not_to_have_text(before)
        assert handle.bounding_box()["x"] < x_before, "the tokens slider did not move left"
        expect(tokens_box).to_have_value("64")


RUN_ALL_SECONDS = 240  # Run All of 03 or 04 (about 8 s each alone) on a busy 2-core machine


def run_all(page):
    """Run → Run All Cells, from JupyterLab's menu bar."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


@pytest.mark.parametrize("notebook", [
    "solutions/03_bilinear_conditioning/bilinear_conditioning.ipynb",
    "solutions/04_rank_space_shift/rank_space_shift.ipynb"], ids=["03", "04"])
def test_rank_gating_explorer_answers_keyboard_and_drag(lab, page, tmp_path, notebook):
    """Run All of the notebook; in its rank-gating explorer, ArrowRight on the p1 slider and a
    drag of the p2 slider's handle each change the readout and redraw the plot."""
    with evidence(page, tmp_path):
        page.goto(lab["url"](notebook))
        wait_for_idle_kernel(page)
        run_all(page)
        explorer = page.locator(".widget-interact").filter(has=slider_row(page, "p1 (temperature)"))
        plot = explorer.locator(".jp-OutputArea img")
        expect(plot).to_be_visible(timeout=RUN_ALL_SECONDS * 1000)
        explorer.scroll_into_view_if_needed()
        for name, move in (("p1 (temperature)", "keyboard"), ("p2 (load)", "drag")):
            slider = slider_row(page, name)
            readout = slider.locator(".widget-readout")
            expect(readout).to_be_visible()
            value, src = readout.inner_text(), plot.get_attribute("src")
            handle = slider.locator(".noUi-handle")
            if move == "keyboard":
                handle.focus()
                page.keyboard.press("ArrowRight")
            else:  # 60 px right on a track of a few hundred px: several steps of 0.05
                drag(page, handle, 60)
            expect(readout).not_to_have_text(value)
            assert float(readout.inner_text()) > float(value), (name, value, readout.inner_text())
            expect(plot).not_to_have_attribute("src", src, timeout=60_000)


def test_release_01_opens_clean_and_validate_reports_failures(lab, page, tmp_path):
    """Opening notebooks/01 leaves its tab unmodified once the kernel is up; Validate (the
    nbgrader toolbar button) runs the untouched release and lists failing cells."""
    with evidence(page, tmp_path):
        page.goto(lab["url"]("notebooks/01_lora_linear/lora_linear.ipynb"))
        tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab",
                           has_text="lora_linear.ipynb")
        expect(tab).to_be_visible(timeout=60_000)
        wait_for_idle_kernel(page)
        page.wait_for_timeout(5000)  # metadata from kernel_info_reply lands after idle
        expect(tab).not_to_have_class(re.compile(r"\bjp-mod-dirty\b"))

        page.locator(".jp-NotebookPanel-toolbar").get_by_text("Validate", exact=True).click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog.locator(".jp-Dialog-header")).to_have_text(
            "Validation Results", timeout=VALIDATE_SECONDS * 1000)
        body = dialog.locator(".jp-Dialog-body")
        expect(body).to_have_class(re.compile(r"\bvalidation-failed\b"))  # nbgrader's mark
        expect(body).to_contain_text("The following cell failed:")
        expect(body).to_contain_text(re.compile("NotImplementedError|AssertionError"))
        dialog.get_by_role("button", name="Ok").click()
        expect(dialog).to_have_count(0)


def fabricated_report_data() -> dict:
    """What autograde.report.collect returns, made up: three scored submissions (one
    flagged, one waiting for a manual grade) and one that could not be graded."""
    from autograde.config import GRADED, NOT_GRADED

    scores = [{"student_id": s, "status": status, "score": score, "auto_score": auto}
              for s, status, score, auto in [("ada", GRADED, 10.0, 8.0),
                                              ("bob", GRADED, 6.0, 6.0),
                                              ("cat", "flagged", 3.5, 3.5),
                                              ("eve", NOT_GRADED, None, None)]]
    return {
        "assignment": "01_lora_linear",
        "generated": "2026-01-01 12:00 UTC",
        "summary": {"submissions": 4, "graded": 3, "not_graded": 1,
                    "by_status": {GRADED: 2, "flagged": 1, NOT_GRADED: 1},
                    "executed": 3, "flagged": 1, "needs_manual_grade": 1, "scored": 3,
                    "max_score": 10.0, "auto_max_score": 8.0,
                    "score": {"mean": 6.5, "median": 6.0},
                    "auto_score": {"mean": 5.83, "median": 6.0}},
        "scores": scores,
        "cells": [{"grade_id": "test_scaling", "max_score": 2.0, "failed_share": 2 / 3,
                   "failed": 2, "executed": 3,
                   "concepts": [{"concept": "lora.scaling", "kind": "check", "count": 2,
                                 "example": "scaling is wrong: expected 2, got 1"}]}],
        "concepts": [{"concept": "lora.scaling", "kind": "check", "share": 2 / 3,
                      "submissions": 2, "cells": ["test_scaling"],
                      "messages": [{"message": "scaling is wrong", "count": 2}]}],
        "flagged": [{"student_id": "cat", "status": "flagged", "flags": "host differs",
                     "reason": None}],
        "not_graded": [{"student_id": "eve", "reason": "missing lora_linear.ipynb"}],
        "manual": {"answers": [{"grade_id": "critique_q1", "max_score": 2.0, "waiting": 1,
                                "students": ["ada"]}],
                   "test_cells": []},
        "time": {"count": 3, "mean": 3.2, "median": 3.2, "max": 4.0,
                 "students": [{"student_id": "bob", "seconds": 4.0},
                              {"student_id": "ada", "seconds": 3.2},
                              {"student_id": "cat", "seconds": 2.5}]},
    }


def test_class_report_renders_its_histograms(page, tmp_path):
    """The report page, opened from file://, shows its histogram images (decoded: naturalWidth
    above 0) with no console errors."""
    from autograde.report import render_html

    html = tmp_path / "reports" / "01_lora_linear.html"
    html.parent.mkdir()
    html.write_text(render_html(fabricated_report_data()), encoding="utf-8")
    with evidence(page, tmp_path):
        page.goto(html.as_uri())
        expect(page.locator("h1")).to_have_text("Class report: 01_lora_linear")
        images = page.locator("img")
        expect(images).to_have_count(3)  # total, autograded, execution time
        for index in range(3):
            image = images.nth(index)
            expect(image).to_be_visible()
            image.evaluate("img => img.decode()")
            assert image.evaluate("img => img.naturalWidth") > 0, image.get_attribute("alt")


# -- the formgrader -------------------------------------------------------------------------
FORMGRADER_STUDENTS = {"reference": None, "ba-first": "bug_ba_first.py"}


@pytest.fixture(scope="module")
def formgrader(tmp_path_factory):
    """A course in a temporary folder with 01 released and two submissions graded (the
    reference solution and a buggy sample), and the formgrader started on it the way
    `python -m autograde formgrader` starts it; stopped by its PID."""
    from autograde import pipeline as P
    from autograde.formgrade import launch_command
    from autograde.submissions import build_submission, load_sample

    tmp = tmp_path_factory.mktemp("formgrader")
    root = tmp / "course"
    shutil.copytree(ROOT / "solutions" / "01_lora_linear", root / "solutions" / "01_lora_linear")
    course = P.Course(root, root / "autograde" / "course", workers=2, echo=lambda _m: None)
    P.release(course, ["01_lora_linear"])
    release = course.release_dir / "01_lora_linear" / "lora_linear.ipynb"
    for student, sample in FORMGRADER_STUDENTS.items():
        nb = (course.source_dir / "01_lora_linear" / "lora_linear.ipynb" if sample is None
              else build_submission(release, load_sample(
                  ROOT / "autograde" / "samples" / "01_lora_linear" / sample)))
        P.submit(course, "01_lora_linear", student, {"lora_linear": nb})
    rows = P.grade(course, "01_lora_linear")
    assert {r["student_id"]: r["status"] for r in rows} == dict.fromkeys(
        FORMGRADER_STUDENTS, "graded")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    cmd, env = launch_command(course, python=sys.executable, browser=False)
    env = {k: v for k, v in env.items() if k in environ or k.startswith(("JUPYTER", "LORALAB"))}
    with jupyter_server(cmd, env, tmp, cwd=course.root) as lab:
        server, token = lab["server"], lab["token"]
        yield {"course": course, "log": lab["log"], "server": server,
               "url": lambda path: f"{server.url}{path}?token={token}"}


def submission_id(course, student: str) -> str:
    gb = course.gradebook()
    try:
        return gb.find_submission_notebook("lora_linear", "01_lora_linear", student).id
    finally:
        gb.close()


def test_formgrader_lists_the_assignment_and_its_submissions(formgrader, page, tmp_path):
    with evidence(page, tmp_path):
        page.goto(formgrader["url"]("/formgrader"))
        table = page.locator("#main-table")
        expect(table).to_contain_text("01_lora_linear", timeout=30_000)
        # this course's note instead of nbgrader's exchange and course-id warnings
        expect(page.locator("#loralab-no-exchange")).to_be_visible()
        expect(page.locator("#warning-exchange, #warning-course-id")).to_have_count(0)

        page.goto(formgrader["url"]("/formgrader/gradebook/01_lora_linear/lora_linear"))
        for student in FORMGRADER_STUDENTS:
            expect(page.locator("#main-table")).to_contain_text(student, timeout=30_000)
    log = formgrader["log"].read_text(encoding="utf-8", errors="replace")
    assert "autograde.formgrade: the formgrader shows model answers" in log
    found = {line: why for line, why in UNWANTED.items() if line in log}
    assert not found, f"the formgrader's log shows {found}"


def test_formgrader_shows_model_answers_rubrics_and_offline_maths(formgrader, page, tmp_path):
    """Each written answer of the buggy submission is followed by its model answer and rubric
    from solutions/; the page's maths is typeset by the MathJax served on 127.0.0.1."""
    from autograde.formgrade import model_and_rubric, solution_region

    source = nbformat.read(ROOT / "solutions" / "01_lora_linear" / "lora_linear.ipynb",
                           as_version=4)
    written = [c for c in source.cells if c.cell_type == "markdown"
               and c.metadata.get("nbgrader", {}).get("solution")]
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    with evidence(page, tmp_path):
        sid = submission_id(formgrader["course"], "ba-first")
        page.goto(formgrader["url"](f"/formgrader/submissions/{sid}/"))
        for cell in written:
            grade_id = cell.metadata.nbgrader.grade_id
            _, rubric = model_and_rubric(solution_region(cell.source))
            heading = page.get_by_role("heading", name=f"For the grader: model answer to {grade_id}")
            expect(heading).to_be_visible(timeout=30_000)
            expect(page.get_by_role("heading", name=f"Rubric for {grade_id}")).to_be_visible()
            expect(page.locator("blockquote", has_text=rubric.split(":")[0])).not_to_have_count(0)
        # nbgrader's score box is still there for each written answer
        expect(page.locator("input.score")).not_to_have_count(0)
        # MathJax typeset the page's maths: every TeX script has its rendered element
        expect(page.locator("span.MathJax").first).to_be_visible(timeout=60_000)
        page.wait_for_function("() => window.MathJax && MathJax.Hub.queue.pending === 0"
                               " && MathJax.Hub.queue.running === 0")
        tex = page.locator("script[type^='math/tex']").count()
        assert tex > 10 and page.locator("span.MathJax").count() >= tex
    mathjax = [u for u in requests if "MathJax" in u or "mathjax" in u]
    assert mathjax and all(u.startswith(formgrader["server"].url) for u in mathjax), mathjax
