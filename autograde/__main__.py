"""python -m autograde {release,grade,feedback,export,report,formgrader,sandbox}: the
instructor's pipeline.

Run it from the repository root (or anywhere, with --root). See autograde/README.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import CELL_TIMEOUT, ROOT
from .pipeline import Course, PipelineError, export, feedback, grade, release, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autograde",
        description="LoRA Lab grading pipeline (nbgrader): release, grade, feedback, export.",
        allow_abbrev=False)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="course root holding solutions/ and notebooks/ (default: the repo)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="nbgrader working folder: submitted/, autograded/, feedback/, "
                             "gradebook.db (default: ROOT/autograde/course)")
    parser.add_argument("--db", metavar="URL", default=None,
                        help="the gradebook's database, any SQLAlchemy URL (default: "
                             "$LORALAB_GRADEBOOK_URL, else sqlite:///WORK_DIR/gradebook.db); "
                             "e.g. postgresql://user@host/course")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("release", allow_abbrev=False, help="generate notebooks/ from solutions/ (all assignments "
                                       "by default) and record them in the gradebook")
    p.add_argument("assignments", nargs="*", metavar="ASSIGNMENT")

    p = sub.add_parser("grade", allow_abbrev=False, help="autograde every submission of ASSIGNMENT in one run, "
                                     "then write feedback and grades.csv")
    p.add_argument("assignment", metavar="ASSIGNMENT")
    p.add_argument("--student", default="*",
                   help="only students matching this glob (default: all)")
    p.add_argument("--timeout", type=int, default=CELL_TIMEOUT,
                   help=f"seconds per cell before the kernel is interrupted "
                        f"(default: {CELL_TIMEOUT})")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to write (default: WORK_DIR/grades.csv)")
    p.add_argument("--workers", type=_positive, default=None,
                   help="submissions graded at once, each in its own sandbox (default: the "
                        "number of cores)")
    p.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="grade on the Dask distributed scheduler at ADDRESS (tcp://host:8786) "
                        "instead of local workers")
    p.add_argument("--regrade", action="store_true",
                   help="grade every matching submission again, also those unchanged since "
                        "their last grading")
    p.add_argument("--require-sandbox", action="store_true",
                   help="refuse to grade if any protection of the sandbox is off here")

    p = sub.add_parser("report", allow_abbrev=False, help="(re)write the class report of ASSIGNMENT "
                                      "(WORK_DIR/reports/ASSIGNMENT.html and .json)")
    p.add_argument("assignment", metavar="ASSIGNMENT")

    p = sub.add_parser("sandbox", allow_abbrev=False, help="print which protections the sandbox has on this "
                                       "machine")

    p = sub.add_parser("feedback", allow_abbrev=False, help="(re)write the feedback HTML of ASSIGNMENT, e.g. after "
                                        "manual grading")
    p.add_argument("assignment", metavar="ASSIGNMENT")
    p.add_argument("--student", default="*", help="only students matching this glob")

    p = sub.add_parser("formgrader", allow_abbrev=False, help="open nbgrader's formgrader (in JupyterLab) to grade "
                                          "written answers beside their model answers")
    p.add_argument("--port", type=_positive, default=None, help="port (default: 8888 or the "
                                                                "next free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("jupyter_args", nargs="*", metavar="-- JUPYTER_OPTION",
                   help="options for jupyter lab, after --, e.g. -- --ServerApp.ip=0.0.0.0")

    p = sub.add_parser("export", allow_abbrev=False, help="write grades.csv from the gradebook")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to write (default: WORK_DIR/grades.csv)")
    p.add_argument("--assignment", action="append", default=None,
                   help="only this assignment (repeatable)")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    course = Course(args.root, args.work_dir, timeout=getattr(args, "timeout", CELL_TIMEOUT),
                    workers=getattr(args, "workers", None),
                    require_sandbox=getattr(args, "require_sandbox", False),
                    db_url=args.db, cluster=getattr(args, "cluster", None))
    try:
        if args.command == "sandbox":
            from .sandbox import detect
            for name, state in detect().protections().items():
                print(f"{name:14s} {state}")
        elif args.command == "release":
            release(course, args.assignments or None)
        elif args.command == "grade":
            rows = grade(course, args.assignment, args.student, out=args.out,
                         regrade=args.regrade)
            _summary(rows, args.assignment)
        elif args.command == "report":
            report(course, args.assignment)
        elif args.command == "feedback":
            feedback(course, args.assignment, args.student)
        elif args.command == "export":
            export(course, args.out, args.assignment)
        elif args.command == "formgrader":
            from .formgrade import launch
            return launch(course, port=args.port, browser=not args.no_browser,
                          extra=args.jupyter_args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _summary(rows, assignment) -> None:
    rows = [r for r in rows if r["assignment"] == assignment]
    problems = [r for r in rows if r["status"] != "graded" or r.get("flags")]
    print(f"{assignment}: {len(rows)} submission(s), {len(problems)} to look at")
    for r in problems:
        print(f"  {r['student_id']}: {r['status']}" + (f" - {r['reason']}" if r["reason"] else "")
              + (f" [flags: {r['flags']}]" if r.get("flags") else ""))


if __name__ == "__main__":
    sys.exit(main())
