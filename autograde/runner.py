"""Where grading tasks run: local worker processes, or a Dask distributed cluster.

A *task* is one prepared submission, self-contained (see ``Course.task``): the prepared
notebook, the files its kernel sees (contents, not paths), the limits. :func:`run_task` runs
one on whatever machine it is called on: it writes the task into a fresh temporary folder and
executes it there in a worker process of its own (which sandboxes the kernel and the probe),
forked from a :class:`ForkServer` that has imported torch, nbgrader and nbclient once, and
returns the result. Neither the gradebook nor ``solutions/`` is needed there; the machine
needs the course environment (Python, torch, nbgrader, this repository on ``sys.path``) and
bubblewrap.

    LocalRunner(workers)     a thread per worker slot, each running run_task (a forked
                             worker each, from the runner's fork server)
    DaskRunner(address)      run_task submitted to a dask.distributed scheduler (a fork
                             server per Dask worker process, started by its first task)

Both yield batches: lists of ``(task, result)``, everything that finished since the last
batch (the coordinator scores a batch in one nbgrader pass while the workers go on). A
worker that dies loses its own task: the local runner tries it once more, Dask reschedules it
(``retries``); if that fails too the result says why with ``final: False``, so the next run
grades the submission again.
"""
from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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


#: How a worker ended, besides exiting: killed past its time limit; lost with its fork server.
KILLED, LOST = "killed", "lost"


def worker_env() -> dict[str, str]:
    """The environment a worker runs in (and its kernels inherit, through the sandbox's
    filter): this process's, with the kernels' variables, ``NBGRADER_EXECUTION=autograde``
    and this repository on ``PYTHONPATH``."""
    return dict(os.environ, **kernel_env(), NBGRADER_EXECUTION="autograde",
                PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]
                                           ).rstrip(os.pathsep))


