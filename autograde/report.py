"""The class report of one assignment: what the class got right and wrong, after grading.

    WORK_DIR/reports/<assignment>.html   one self-contained page (no external CSS, JS or fonts;
                                         plots embedded as PNG)
    WORK_DIR/reports/<assignment>.json   the same data, without the pictures ("schema": 1)

:func:`collect` gathers the data (plain JSON-serialisable values) from the CSV rows
(:func:`autograde.pipeline.grade_rows`), the gradebook and the autograded notebooks, whose
judged test cells carry ``metadata.loralab.concept`` (the failed check's concept key).
:func:`render_html` turns it into a page; :func:`write_report` writes both files.

Everything a student can influence (ids, failure messages, flags, reasons) is HTML-escaped.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import json
import os
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import nbformat
from nbgrader.api import MissingEntry

from .config import GRADED, NOT_GRADED
from .pipeline import Course, _autograded_cells, _autograded_ok, grade_rows

SCHEMA = 1
#: Failure messages are shortened to this many characters.
MESSAGE_CHARS = 200
#: How many concepts a test cell lists, and how many messages a concept lists.
TOP_CONCEPTS = 3
TOP_MESSAGES = 3
#: A failure without a concept key: the concept is the exception's name, of this kind.
CHECK, EXCEPTION, NO_OUTPUT = "check", "exception", "no error output"


# -- collecting -------------------------------------------------------------------------
def collect(course: Course, assignment: str) -> dict:
    """The report's data for ``assignment`` (JSON-serialisable; see the module docstring)."""
    course.check_assignment(assignment)
    rows = grade_rows(course, [assignment])
    cells = _cells(course, assignment)
    grades = _grades(course, assignment)
    # scored from an executed notebook: a run that failed has none, and its zeros say
    # nothing about any one test
    executed = sorted(s for s in grades if _autograded_ok(course, s, assignment))
    failures = {s: _failures(course, s, assignment, cells, grades[s]) for s in executed}
    return {
        "schema": SCHEMA,
        "assignment": assignment,
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "summary": _summary(rows, cells, executed),
        "scores": [_score(r, r["student_id"] in executed) for r in rows],
        "cells": [_cell_report(c, executed, failures) for c in cells if c["autograded"]],
        "concepts": _concept_report(cells, executed, failures),
        "flagged": [{"student_id": r["student_id"], "status": r["status"],
                     "flags": r["flags"], "reason": r["reason"]}
                    for r in rows if r["flagged"] == "True"],
        "not_graded": [{"student_id": r["student_id"], "reason": r["reason"]}
                       for r in rows if r["status"] == NOT_GRADED],
        "manual": _manual_report(cells, grades),
        "time": _time_report(rows),
    }


