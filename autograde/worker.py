"""Execute one prepared submission in its own sandbox: the task of the grading pool.

    python -m autograde.worker TASK.json RESULT.json

The coordinator (``pipeline.autograde``) prepares each submission with nbgrader (cells
restored from the gradebook), writes a task file and runs this module in a fresh process per
submission. Here the notebook executor (nbclient, through nbgrader's ``Execute``) stays on the
host and talks to a kernel inside a :class:`~autograde.sandbox.Sandbox` over ipc sockets; the
executed notebook is assembled from the kernel's messages, with output capped as the messages
arrive. The result file holds that notebook and how execution ended; nothing the sandbox can
write is read back. This process never opens the gradebook.
"""
from __future__ import annotations

import sys

# jsonschema (under nbformat) checks the "iri" format with rfc3987_syntax when it is
# installed, and that module builds a grammar when imported: 0.8 s of CPU per worker
# process. No notebook schema uses the format; without the module jsonschema skips it.
# (So the imports below come after a statement.)
# ruff: noqa: E402
sys.modules.setdefault("rfc3987_syntax", None)

import contextlib
import ctypes
import gc
import importlib
import json
import math
import os
import select
import selectors
import shutil
import signal
import socket
import threading
import time
import traceback
from pathlib import Path

import nbformat
import zmq
import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from nbclient.util import run_sync
from nbformat.v4 import new_output
from traitlets import Any, Integer

from .config import KERNEL_DIED, NOT_GRADED, TIMED_OUT, SafeExecute, course_config
from .judge import JudgeUnavailable, judge, probe_session, strip_hidden_tests, write_verdicts
from .sandbox import Limits, Sandbox, detect

TRUNCATED = "[autograder: output truncated here - {what} passed {limit}; the rest was dropped]"


def _mb(n: int) -> str:
    return f"{n / 2**20:.3g} MB"


class SandboxKernelManager(AsyncKernelManager):
    """A kernel started inside ``self.sandbox``, reached over ipc sockets in its ipc folder,
    interrupted by message (a signal cannot cross into its PID namespace), with every
    message from it capped at ``max_message_bytes`` by zmq itself."""

    sandbox = Any(None)
    max_message_bytes = Integer(256 << 20)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.transport = "ipc"

    async def _async_pre_start_kernel(self, **kw):
        self.connection_file = str(self.sandbox.ipc_dir / "kernel.json")
        self.ip = str(self.sandbox.ipc_dir / "k")
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        os.chmod(self.connection_file, 0o644)  # the kernel's uid reads it; the folder is its
        host_env = dict(kw.get("env") or os.environ)
        kw["cwd"] = str(self.sandbox.run_dir)
        await super()._async_launch_kernel(self.sandbox.wrap(kernel_cmd, host_env), **kw)
        self.sandbox.process = self.provisioner.process

    async def interrupt_kernel(self):  # noqa: D102 (the async manager's name)
        if self.has_kernel:
            msg = self.session.msg("interrupt_request", content={})
            self._connect_control_socket()
            self.session.send(self._control_socket, msg)

    async def shutdown_kernel(self, now=False, restart=False):  # noqa: D102
        extra = self.sandbox.extra_processes()
        if extra:
            self.sandbox.report["left_running_at_end"] = extra
        return await super().shutdown_kernel(now=now, restart=restart)

    def client(self, **kwargs):
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, int(self.max_message_bytes))
        kwargs.setdefault("context", context)
        return super().client(**kwargs)


class NotebookTimeout(Exception):
    """The notebook as a whole ran past its wall-time limit."""


#: Message types that carry no output (kernel status, echo of the input, replies).
QUIET = ("status", "execute_input", "clear_output")


def _output_size(msg: dict) -> int:
    """Bytes an iopub message adds to the notebook: all of it (content with every key and
    field, metadata, binary buffers), so no field escapes the caps."""
    if msg.get("msg_type") in QUIET:
        return 0
    return (len(json.dumps(msg.get("content", {}))) + len(json.dumps(msg.get("metadata", {})))
            + sum(len(b) for b in msg.get("buffers") or []))


