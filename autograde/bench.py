"""Grading throughput: students per minute on 1 worker, on every local worker, on a Dask
cluster, and the cost per student beyond the student's own code.

    python -m autograde.bench [--students 12] [--assignment 01_lora_linear] [--workers 2]
                              [--json results.json] [--no-plain]

Grades the same batch (correct and buggy samples of the assignment, cycled) in a temporary
course: sandboxed with 1 local worker, with N local workers, with a 2-worker Dask
LocalCluster, and (unless --no-plain) with 1 worker and the sandbox off
(LORALAB_NO_SANDBOX=1). For each run it prints students per minute and the overhead per
student: a worker slot's wall time per student (run wall time x slots / students; the
run includes preparing, scoring and feedback) minus the mean of the kernel's own cell
execution time (nbclient's timing metadata), and where that time goes. A benchmark, not a
test: the figures depend on the machine and its load.

Workers are forked from a fork server (autograde/runner.py); run the benchmark with
``LORALAB_FRESH_WORKERS=1`` to time a fresh worker process per student instead.
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


def worker_startup(repeats: int = 3) -> float:
    """Seconds to start Python and import the worker's modules (torch, nbgrader, nbclient):
    what a fresh worker process paid per student, and a fork server pays once."""
    import subprocess

    from .runner import worker_env
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import autograde.worker"], check=True,
                       env=worker_env())
        times.append(time.monotonic() - started)
    best = round(min(times), 3)
    print(f"worker start-up (python + the worker's imports, best of {repeats}): {best} s",
          flush=True)
    return best


def cell_seconds(course: Course, assignment: str, student: str) -> float:
    """The kernel's own execution time of a graded notebook: the sum over its code cells of
    execute_reply - execute_input (nbclient's timing metadata)."""
    import nbformat

    total = 0.0
    for name in course.notebook_names(assignment):
        path = course.autograded_dir(student, assignment) / f"{name}.ipynb"
        if not path.is_file():
            continue
        for cell in nbformat.read(path, as_version=4).cells:
            timing = cell.get("metadata", {}).get("execution", {})
            if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
                start, end = (datetime.datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                              for k in ("iopub.execute_input", "shell.execute_reply"))
                total += (end - start).total_seconds()
    return total


def _grade_once(root: Path, work: Path, assignment: str, students: int, **settings) -> dict:
    from . import pipeline
    course = Course(root, work, echo=lambda message: None, progress=False, **settings)
    release(course, [assignment])
    names = _batch(course, assignment, students)
    started = time.monotonic()
    outcomes = pipeline.autograde(course, assignment, with_feedback=True)  # as `grade` does
    pipeline.feedback(course, assignment, only_missing=True)
    wall = time.monotonic() - started
    cells = [cell_seconds(course, assignment, name) for name in names]
    slots = settings.get("workers") or 2  # a Dask run here: a 2-worker LocalCluster
    per_student = wall * slots / len(outcomes)  # a worker slot's time per student

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 2) if values else None

    worker = mean(o.timing.get("worker_seconds") for o in outcomes)
    execute = mean(o.seconds for o in outcomes)
    judge = mean(o.timing.get("judge_seconds") for o in outcomes)
    cell = sum(cells) / len(cells)
    parts = {  # where a student's time goes, in seconds (means)
        # the worker's start: forked from the fork server (whose own start, its imports, the
        # run's first tasks wait for), or a fresh process (LORALAB_FRESH_WORKERS=1)
        "worker_start": round(worker - execute, 2),
        "kernel_sandbox_and_start": round(execute - judge - cell, 2),
        "cells": round(cell, 2),
        "probe_and_judge": judge,
        "coordinator_and_waiting": round(per_student - worker, 2)}
    return {"students": len(outcomes), "wall_s": round(wall, 1), "parts_s": parts,
            "students_per_min": round(60 * len(outcomes) / wall, 2),
            "slots": slots, "per_student_s": round(per_student, 2),
            "mean_cell_execution_s": round(sum(cells) / len(cells), 2),
            "overhead_s_per_student": round(per_student - sum(cells) / len(cells), 2),
            "statuses": sorted({o.status for o in outcomes})}


