"""Runs the mutants of one assignment: ``python -m autograde.mutants.worker JOB.json OUT.jsonl``.

The job (written by ``run.py``) holds the probe cells, the test cells and the mutants. This
process runs the probe cells before the first answer cell once (imports, setup, loading a model),
then forks one child per mutant: the child runs the remaining probe cells, with the mutant's
cell in place of the original, then every test cell, and sends back which test cells failed.
A child that runs past the job's timeout is killed. One JSON line per mutant goes to OUT as
soon as it is known.

Cells run as the grading kernel runs them, with what matters for a verdict: each cell's code
is registered in ``linecache`` (``inspect`` finds its source), an exception fails the cell
and the next cell still runs, and a test cell that writes to stderr fails (nbgrader scores it
0). ``NBGRADER_EXECUTION`` is set by ``run.py``, so the notebooks run their grading variant.
"""
from __future__ import annotations

import contextlib
import io
import json
import linecache
import multiprocessing
import os
import sys
import time


def run_cell(source: str, name: str, namespace: dict) -> None:
    """Execute one cell in ``namespace`` under a file name that ``inspect`` can read back."""
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    exec(compile(source, name, "exec"), namespace)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line}"[:300] if line else type(error).__name__


def run_mutant(namespace: dict, job: dict, mutant: dict) -> dict:
    """Probe cells (the mutant's in place of its original) then the test cells; the verdicts."""
    namespace = dict(namespace)
    probe_errors = {}
    for cell in job["probes"]:
        source = mutant["source"] if cell["index"] == mutant["index"] else cell["source"]
        try:
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                run_cell(source, f"<cell {cell['index']}>", namespace)
        except Exception as error:   # the grader's kernel goes on after a failing cell too
            probe_errors[cell["grade_id"] or f"cell {cell['index']}"] = first_line(error)
    failed = {}
    for cell in job["tests"]:
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                run_cell(cell["source"], f"<cell {cell['index']}>", namespace)
        except Exception as error:
            failed[cell["grade_id"]] = {"message": first_line(error),
                                        "key": getattr(error, "key", None)}
            continue
        if err.getvalue().strip():
            text = err.getvalue().strip().splitlines()[0][:200]
            failed[cell["grade_id"]] = {"message": f"wrote to stderr: {text}", "key": None}
    return {"probe_errors": probe_errors, "failed": failed}


def _child(conn, namespace: dict, job: dict, mutant: dict) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)   # what C code prints (torch warnings) goes nowhere
    os.dup2(devnull, 2)
    conn.send(run_mutant(namespace, job, mutant))
    conn.close()


def fork_run(context, namespace: dict, job: dict, mutant: dict) -> dict:
    """``run_mutant`` in a forked child, killed after ``job['timeout']`` seconds."""
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, namespace, job, mutant))
    start = time.monotonic()
    child.start()
    send.close()
    result = None
    try:
        if receive.poll(job["timeout"]):
            result = receive.recv()
    except EOFError:   # the child died before it answered
        pass
    if result is None and child.is_alive():
        child.kill()
        result = {"timeout": True}
    child.join()
    if result is None:
        result = {"crashed": f"the process died (exit status {child.exitcode})"}
    result["seconds"] = round(time.monotonic() - start, 2)
    return result


def warm_up() -> None:
    """Pay once, here, what every child would pay on its own: a check's first optimizer
    imports torch._dynamo (torch.optim's add_param_group is wrapped by torch/_compile.py)."""
    import torch._dynamo  # noqa: F401


def main(job_path: str, out_path: str) -> None:
    import torch
    torch.set_num_threads(1)   # before any op: forked children then never meet a thread pool
    with open(job_path) as f:
        job = json.load(f)
    os.chdir(job["workdir"])
    namespace = {"__name__": "__main__"}
    prefix_errors = {}
    for cell in job["prefix"]:
        try:
            run_cell(cell["source"], f"<cell {cell['index']}>", namespace)
        except Exception as error:
            prefix_errors[cell["grade_id"] or f"cell {cell['index']}"] = first_line(error)
    warm_up()
    from lorakit.checks import _probe
    _probe.STEP_SECONDS = job["step_seconds"]
    context = multiprocessing.get_context("fork")
    with open(out_path, "w") as out:
        for mutant in job["mutants"]:
            result = fork_run(context, namespace, job, mutant)
            result["id"] = mutant["id"]
            if prefix_errors:
                result.setdefault("probe_errors", {}).update(prefix_errors)
            out.write(json.dumps(result) + "\n")
            out.flush()


if __name__ == "__main__":
    main(*sys.argv[1:3])
