"""Grading throughput: students per minute with 1 and N workers, and the sandbox's cost.

    python -m autograde.bench [--students 12] [--assignment 01_lora_linear] [--workers 2]
                              [--json results.json]

Grades the same batch (correct and buggy samples of the assignment, cycled) in a temporary
course four times: sandboxed with 1 worker and with N workers, and with the sandbox turned off
(LORALAB_NO_SANDBOX=1) with 1 and N workers. Prints students per minute, the N-worker speed-up
and the sandbox's overhead per student (sandboxed minus plain wall time, as a share of the
sandboxed time). A benchmark, not a test: the figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .config import ROOT
from .pipeline import Course, release, submit
from .submissions import build_submission, load_sample


def _batch(course: Course, assignment: str, students: int) -> list[str]:
    samples = sorted(p for p in (ROOT / "autograde" / "samples" / assignment).glob("*.py")
                     if p.name.startswith(("correct_", "bug_")) and "endless" not in p.name)
    (source,) = (course.source_dir / assignment).glob("*.ipynb")
    release_nb = course.release_dir / assignment / source.name
    names = []
    for i in range(students):
        path = samples[i % len(samples)]
        name = f"s{i:03d}-{path.stem}".replace("_", "-")
        submit(course, assignment, name, {source.stem: build_submission(release_nb,
                                                                         load_sample(path))})
        names.append(name)
    return names


def startup_cost(repeats: int = 5) -> dict:
    """Seconds to start Python and import the kernel's modules, plain vs in a sandbox (the
    sandbox's fixed cost per submission: namespaces, mounts, cgroups, setpriv)."""
    import subprocess

    from . import sandbox
    code = ["-c", "import ipykernel.kernelapp, torch"]
    plain, boxed = [], []
    plan = sandbox.detect(refresh=True)
    for _ in range(repeats):
        started = time.monotonic()
        subprocess.run([sys.executable, *code], check=True)
        plain.append(time.monotonic() - started)
        with sandbox.Sandbox(sandbox.Limits(), plan=plan, name="bench") as box:
            started = time.monotonic()
            subprocess.run(box.wrap([sys.executable, *code], dict(os.environ)), check=True)
            boxed.append(time.monotonic() - started)
    best = {"plain_s": round(min(plain), 3), "sandbox_s": round(min(boxed), 3)}
    best["cost_s"] = round(best["sandbox_s"] - best["plain_s"], 3)
    print(f"start-up (python + ipykernel + torch, best of {repeats}): plain {best['plain_s']} s, "
          f"sandboxed {best['sandbox_s']} s: the sandbox costs {best['cost_s']} s", flush=True)
    return best


def run(students: int, assignment: str, workers: int) -> dict:
    from . import sandbox
    from . import pipeline
    results = {}
    with tempfile.TemporaryDirectory(prefix="loralab-bench-") as tmp:
        root = Path(tmp) / "course"
        shutil.copytree(ROOT / "solutions" / assignment, root / "solutions" / assignment)
        for mode in ("sandbox", "plain"):
            if mode == "plain":
                os.environ["LORALAB_NO_SANDBOX"] = "1"
            else:
                os.environ.pop("LORALAB_NO_SANDBOX", None)
            sandbox.detect(refresh=True)
            for n in sorted({1, workers}):
                course = Course(root, Path(tmp) / f"work-{mode}-{n}", workers=n,
                                echo=lambda message: None, progress=False)
                release(course, [assignment])
                _batch(course, assignment, students)
                started = time.monotonic()
                outcomes = pipeline.autograde(course, assignment)
                wall = time.monotonic() - started
                status = json.loads((course.work_dir / "grading_status.json").read_text())
                seconds = [v.get("seconds") or 0 for v in status[assignment].values()]
                results[f"{mode}-{n}"] = {
                    "workers": n, "sandbox": mode == "sandbox", "students": len(outcomes),
                    "wall_s": round(wall, 1),
                    "students_per_min": round(60 * len(outcomes) / wall, 2),
                    "mean_execution_s": round(sum(seconds) / len(seconds), 2),
                    "statuses": sorted({o.status for o in outcomes})}
                print(f"{mode:8s} {n} worker(s): {len(outcomes)} students in {wall:6.1f} s = "
                      f"{results[f'{mode}-{n}']['students_per_min']:5.1f} students/min "
                      f"(mean execution {results[f'{mode}-{n}']['mean_execution_s']} s)",
                      flush=True)
        os.environ.pop("LORALAB_NO_SANDBOX", None)
    startup = startup_cost()
    one, many = results["sandbox-1"], results[f"sandbox-{workers}"]
    plain = results["plain-1"]
    summary = {
        "date": datetime.date.today().isoformat(), "machine": platform.platform(),
        "cores": os.cpu_count(), "python": platform.python_version(),
        "assignment": assignment, "students": students, "workers": workers,
        "speedup": round(one["wall_s"] / many["wall_s"], 2),
        "sandbox_overhead_s_per_student": round((one["wall_s"] - plain["wall_s"]) / students, 2),
        "sandbox_overhead_share": round((one["wall_s"] - plain["wall_s"]) / one["wall_s"], 3),
        "sandbox_startup": startup,
        "sandbox_startup_share": round(startup["cost_s"] * students / one["wall_s"], 3),
        "runs": results}
    print(f"\n{workers} workers vs 1: {summary['speedup']}x (target >= 1.8x on 2 cores)")
    print(f"sandbox overhead: {summary['sandbox_overhead_s_per_student']} s per student = "
          f"{100 * summary['sandbox_overhead_share']:.1f}% of a sandboxed student's grading "
          f"time (target <= 15%)")
    print(f"sandbox start-up cost: {startup['cost_s']} s per student = "
          f"{100 * summary['sandbox_startup_share']:.1f}% of a sandboxed student's grading time")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograde.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=12)
    parser.add_argument("--assignment", default="01_lora_linear")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.students < 1 or args.workers < 1:
        parser.error("--students and --workers must be >= 1")
    summary = run(args.students, args.assignment, args.workers)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