def run(students: int, assignment: str, workers: int, plain: bool = True) -> dict:
    """Grade the same batch: sandboxed with 1 local worker, ``workers`` local workers, and
    a 2-worker Dask LocalCluster (and, with ``plain``, 1 worker without the sandbox)."""
    from distributed import LocalCluster

    from . import sandbox
    results = {}
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at the start: {load[0]} {load[1]} {load[2]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="loralab-bench-") as tmp:
        root = Path(tmp) / "course"
        shutil.copytree(ROOT / "solutions" / assignment, root / "solutions" / assignment)
        sandbox.detect(refresh=True)
        for n in sorted({1, workers}):
            results[f"local-{n}"] = _grade_once(root, Path(tmp) / f"local-{n}", assignment,
                                                students, workers=n)
            _print(f"local-{n}", results[f"local-{n}"])
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            results["dask-2"] = _grade_once(root, Path(tmp) / "dask-2", assignment, students,
                                            cluster=cluster.scheduler_address)
            _print("dask-2", results["dask-2"])
        if plain:
            os.environ["LORALAB_NO_SANDBOX"] = "1"
            try:
                sandbox.detect(refresh=True)
                results["plain-1"] = _grade_once(root, Path(tmp) / "plain-1", assignment,
                                                 students, workers=1)
                _print("plain-1", results["plain-1"])
            finally:
                os.environ.pop("LORALAB_NO_SANDBOX", None)
                sandbox.detect(refresh=True)
    local = results[f"local-{workers}"]
    summary = {
        "date": datetime.date.today().isoformat(), "machine": platform.platform(),
        "cores": os.cpu_count(), "python": platform.python_version(),
        "load_average_at_start": load, "load_average_after_runs": [round(x, 2)
                                                               for x in os.getloadavg()],
        "workers_started": "fresh process per student" if os.environ.get(
            "LORALAB_FRESH_WORKERS") else "forked from a fork server",
        "assignment": assignment, "students": students, "workers": workers,
        "speedup": round(results["local-1"]["wall_s"] / local["wall_s"], 2),
        "dask_vs_local": round(results["dask-2"]["students_per_min"]
                               / results["local-2" if "local-2" in results
                                         else f"local-{workers}"]["students_per_min"], 3),
        "runs": results}
    print(f"\n{workers} local workers vs 1: {summary['speedup']}x")
    print(f"Dask (2 workers) vs local (2 workers): {summary['dask_vs_local']:.2f} of the "
          f"throughput (target >= 0.90)")
    print(f"overhead per student (grading time minus the cells' own execution time): "
          f"{results['local-1']['overhead_s_per_student']} s with 1 worker (target <= 2 s)")
    if plain:
        one, bare = results["local-1"], results["plain-1"]
        summary["sandbox_overhead_s_per_student"] = round(
            (one["wall_s"] - bare["wall_s"]) / students, 2)
        summary["sandbox_startup"] = startup_cost()
        summary["worker_startup_s"] = worker_startup()
        print(f"sandbox: {summary['sandbox_overhead_s_per_student']} s per student "
              f"(sandboxed minus unsandboxed, 1 worker)")
    return summary


def _print(name: str, r: dict) -> None:
    print(f"{name:8s}: {r['students']} students in {r['wall_s']:6.1f} s = "
          f"{r['students_per_min']:5.1f} students/min; per student {r['per_student_s']} s of a "
          f"worker slot, of which cells {r['mean_cell_execution_s']} s, overhead "
          f"{r['overhead_s_per_student']} s", flush=True)
    print("          " + ", ".join(f"{k.replace('_', ' ')} {v} s"
                                   for k, v in r["parts_s"].items()), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograde.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=12)
    parser.add_argument("--assignment", default="01_lora_linear")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--no-plain", action="store_true",
                        help="skip the run without the sandbox (and the start-up measurements)")
    args = parser.parse_args(argv)
    if args.students < 1 or args.workers < 1:
        parser.error("--students and --workers must be >= 1")
    summary = run(args.students, args.assignment, args.workers, plain=not args.no_plain)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