def _shorten_error(content: dict) -> None:
    """An error decides a score, so it is never dropped: it is shortened instead."""
    content["ename"] = str(content.get("ename", ""))[:200]
    content["evalue"] = str(content.get("evalue", ""))[:2000]
    content["traceback"] = [str(line)[:2000] for line in content.get("traceback", [])[-20:]]


class LimitedExecute(SafeExecute):
    """SafeExecute with a sandboxed kernel, output caps per cell and per notebook (counted as
    messages arrive; past a cap the rest is dropped behind a visible note, error messages
    excepted, shortened) and a wall-time limit for the whole notebook."""

    sandbox = Any(None)
    cell_output_bytes = Integer(2 << 20)
    notebook_output_bytes = Integer(16 << 20)
    notebook_timeout = Integer(900)

    def __init__(self, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(**kwargs)
        self.flags: list[str] = []
        self._cell_timeout = self.timeout

    message_bytes = Integer(256 << 20)

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        km.sandbox = self.sandbox
        km.max_message_bytes = self.message_bytes
        return km

    async def async_start_new_kernel_client(self):
        """Also watch the iopub socket: zmq drops the connection when one message passes
        ``message_bytes``, and that is the only trace such a message leaves."""
        kc = await super().async_start_new_kernel_client()
        self.sandbox.lock_ipc()  # the kernel is up and no student code has run yet
        monitor = kc.iopub_channel.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._monitor = zmq.Socket.shadow(monitor.underlying)  # a blocking view, polled below
        self._monitor_keep = monitor
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)

    def dropped_connections(self) -> int:
        count, monitor = 0, getattr(self, "_monitor", None)
        while monitor is not None and monitor.poll(0):
            monitor.recv_multipart()
            count += 1
        return count

    def preprocess(self, nb, resources=None, km=None):
        self._deadline = time.monotonic() + self.notebook_timeout
        self._total = 0
        self.flags = []
        return super().preprocess(nb, resources, km=km)

    def preprocess_cell(self, cell, resources, index):
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise NotebookTimeout(f"the notebook ran past its {self.notebook_timeout} s limit "
                                  f"before {self._running or 'cell %d' % index}")
        self.timeout = max(1, min(self._cell_timeout, math.ceil(left)))
        self._cell_bytes, self._cell_cut = 0, False
        out = super().preprocess_cell(cell, resources, index)
        if self.dropped_connections():  # the cell ended all the same: say what was lost
            self._cut(cell, "one output message", self.message_bytes)
            self.flags[-1] = (f"output dropped in {self._running}: one output message passed "
                              f"{_mb(self.message_bytes)}")
        return out

    def process_message(self, msg, cell, cell_index):
        size = _output_size(msg)
        if size:
            if msg["msg_type"] == "error":  # kept (shortened): one per cell past the caps
                _shorten_error(msg["content"])
                size = _output_size(msg)
                over = (self._cell_bytes + size > self.cell_output_bytes
                        or self._total + size > self.notebook_output_bytes)
                if over and any(o.get("output_type") == "error" for o in cell.outputs):
                    self._cut(cell, "this cell's output", self.cell_output_bytes)
                    return None
            elif (self._cell_bytes + size > self.cell_output_bytes
                  or self._total + size > self.notebook_output_bytes):
                if self._cell_bytes + size > self.cell_output_bytes:
                    self._cut(cell, "this cell's output", self.cell_output_bytes)
                else:
                    self._cut(cell, "the notebook's output", self.notebook_output_bytes)
                return None
            self._cell_bytes += size
            self._total += size
        return super().process_message(msg, cell, cell_index)

    def _cut(self, cell, what, limit):
        if self._cell_cut:
            return
        self._cell_cut = True
        cell.outputs.append(new_output("stream", name="stdout",
                                       text="\n" + TRUNCATED.format(what=what,
                                                                    limit=_mb(limit)) + "\n"))
        self.flags.append(f"output truncated in {self._running}: {what} passed {_mb(limit)}")