def _number(text: str) -> float | None:
    """A CSV number ('12', '3.5', '') as a float, or None."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _cells(course: Course, assignment: str) -> list[dict]:
    """Every grade cell of the assignment, in notebook order: notebook, grade_id, max_score,
    autograded (a test cell) or not (graded by hand). From the gradebook; from the source
    notebook when the gradebook does not know the assignment yet."""
    order = _source_order(course, assignment)
    cells = []
    with course.gradebook() as gb:
        try:
            notebooks = gb.find_assignment(assignment).notebooks
        except MissingEntry:
            notebooks = []
        for nb in notebooks:
            auto = _autograded_cells(nb)
            cells += [{"notebook": nb.name, "grade_id": c.name, "max_score": float(c.max_score),
                       "autograded": c.name in auto} for c in nb.grade_cells]
    if not cells:
        cells = _source_cells(course, assignment)
    return sorted(cells, key=lambda c: order.get((c["notebook"], c["grade_id"]),
                                                 (c["notebook"], 10 ** 9)))


def _source_notebooks(course: Course, assignment: str) -> Iterable[tuple[str, Any]]:
    for name in course.notebook_names(assignment):
        yield name, nbformat.read(course.source_dir / assignment / f"{name}.ipynb",
                                  as_version=4)


def _source_order(course: Course, assignment: str) -> dict[tuple[str, str], tuple[str, int]]:
    """{(notebook, grade_id): sort key} from the source notebooks."""
    order = {}
    for name, nb in _source_notebooks(course, assignment):
        for index, cell in enumerate(nb.cells):
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if gid:
                order[(name, gid)] = (name, index)
    return order


def _source_cells(course: Course, assignment: str) -> list[dict]:
    """The grade cells as the source notebooks declare them (same rule as the gradebook's:
    a code grade cell that is not a solution cell is autograded)."""
    cells = []
    for name, nb in _source_notebooks(course, assignment):
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade") and meta.get("grade_id"):
                cells.append({"notebook": name, "grade_id": meta["grade_id"],
                              "max_score": float(meta.get("points", 0)),
                              "autograded": cell.cell_type == "code"
                              and not meta.get("solution")})
    return cells


def _grades(course: Course, assignment: str) -> dict[str, dict[tuple[str, str], dict]]:
    """{student: {(notebook, grade_id): {score, max_score, needs_manual_grade}}} from the
    gradebook, for every submission it holds."""
    out: dict[str, dict] = {}
    with course.gradebook() as gb:
        try:
            submissions = gb.find_assignment(assignment).submissions
        except MissingEntry:
            return out
        for sub in submissions:
            mine = out.setdefault(sub.student.id, {})
            for nb in sub.notebooks:
                for g in nb.grades:
                    mine[(nb.name, g.name)] = {"score": float(g.score or 0.0),
                                               "max_score": float(g.max_score or 0.0),
                                               "needs_manual_grade": bool(g.needs_manual_grade)}
    return out


def shorten(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` on one line (runs of whitespace made one space), at most ``limit`` chars."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


def _test_cells(course: Course, student: str, assignment: str) -> dict[tuple[str, str], Any]:
    """{(notebook, grade_id): cell} of the student's autograded notebooks (unreadable: none)."""
    cells = {}
    for name in course.notebook_names(assignment):
        path = course.autograded_dir(student, assignment) / f"{name}.ipynb"
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:  # noqa: BLE001 - a broken file must not stop the report
            continue
        for cell in nb.cells:
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if gid:
                cells[(name, gid)] = cell
    return cells


def _failure(cell) -> dict:
    """{concept, kind, message} of a failed test cell: the concept key the check gave
    (``metadata.loralab.concept``), else the exception's name."""
    errors = [o for o in (cell.get("outputs", []) if cell is not None else [])
              if o.get("output_type") == "error"]
    if not errors:
        return {"concept": "(no error output)", "kind": NO_OUTPUT, "message": ""}
    ename, evalue = str(errors[0].get("ename") or "Error"), str(errors[0].get("evalue") or "")
    loralab = cell.get("metadata", {}).get("loralab")
    concept = loralab.get("concept") if isinstance(loralab, dict) else None
    return {"concept": str(concept) if concept else ename,
            "kind": CHECK if concept else EXCEPTION,
            "message": shorten(evalue or ename)}


def _failures(course: Course, student: str, assignment: str, cells: list[dict],
              grades: dict) -> dict[tuple[str, str], dict]:
    """{(notebook, grade_id): failure} for the test cells this submission failed
    (score < max in the gradebook)."""
    notebook_cells = _test_cells(course, student, assignment)
    out = {}
    for c in cells:
        key = (c["notebook"], c["grade_id"])
        g = grades.get(key)
        if c["autograded"] and g is not None and g["score"] < g["max_score"]:
            out[key] = _failure(notebook_cells.get(key))
    return out


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else None,
            "median": statistics.median(values) if values else None,
            "max": max(values) if values else None}


def _summary(rows: list[dict], cells: list[dict], executed: list[str]) -> dict:
    """Counts by status, and mean/median of the scored submissions (all but `not graded`)."""
    scored = [r for r in rows if r["status"] != NOT_GRADED]
    total = [_number(r["score"]) or 0.0 for r in scored]
    auto = [_number(r["auto_score"]) or 0.0 for r in scored]
    return {"submissions": len(rows),
            "graded": sum(r["status"] == GRADED for r in rows),
            "not_graded": sum(r["status"] == NOT_GRADED for r in rows),
            "by_status": dict(sorted(Counter(r["status"] for r in rows).items())),
            "scored": len(scored), "executed": len(executed),
            "flagged": sum(r["flagged"] == "True" for r in rows),
            "needs_manual_grade": sum(r["needs_manual_grade"] == "True" for r in rows),
            "max_score": sum(c["max_score"] for c in cells),
            "auto_max_score": sum(c["max_score"] for c in cells if c["autograded"]),
            "score": _stats(total), "auto_score": _stats(auto)}