def run_task(task: dict, server: "ForkServer | None" = None) -> dict:
    """Execute one task here, in a worker process of its own; return its result.

    The worker is forked from ``server`` (by default this process's own :func:`fork_server`),
    which has imported everything already; with ``LORALAB_FRESH_WORKERS=1`` it is a fresh
    ``python -m autograde.worker`` process instead (slower: Python, torch and nbgrader start
    for every task). The worker's own failures (it crashed, was killed, ran past its limit,
    its fork server died) come back as ``failed(..., final=False)``: the submission's own code
    cannot cause them (it runs in the sandbox, under limits the worker enforces).
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
        limit = task["notebook_timeout"] + STARTUP_TIMEOUT + 120
        started = time.monotonic()
        if os.environ.get("LORALAB_FRESH_WORKERS"):
            ended, code = _run_fresh(folder, limit)
        else:
            ended, code = (server or fork_server()).run(folder, limit)
        if ended == KILLED:
            return failed(f"the grading worker ran past {limit} s and was killed", final=False)
        if result_file.is_file():
            result = json.loads(result_file.read_text(encoding="utf-8"))
            result["worker_seconds"] = round(time.monotonic() - started, 2)
            return result
        if ended == LOST:
            return failed(f"the grading worker's fork server died: {code}", final=False)
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
        tail = text.strip().splitlines()[-1:]
        return failed(f"the grading worker died (exit status {code}): {(tail or [''])[0][:300]}",
                      final=False)


def _run_fresh(folder: Path, limit: float) -> tuple[str, int | str | None]:
    """The task in ``folder`` in a fresh ``python -m autograde.worker`` process."""
    env = dict(worker_env(), LORALAB_WORKER_PARENT=str(os.getpid()))
    with (folder / "worker.log").open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "autograde.worker",
                                 str(folder / "task.json"), str(folder / "result.json")],
                                stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=folder)
        try:
            return "exited", proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return KILLED, None


#: Set for the fork server (and so its workers): numpy's OpenBLAS starts a thread per core
#: but one when it is loaded, and a process that forks must have no thread but its own. The
#: workers make no BLAS call of note (the judge's torch runs on 1 thread), and kernels and
#: probes get their thread counts from the sandbox (``Limits.threads``), not from here.
SERVER_ENV = {"OPENBLAS_NUM_THREADS": "1"}


class ForkServer:
    """A process that has imported everything a task needs (``python -m autograde.worker
    --serve``: torch, nbgrader, nbclient, jupyter_client) and forks one worker per task.

    It starts, with ``env`` (default :func:`worker_env`), at its first task; a new one starts
    in its place if it dies. Each worker is a process of its own, forked from the server's
    pristine state (nothing one task changes reaches the next), the leader of its own process
    group, killed with everything it started when it runs past its limit; it exits when its
    server dies, and the server kills its workers when the process that started it (the one
    holding this object) dies, and when the connection of a worker's caller closes. Stopping
    it (:meth:`stop`) lets the running workers finish. See :func:`autograde.worker.serve`.
    """

    def __init__(self, env: dict[str, str] | None = None):
        self.env = dict(worker_env() if env is None else env)
        self.owner = os.getpid()
        self.starts = 0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._alive: int | None = None
        self._dir: Path | None = None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _running(self) -> tuple[str, Path]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._release()
                self._start()
            assert self._dir is not None
            return str(self._dir / "socket"), self._dir

    def _start(self) -> None:
        # the socket in a folder only this user can enter (mkdtemp: 0700); a short path
        # (a Unix socket's is at most 107 bytes)
        base = None if len(tempfile.gettempdir()) < 60 else "/tmp"
        self._dir = Path(tempfile.mkdtemp(prefix="loralab-workers-", dir=base))
        alive_r, alive_w = os.pipe()  # the write end stays here, not inherited
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener, \
                (self._dir / "server.log").open("wb") as log:
            listener.bind(str(self._dir / "socket"))
            listener.listen(64)
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "autograde.worker", "--serve",
                     str(listener.fileno()), str(alive_r)],
                    pass_fds=(listener.fileno(), alive_r), env=dict(self.env, **SERVER_ENV),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self._dir, start_new_session=True)
            except BaseException:
                os.close(alive_w)
                raise
            finally:
                os.close(alive_r)
        self._alive = alive_w
        self.starts += 1

    def _release(self, wait: float = 0) -> None:
        """Stop forking (the server exits once its running workers have ended)."""
        if self._alive is not None:
            os.close(self._alive)
            self._alive = None
        if self._proc is not None and wait:
            try:
                self._proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def stop(self, wait: float = 30) -> None:
        """No more workers; wait up to ``wait`` s for the running ones and the server.
        Only in the process that started it (a forked copy of this object leaves it be)."""
        if self.owner != os.getpid():
            return
        with self._lock:
            self._release(wait)

    def run(self, folder: Path, limit: float) -> tuple[str, int | str | None]:
        """Run the task in ``folder`` (task.json; result.json and worker.log are written
        there) in a forked worker, for at most ``limit`` s: ("exited", exit status),
        (KILLED, None) past the limit, or (LOST, why) when the server died first."""
        deadline = time.monotonic() + limit
        address, where = self._running()
        request = {"task": str(folder / "task.json"), "result": str(folder / "result.json"),
                   "log": str(folder / "worker.log"), "cwd": str(folder)}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            lines = _Lines(conn)
            try:
                conn.settimeout(30)
                conn.connect(address)
                conn.sendall(json.dumps(request).encode("utf-8") + b"\n")
                started = lines.next(deadline)  # once the server has imported and forked
                if started is None:
                    return LOST, self._why(where)
                ended = lines.next(deadline)
                if ended is None:
                    return LOST, self._why(where)
                return "exited", int(ended["exit"])
            except socket.timeout:
                pass
            except OSError as error:
                return LOST, f"{type(error).__name__}: {error}"
            # past the limit: the server (the worker's parent: it knows whether the pid is
            # still its worker's) kills the worker's process group
            if not lines.seen:
                with self._lock:  # still importing, or stuck: a new server next time
                    if self._proc is not None:
                        self._proc.kill()
                return KILLED, None
            with contextlib.suppress(OSError):
                conn.sendall(b'{"kill": true}\n')
                lines.next(time.monotonic() + 60)
            return KILLED, None

    @staticmethod
    def _why(where: Path) -> str:
        try:
            text = (where / "server.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        tail = text.strip().splitlines()[-1:]
        return (tail or ["no message"])[0][:300]


class _Lines:
    """JSON lines read from a socket, each by a deadline (socket.timeout past it)."""

    def __init__(self, conn: socket.socket):
        self.conn, self.buffer, self.seen = conn, b"", 0

    def next(self, deadline: float) -> dict | None:
        while b"\n" not in self.buffer:
            self.conn.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.conn.recv(4096)
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        self.seen += 1
        return json.loads(line)


_SERVER: ForkServer | None = None
_SERVER_LOCK = threading.Lock()


def fork_server() -> ForkServer:
    """This process's own fork server (for tasks run without one, as on a Dask worker):
    started lazily, replaced when this process's environment has changed since."""
    global _SERVER
    env = worker_env()
    with _SERVER_LOCK:
        if _SERVER is None or _SERVER.owner != os.getpid() or _SERVER.env != env:
            if _SERVER is not None and _SERVER.owner == os.getpid():
                _SERVER.stop(wait=0)  # its running workers finish
            else:  # the first here: its folder goes when this process exits
                atexit.register(lambda: _SERVER is not None and _SERVER.stop(wait=0))
            _SERVER = ForkServer(env)
        return _SERVER


class LocalRunner:
    """``workers`` tasks at a time on this machine, forked from one :class:`ForkServer`
    (started by the first task, stopped when `batches` ends)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.server: ForkServer | None = None

    def describe(self) -> str:
        return f"{self.workers} local worker(s)"

    def close(self) -> None:
        """Stop the fork server (`batches` does, when it ends)."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def batches(self, tasks: Iterable[dict]) -> Iterator[list[tuple[dict, dict]]]:
        tasks = list(tasks)
        if not tasks:
            return
        if not os.environ.get("LORALAB_FRESH_WORKERS"):
            self.server = ForkServer()
        run = functools.partial(run_task, server=self.server)
        try:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                pending = {pool.submit(run, t): (t, 0) for t in tasks}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    batch = []
                    for future in done:
                        task, tries = pending.pop(future)
                        try:
                            result = future.result()
                        except Exception as error:  # a bug of ours: this task only
                            result = failed(f"the worker failed: {first_line(error)}",
                                            final=False)
                        if result.get("final", True) is False and tries == 0:
                            pending[pool.submit(run, task)] = (task, 1)  # once more
                            continue
                        batch.append((task, result))
                    if batch:
                        yield batch
        finally:
            self.close()


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