def execute(task: dict) -> dict:
    """Run one prepared notebook in a sandbox; return how it ended and the executed notebook.

    task: assignment, student, notebook (name), source (the prepared notebook as JSON),
    files ({name: host path} copied into the kernel's folder), limits (Limits fields),
    timeout (s per cell), notebook_timeout, cell_output_bytes, notebook_output_bytes.
    """
    started = time.monotonic()
    nb = nbformat.reads(task["source"], as_version=4)
    hidden = strip_hidden_tests(nb)  # the kernel never sees a hidden test
    limits = Limits(**task.get("limits", {}))
    cfg = course_config(timeout=task["timeout"])
    plan = detect()
    key = (task["assignment"], task["student"])
    result = {"student": task["student"], "sandbox": plan.summary(), "flags": [],
              "notebook": None}
    executed = False
    # the probe's sandbox and process start first: the probe imports torch and lorakit while
    # the notebook runs, and waits (running nothing of the submission) until the judge greets it
    with Sandbox(limits, task.get("files"), plan=plan, name=task["student"] + "-probe") as probe_box:
        session = probe_session(probe_box.wrap([sys.executable, *PROBE], dict(os.environ)))
        session.launch()
        try:
            with Sandbox(limits, task.get("files"), plan=plan, name=task["student"]) as box:
                box.process = None
                ex = LimitedExecute(config=cfg, sandbox=box,
                                    cell_output_bytes=task.get("cell_output_bytes", 2 << 20),
                                    notebook_output_bytes=task.get("notebook_output_bytes", 16 << 20),
                                    notebook_timeout=task.get("notebook_timeout", 900),
                                    message_bytes=task.get("message_bytes", 256 << 20))
                resources = {"metadata": {"path": str(box.run_dir)},
                             "nbgrader": {"assignment": task["assignment"], "student": task["student"],
                                          "notebook": task["notebook"]}}
                try:
                    nb, _ = ex.preprocess(nb, resources)
                    executed = True
                except NotebookTimeout as error:
                    SafeExecute.outcomes[key] = (TIMED_OUT, str(error))
                except Exception:  # SafeExecute recorded why
                    alive = box.process is not None and box.process.poll() is None
                    timed_out = SafeExecute.outcomes.get(key, ("",))[0] == TIMED_OUT
                    if alive and timed_out and ex.dropped_connections():
                        SafeExecute.outcomes[key] = (
                            "killed: output", f"one output message of {ex._running} passed "
                            f"{_mb(ex.message_bytes)}: the connection dropped it, and the cell's end "
                            f"with it; nothing after it ran")
                returncode = box.process.poll() if box.process is not None else None
                report = box.stop()
            status, reason = SafeExecute.outcomes.pop(key, (NOT_GRADED, "execution did not start"))
            status, reason = _blame(status, reason, report, returncode, limits)
            flags = ex.flags + _limit_flags(report, limits)
            if executed:
                for index, source in hidden.items():
                    nb.cells[index].source = source
                try:
                    judging = time.monotonic()
                    flags += _judge(task, nb, limits, probe_box, session)
                    result["judge_seconds"] = round(time.monotonic() - judging, 2)
                    result["notebook"] = nbformat.writes(nb)
                except JudgeUnavailable as error:  # ours, not the submission's: grade it again
                    status, reason = NOT_GRADED, str(error)
                    result["final"] = False
        finally:
            if not executed:
                probe_box.stop()   # nothing to judge: end the waiting probe now
            session.close()
    result.update(status=status, reason=reason, flags=flags, report=report,
                  returncode=returncode, seconds=round(time.monotonic() - started, 2))
    return result


#: The probe: ``python -m lorakit.checks.probe_server`` (runpy does what -m does), ended with
#: ``os._exit`` once the judge has closed its stdin. Its replies are written as they go and
#: nothing else is read back, so nothing is lost; the judge waits for the probe's exit, and
#: Python's own shutdown with torch loaded takes about a second.
PROBE = ["-c", "import os, runpy\nrunpy.run_module('lorakit.checks.probe_server', "
               "run_name='__main__', alter_sys=True)\nos._exit(0)"]