def _score(row: dict, executed: bool) -> dict:
    return {"student_id": row["student_id"], "status": row["status"],
            "score": _number(row["score"]), "max_score": _number(row["max_score"]),
            "auto_score": _number(row["auto_score"]),
            "auto_max_score": _number(row["auto_max_score"]), "executed": executed}


def _top_messages(messages: Iterable[str], limit: int = TOP_MESSAGES) -> list[dict]:
    counts = Counter(m for m in messages if m)
    return [{"message": m, "count": n}
            for m, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def _cell_report(cell: dict, executed: list[str], failures: dict) -> dict:
    """One test cell: how many executed submissions failed it, and with which concepts."""
    key = (cell["notebook"], cell["grade_id"])
    failed = [failures[s][key] for s in executed if key in failures[s]]
    concepts = Counter((f["concept"], f["kind"]) for f in failed)
    top = sorted(concepts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CONCEPTS]
    return {"notebook": cell["notebook"], "grade_id": cell["grade_id"],
            "max_score": cell["max_score"], "executed": len(executed), "failed": len(failed),
            "failed_share": len(failed) / len(executed) if executed else None,
            "failed_students": [s for s in executed if key in failures[s]],
            "concepts": [{"concept": concept, "kind": kind, "count": n,
                          "example": (_top_messages(f["message"] for f in failed
                                                    if f["concept"] == concept
                                                    and f["kind"] == kind)
                                      or [{"message": ""}])[0]["message"]}
                         for (concept, kind), n in top]}


def _concept_report(cells: list[dict], executed: list[str], failures: dict) -> list[dict]:
    """Per concept: the share of executed submissions that failed at least one check with it,
    the cells where it failed, and its commonest (shortened, deduplicated) messages."""
    order = [(c["notebook"], c["grade_id"]) for c in cells]
    found: dict[tuple[str, str], dict] = {}
    for student in executed:
        for key, f in failures[student].items():
            entry = found.setdefault((f["concept"], f["kind"]),
                                     {"students": set(), "cells": set(), "messages": []})
            entry["students"].add(student)
            entry["cells"].add(key)
            entry["messages"].append(f["message"])
    report = [{"concept": concept, "kind": kind, "submissions": len(e["students"]),
               "share": len(e["students"]) / len(executed),
               "failures": len(e["messages"]),
               "cells": [gid for nb, gid in order if (nb, gid) in e["cells"]],
               "students": sorted(e["students"]),
               "messages": _top_messages(e["messages"])}
              for (concept, kind), e in found.items()]
    return sorted(report, key=lambda c: (-c["submissions"], c["concept"]))


def _manual_report(cells: list[dict], grades: dict) -> dict:
    """What waits for a grader: per written answer, the submissions waiting; and per
    submission whose run failed, its test cells (the pipeline scores them 0 and marks them
    for a manual grade)."""
    def waiting(key: tuple[str, str]) -> list[str]:
        return sorted(s for s, g in grades.items() if key in g and g[key]["needs_manual_grade"])

    answers = [{"notebook": c["notebook"], "grade_id": c["grade_id"],
                "max_score": c["max_score"], "waiting": len(who), "students": who}
               for c in cells if not c["autograded"]
               for who in [waiting((c["notebook"], c["grade_id"]))]]
    tests: dict[str, list[str]] = {}
    for c in cells:
        if c["autograded"]:
            for student in waiting((c["notebook"], c["grade_id"])):
                tests.setdefault(student, []).append(c["grade_id"])
    return {"answers": answers,
            "test_cells": [{"student_id": s, "cells": tests[s]} for s in sorted(tests)]}


def _time_report(rows: list[dict]) -> dict:
    """Execution time per student (the CSV's `seconds`), slowest first."""
    timed = [(r["student_id"], _number(r["seconds"])) for r in rows]
    timed = sorted(((s, t) for s, t in timed if t is not None), key=lambda st: (-st[1], st[0]))
    values = [t for _, t in timed]
    return {"students": [{"student_id": s, "seconds": t} for s, t in timed],
            "count": len(values), **_stats(values)}


# -- plots ---------------------------------------------------------------------------------
def _bins(values: list[float], high: float | None) -> list[float]:
    """One bar per point up to 60 points; otherwise 20 equal bins."""
    top = max([high or 0.0, *values, 1.0])
    if high and float(high).is_integer() and high <= 60:
        return [i - 0.5 for i in range(int(top) + 2)]
    return [top * i / 20 for i in range(21)]


def histogram_png(values: list[float], high: float | None, xlabel: str, title: str) -> str:
    """A histogram of ``values`` as base64 PNG, drawn with matplotlib's Agg canvas (no
    pyplot: no global state, no backend chosen for the process)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.2, 2.8), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(values, bins=_bins(values, high), color="#4c72b0", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("submissions")
    ax.set_title(title, fontsize=10)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- HTML ----------------------------------------------------------------------------------
class Raw(str):
    """An HTML fragment built here (already escaped): table cells are escaped unless Raw."""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _html(value: Any) -> str:
    return value if isinstance(value, Raw) else esc(value)


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:.{digits}f}"


def _share(share: float | None, count: int, of: int) -> str:
    return "–" if share is None else f"{share:.0%} ({count} of {of})"


def _table(head: list[str], body: list[list[Any]]) -> str:
    if not body:
        return "<p class=\"none\">None.</p>"
    top = "".join(f"<th>{esc(h)}</th>" for h in head)
    rows = "".join("<tr>" + "".join(f"<td>{_html(v)}</td>" for v in row) + "</tr>"
                   for row in body)
    return f"<table><thead><tr>{top}</tr></thead><tbody>{rows}</tbody></table>"


def _pairs(body: list[list[Any]]) -> str:
    """A two-column table of label and value (labels are ours, values escaped unless Raw)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{_html(v)}</td></tr>" for k, v in body)
    return f"<table><tbody>{rows}</tbody></table>"


def _image(png: str, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{png}">'


def _lines(items: Iterable[Any]) -> Raw:
    return Raw("<br>".join(esc(i) for i in items))


def _concept_name(concept: str, kind: str) -> Raw:
    label = {CHECK: "", EXCEPTION: " <span class=\"note\">(exception, no concept key)</span>",
             NO_OUTPUT: " <span class=\"note\">(failed without an error output)</span>"}
    return Raw(f"<code>{esc(concept)}</code>{label.get(kind, '')}")


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em;
     border-bottom: 1px solid #ccc; } h3 { font-size: 1em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.msg, .msg { font-family: monospace; font-size: .9em; }
.note, .none { color: #666; } code { font-size: .95em; }
img { max-width: 100%; }
"""


def _header(data: dict) -> str:
    s = data["summary"]
    by_status = ", ".join(f"{esc(k)}: {n}" for k, n in s["by_status"].items()) or "–"
    body = [["submissions", s["submissions"]], ["graded", s["graded"]],
            ["not graded", s["not_graded"]], ["by status", Raw(by_status)],
            ["executed and scored by nbgrader", s["executed"]],
            ["flagged", s["flagged"]], ["waiting for a manual grade", s["needs_manual_grade"]],
            [f"mean / median score (of {_num(s['max_score'])}, {s['scored']} scored)",
             f"{_num(s['score']['mean'], 2)} / {_num(s['score']['median'])}"],
            [f"mean / median autograded score (of {_num(s['auto_max_score'])})",
             f"{_num(s['auto_score']['mean'], 2)} / {_num(s['auto_score']['median'])}"]]
    return (f"<h1>Class report: {esc(data['assignment'])}</h1>"
            f"<p class=\"note\">Generated {esc(data['generated'])}.</p>"
            + _pairs(body))


def _distribution(data: dict) -> str:
    s = data["summary"]
    scored = [x for x in data["scores"] if x["status"] != NOT_GRADED]
    if not scored:
        return "<h2>Score distribution</h2><p class=\"none\">No scored submissions.</p>"
    total = histogram_png([x["score"] or 0.0 for x in scored], s["max_score"],
                          "total score", f"Total score (of {_num(s['max_score'])})")
    auto = histogram_png([x["auto_score"] or 0.0 for x in scored], s["auto_max_score"],
                         "autograded score",
                         f"Autograded score (of {_num(s['auto_max_score'])})")
    return ("<h2>Score distribution</h2>"
            f"<p>{s['scored']} scored submission(s) (every status but "
            f"<i>{esc(NOT_GRADED)}</i>).</p>"
            + _image(total, "histogram of total scores")
            + _image(auto, "histogram of autograded scores"))


def _cells_section(data: dict) -> str:
    body = []
    for c in data["cells"]:
        concepts = Raw("<br>".join(
            f"{_concept_name(k['concept'], k['kind'])} × {k['count']}"
            + (f"<br><span class=\"msg\">{esc(k['example'])}</span>" if k["example"] else "")
            for k in c["concepts"]))
        body.append([Raw(f"<code>{esc(c['grade_id'])}</code>"), _num(c["max_score"]),
                     _share(c["failed_share"], c["failed"], c["executed"]), concepts or "–"])
    return ("<h2>Test cells</h2><p class=\"note\">Share failed: of the submissions whose "
            "notebook ran and was scored (score below the cell's points).</p>"
            + _table(["test cell", "points", "failed", "commonest failures"], body))


def _concepts_section(data: dict) -> str:
    body = [[_concept_name(k["concept"], k["kind"]),
             _share(k["share"], k["submissions"], data["summary"]["executed"]),
             _lines(k["cells"]),
             Raw("<br>".join(f"<span class=\"msg\">{esc(m['message'])}</span> × {m['count']}"
                             for m in k["messages"]))]
            for k in data["concepts"]]
    return ("<h2>Concepts</h2><p class=\"note\">Submissions that failed at least one check "
            "on the concept.</p>"
            + _table(["concept", "submissions", "test cells", "commonest messages"], body))


def _students_section(data: dict) -> str:
    flagged = [[x["student_id"], x["status"], x["flags"] or "–", x["reason"] or "–"]
               for x in data["flagged"]]
    missing = [[x["student_id"], x["reason"] or "–"] for x in data["not_graded"]]
    return ("<h2>Flagged submissions</h2>"
            + _table(["student", "status", "flags", "reason"], flagged)
            + "<h2>Not graded</h2>" + _table(["student", "reason"], missing))


def _manual_section(data: dict) -> str:
    manual = data["manual"]
    answers = [[Raw(f"<code>{esc(m['grade_id'])}</code>"), _num(m["max_score"]), m["waiting"],
                _lines(m["students"]) if m["students"] else "–"] for m in manual["answers"]]
    tests = [[t["student_id"], len(t["cells"]), ", ".join(t["cells"])]
             for t in manual["test_cells"]]
    return ("<h2>Waiting for a manual grade</h2><h3>Written answers</h3>"
            + _table(["answer", "points", "waiting", "students"], answers)
            + "<h3>Test cells of runs that failed</h3><p class=\"note\">Scored 0 until "
              "graded by hand (or regraded).</p>"
            + _table(["student", "test cells", "which"], tests))


def _time_section(data: dict) -> str:
    t = data["time"]
    if not t["count"]:
        return "<h2>Time per student</h2><p class=\"none\">No timings.</p>"
    png = histogram_png([x["seconds"] for x in t["students"]], None, "seconds",
                        "Execution time per submission")
    body = [[x["student_id"], _num(x["seconds"])] for x in t["students"]]
    return ("<h2>Time per student</h2>"
            f"<p>{t['count']} timed: mean {_num(t['mean'])} s, median {_num(t['median'])} s, "
            f"max {_num(t['max'])} s.</p>"
            + _image(png, "histogram of execution times")
            + _table(["student (slowest first)", "seconds"], body))


def render_html(data: dict) -> str:
    """The report as one self-contained HTML page."""
    title = f"Class report: {esc(data['assignment'])}"
    if not data["summary"]["submissions"]:
        parts = [_header(data), "<p><b>No submissions for this assignment yet.</b></p>",
                 _manual_section(data)]
    else:
        parts = [_header(data), _distribution(data), _cells_section(data),
                 _concepts_section(data), _students_section(data), _manual_section(data),
                 _time_section(data)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


# -- files ---------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report(course: Course, assignment: str) -> tuple[Path, Path]:
    """Write WORK_DIR/reports/<assignment>.html and .json; return their paths."""
    data = collect(course, assignment)
    folder = course.work_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    html_path, json_path = folder / f"{assignment}.html", folder / f"{assignment}.json"
    _write_atomic(json_path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    _write_atomic(html_path, render_html(data))
    return html_path, json_path


__all__ = ["SCHEMA", "collect", "render_html", "write_report", "histogram_png", "shorten"]
