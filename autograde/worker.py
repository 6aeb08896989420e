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
sys.modules.setdefault("rfc3987_syntax", None)

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import nbformat
import zmq
import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from nbclient.util import run_sync
from nbformat.v4 import new_output
from traitlets import Any, Integer

from .config import KERNEL_DIED, NOT_GRADED, TIMED_OUT, SafeExecute, course_config
from .judge import JudgeUnavailable, judge, strip_hidden_tests, write_verdicts
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
            flags += _judge(task, nb, limits, plan)
            result["judge_seconds"] = round(time.monotonic() - judging, 2)
            result["notebook"] = nbformat.writes(nb)
        except JudgeUnavailable as error:  # ours, not the submission's: grade it again
            status, reason = NOT_GRADED, str(error)
            result["final"] = False
    result.update(status=status, reason=reason, flags=flags, report=report,
                  returncode=returncode, seconds=round(time.monotonic() - started, 2))
    return result


def _judge(task: dict, nb, limits: Limits, plan) -> list[str]:
    """Judge the test cells here against a fresh probe in a sandbox of its own (see
    autograde/judge.py); write the verdicts into ``nb``; return the flags."""
    with Sandbox(limits, task.get("files"), plan=plan, name=task["student"] + "-probe") as box:
        command = box.wrap([sys.executable, "-m", "lorakit.checks.probe_server"],
                           dict(os.environ))
        try:
            judgement = judge(nb, command, cell_timeout=task["timeout"])
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


def _die_with_parent() -> None:
    """Exit when the process that started this worker dies (a killed coordinator or Dask
    worker): nobody would read the result. The sandboxes die with this process
    (bubblewrap's --die-with-parent); the next run sweeps their cgroups. The parent's pid
    comes from run_task: it may have died while this process was still importing."""
    parent = int(os.environ.get("LORALAB_WORKER_PARENT") or os.getppid())

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m autograde.worker TASK.json RESULT.json", file=sys.stderr)
        return 2
    task = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    _die_with_parent()
    result = execute(task)
    tmp = Path(argv[1] + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