def _judge(task: dict, nb, limits: Limits, box: Sandbox, session) -> list[str]:
    """Judge the test cells here against the probe ``session`` running in ``box``, a sandbox
    of its own (see autograde/judge.py); write the verdicts into ``nb``; return the flags."""
    try:
        judgement = judge(nb, cell_timeout=task["timeout"], session=session)
    finally:
        report = box.stop()
    flags = write_verdicts(nb, judgement)
    if report.get("oom_kills"):
        flags.append(f"the probe was killed for memory ({_mb(limits.memory)})")
    return flags


def _blame(status, reason, report, returncode, limits):
    """Name the limit that killed a kernel, from the sandbox's counters and exit status."""
    if status != KERNEL_DIED:
        return status, reason
    # bwrap reports a command killed by signal N as exit status 128 + N
    signal_no = (returncode - 128) if returncode and returncode > 128 else None
    if report.get("oom_kills"):
        return "killed: memory", (f"killed for memory: the sandbox reached its "
                                  f"{_mb(limits.memory)} limit; {reason}")
    if signal_no == signal.SIGXCPU:
        return "killed: cpu", (f"killed for CPU time: a process used its "
                               f"{limits.cpu_seconds} s; {reason}")
    if signal_no == signal.SIGXFSZ:
        return "killed: file size", f"a file passed {_mb(limits.file_size)}; {reason}"
    if returncode is not None:
        reason += f" (kernel exit status {returncode}" + (
            f", signal {signal_no})" if signal_no else ")")
    return status, reason


def _limit_flags(report, limits) -> list[str]:
    flags = []
    if report.get("process_limit_hits"):
        flags.append(f"hit the process limit ({limits.processes}) "
                     f"{report['process_limit_hits']} time(s)")
    if report.get("left_running_at_end"):
        flags.append(f"{report['left_running_at_end']} process(es) of the submission were still "
                     "running when the notebook ended (killed with the sandbox)")
    if report.get("left_running"):
        flags.append(f"{report['left_running']} process(es) could not be killed")
    return flags


def _die_with(parent: int) -> None:
    """Exit when ``parent``, this process's parent, dies: nobody would read the result. The
    sandboxes die with this process (bubblewrap's --die-with-parent); the next run sweeps
    their cgroups. A forked worker's parent is its fork server (which kills its workers when
    the coordinator or Dask worker that started it dies); a worker started on its own is told
    its parent's pid by run_task (``LORALAB_WORKER_PARENT``): it may have died while this
    process was still importing."""
    if os.getppid() != parent:
        os._exit(3)
    try:
        fd = os.pidfd_open(parent)  # readable once the parent has exited
    except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
        fd = None
    if os.getppid() != parent:  # it died before the pidfd was opened: the pid may be reused
        os._exit(3)

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while os.getppid() == parent:
                time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _name(name: bytes) -> None:
    """Name this process as ps and top show it (PR_SET_NAME; Linux only, else nothing)."""
    try:
        ctypes.CDLL(None).prctl(15, name, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run(task_path: str, result_path: str) -> int:
    """Execute the task in ``task_path``; write its result (JSON) to ``result_path``."""
    task = json.loads(Path(task_path).read_text(encoding="utf-8"))
    result = execute(task)
    result["worker_pid"] = os.getpid()
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(result_path)
    return 0


# -- the fork server: one per process that runs tasks (autograde/runner.py: ForkServer) ------
def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode("utf-8") + b"\n")
    except OSError:  # the caller hung up: it reads nothing more
        pass


#: Imported by the fork server besides this module's own imports: what every task would
#: import on its way. A check's first optimizer imports torch._dynamo (torch.optim's
#: add_param_group is wrapped by torch/_compile.py: 1.4 s here); the kernel's spec is looked
#: up through ipykernel.
PRELOAD = ("torch._dynamo", "ipykernel.kernelspec", "IPython.paths")


