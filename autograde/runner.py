"""Where grading tasks run: local worker processes, or a Dask distributed cluster.

A *task* is one prepared submission, self-contained (see ``Course.task``): the prepared
notebook, the files its kernel sees (contents, not paths), the limits. :func:`run_task` runs
one on whatever machine it is called on: it writes the task into a fresh temporary folder,
executes ``python -m autograde.worker`` there in a new process (which sandboxes the kernel
and the probe) and returns the result. Neither the gradebook nor ``solutions/`` is needed
there; the machine needs the course environment (Python, torch, nbgrader, this repository on
``sys.path``) and bubblewrap.

    LocalRunner(workers)     a thread per worker slot, each running run_task (a process each)
    DaskRunner(address)      run_task submitted to a dask.distributed scheduler

Both yield batches: lists of ``(task, result)``, everything that finished since the last
batch (the coordinator scores a batch in one nbgrader pass while the workers go on). A worker that dies loses its own task: the
local runner tries it once more, Dask reschedules it (``retries``); if that fails too the
result says why with ``final: False``, so the next run grades the submission again.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterable, Iterator

from .config import NOT_GRADED, STARTUP_TIMEOUT, first_line, kernel_env

REPO = Path(__file__).resolve().parents[1]


def failed(reason: str, final: bool = True) -> dict:
    """A result for a task that produced no executed notebook."""
    return {"status": NOT_GRADED, "reason": reason, "notebook": None, "flags": [],
            "final": final}


def encode_files(paths: dict[str, str]) -> dict[str, str]:
    """{name: host path} -> {name: base64 of the contents}, for a task that travels."""
    return {name: base64.b64encode(Path(path).read_bytes()).decode("ascii")
            for name, path in paths.items()}


def run_task(task: dict) -> dict:
    """Execute one task here, in a fresh worker process; return its result.

    The worker's own failures (it crashed, was killed, ran past its limit) come back as
    ``failed(..., final=False)``: the submission's own code cannot cause them (it runs in
    the sandbox, under limits the worker enforces).
    """
    with tempfile.TemporaryDirectory(prefix="loralab-task-") as tmp:
        folder = Path(tmp)
        files = {}
        for name, data in task["files"].items():
            path = folder / "files" / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(base64.b64decode(data))
            files[name] = str(path)
        task_file, result_file, log = (folder / n for n in ("task.json", "result.json",
                                                            "worker.log"))
        task_file.write_text(json.dumps(dict(task, files=files)), encoding="utf-8")
        env = dict(os.environ, **kernel_env(), NBGRADER_EXECUTION="autograde",
                   LORALAB_WORKER_PARENT=str(os.getpid()),
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]
                                              ).rstrip(os.pathsep))
        limit = task["notebook_timeout"] + STARTUP_TIMEOUT + 120
        started = time.monotonic()
        with log.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "autograde.worker", str(task_file),
                                     str(result_file)], stdout=fh, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True, cwd=tmp)
            try:
                code = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return failed(f"the grading worker ran past {limit} s and was killed",
                              final=False)
        if result_file.is_file():
            result = json.loads(result_file.read_text(encoding="utf-8"))
            result["worker_seconds"] = round(time.monotonic() - started, 2)
            return result
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        return failed(f"the grading worker died (exit status {code}): {(tail or [''])[0][:300]}",
                      final=False)


class LocalRunner:
    """``workers`` tasks at a time on this machine."""

    def __init__(self, workers: int):
        self.workers = workers

    def describe(self) -> str:
        return f"{self.workers} local worker(s)"

    def close(self) -> None:
        """Nothing to release: the pool ends when `batches` does."""

    def batches(self, tasks: Iterable[dict]) -> Iterator[list[tuple[dict, dict]]]:
        tasks = list(tasks)
        if not tasks:
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            pending = {pool.submit(run_task, t): (t, 0) for t in tasks}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                batch = []
                for future in done:
                    task, tries = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as error:  # a bug of ours: this task only
                        result = failed(f"the worker failed: {first_line(error)}", final=False)
                    if result.get("final", True) is False and tries == 0:
                        pending[pool.submit(run_task, task)] = (task, 1)  # once more
                        continue
                    batch.append((task, result))
                if batch:
                    yield batch


class DaskRunner:
    """Tasks sent to the Dask distributed scheduler at ``address`` (``tcp://host:8786``, or
    a ``distributed.Client`` / cluster object)."""

    def __init__(self, address, retries: int = 1):
        from distributed import Client

        if isinstance(address, Client):
            self.client, self._own = address, False
        else:
            self.client, self._own = Client(address, set_as_default=False), True
        self.retries = retries

    def describe(self) -> str:
        workers = self.client.scheduler_info().get("workers", {})
        return f"Dask cluster {self.client.scheduler.address} ({len(workers)} worker(s))"

    def close(self) -> None:
        if self._own:
            self.client.close()

    def batches(self, tasks: Iterable[dict]) -> Iterator[list[tuple[dict, dict]]]:
        from distributed import as_completed

        futures = {}
        for task in tasks:
            key = f"grade-{task['assignment']}-{task['student']}-{task['fingerprint'][:12]}"
            futures[self.client.submit(run_task, task, key=key, pure=False,
                                       retries=self.retries)] = task
        for done in as_completed(futures, loop=self.client.loop).batches():
            batch = []
            for future in done:
                try:
                    result = future.result()
                except Exception as error:  # KilledWorker, a lost connection, ...
                    result = failed(f"the Dask task failed: {type(error).__name__}: "
                                    f"{first_line(error)}", final=False)
                batch.append((futures[future], result))
                future.release()
            yield batch