def serve(listen_fd: int, alive_fd: int) -> int:
    """Fork one worker per request, from this process, which has imported everything a task
    needs (this module's imports: torch, nbgrader, nbclient, jupyter_client, zmq; and
    PRELOAD). runner.ForkServer starts it, with OPENBLAS_NUM_THREADS=1.

    ``listen_fd``: a listening Unix socket (in a folder only its owner can enter); a caller
    connects, sends one JSON line ``{"task", "result", "log", "cwd"}``, reads ``{"pid": N}``
    once the worker is forked and ``{"exit": CODE}`` once it has ended (CODE as
    ``Popen.returncode``: -9 for SIGKILL); it may send ``{"kill": true}`` meanwhile. A
    connection that closes before its worker has ended kills the worker's process group.
    ``alive_fd``: a pipe whose other end only the caller's process holds: at its end (the
    caller exited or was killed, or stopped this server) no more workers are forked, and this
    process exits once the running ones have ended.

    Fork safety: the imports start no thread (checked: forking a process with threads
    copies only the forking one, and locks held by the others stay locked in the child);
    nothing here creates a zmq context, an event loop, a torch thread pool, or probes the
    sandbox: each worker does that itself, as a freshly started one did.
    """
    _name(b"loralab-forksrv")
    for name in PRELOAD:
        importlib.import_module(name)
    threads = _threads()
    if threads != 1:
        print(f"autograde.worker --serve: {threads} threads after the imports; forking would "
              "be unsafe (LORALAB_FRESH_WORKERS=1 starts a fresh process per task instead)",
              file=sys.stderr, flush=True)
        return 70
    listener = socket.socket(fileno=listen_fd)
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through sig_w
    signal.set_wakeup_fd(sig_w)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(alive_fd, selectors.EVENT_READ, "alive")
    sel.register(sig_r, selectors.EVENT_READ, "reap")
    children: dict[int, socket.socket] = {}   # worker pid -> its caller's connection
    folder = Path(listener.getsockname()).parent  # the socket's and this server's log's
    gc.collect()
    gc.freeze()  # the imported modules' objects: their pages stay shared with the workers

    def kill(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)  # the worker and everything it started
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # not yet its own group leader

    def fork(conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            line = conn.makefile("rb").readline(1 << 20)
            request = json.loads(line)
            argv = [str(request[k]) for k in ("task", "result", "log", "cwd")]
        except (OSError, ValueError, KeyError, TypeError):
            conn.close()
            return
        conn.settimeout(None)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                sel.close()
                for sock in (listener, conn, *children.values()):
                    if sock.fileno() >= 0:
                        os.close(sock.detach())
                for fd in (sig_r, sig_w, alive_fd):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                code = _worker(*argv)
            except BaseException:  # noqa: BLE001 - reported in the worker's log
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        children[pid] = conn
        sel.register(conn, selectors.EVENT_READ, pid)
        _send(conn, {"pid": pid})

    while listener.fileno() >= 0 or children:
        for key, _ in sel.select():
            what = key.data
            if what == "alive":  # the caller's process is gone, or it stopped this server
                sel.unregister(alive_fd)
                sel.unregister(listener)
                listener.close()
            elif what == "accept":
                if listener.fileno() >= 0:
                    fork(listener.accept()[0])
            elif what == "reap":
                with contextlib.suppress(OSError):
                    os.read(sig_r, 4096)
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    conn = children.pop(pid, None)
                    if conn is not None:
                        with contextlib.suppress(KeyError, ValueError):
                            sel.unregister(conn)
                        _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                        conn.close()
            elif key.fileobj.fileno() >= 0:  # a caller's connection: a kill, or it hung up
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                if not data or b"kill" in data:
                    kill(what)
                if not data:
                    sel.unregister(key.fileobj)
    if folder.name.startswith("loralab-workers-"):  # made for this server: nothing to report
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _worker(task_path: str, result_path: str, log: str, cwd: str) -> int:
    """In a process just forked by :func:`serve`: a session (so a process group) of its own,
    its output in ``log``, then the task."""
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(cwd)
    _name(b"loralab-worker")
    _die_with(os.getppid())  # the server: it kills its workers when its caller dies
    return run(task_path, result_path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "--serve":
        return serve(int(argv[1]), int(argv[2]))
    if len(argv) != 2:
        print("usage: python -m autograde.worker TASK.json RESULT.json\n"
              "       python -m autograde.worker --serve LISTEN_FD ALIVE_FD", file=sys.stderr)
        return 2
    _die_with(int(os.environ.get("LORALAB_WORKER_PARENT") or os.getppid()))
    return run(argv[0], argv[1])


if __name__ == "__main__":
    sys.exit(main())
