"""Judge a submission's test cells here, against its code in a sandboxed probe process.

The grading host never runs student code, and the student's code never sees a test:

1. a fresh probe (:mod:`lorakit.checks.probe_server`) starts in the submission's own sandbox
   and executes the notebook's probe cells (:func:`autograde.cells.probe_cells`: the setup
   cells the tests need, restored by nbgrader from the source, and the student's answer cells);
2. here, in the worker process, each test cell — hidden tests included — runs with the
   setup cells' imports done here (so ``checks`` is *our* ``lorakit.checks``) and every other
   name it reads taken from the probe as a stand-in (:mod:`lorakit.checks.remote`): the
   checks build the student's layer there, send it inputs, read back plain tensors, and
   decide here;
3. the verdicts (what the cell printed, or its error) replace the test cells' outputs of the
   kernel run before nbgrader scores the notebook, so gradebook, feedback and formgrader work
   as before. The kernel run (without hidden tests) is what the student's own cells showed.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import time
from dataclasses import dataclass, field

import torch
from nbformat.v4 import new_output

from lorakit.checks import _probe
from lorakit.checks.remote import ProbeSession, resolve_names

from .cells import ANSWER, CODE, TEST, cells, free_names, probe_cells
from .config import is_test_cell, test_cells_displaying, visible_source

MAX_OUTPUT = 20_000  # characters of a test cell's printed output kept in the notebook


class JudgeUnavailable(RuntimeError):
    """The probe could not be started: nothing was judged (an infrastructure problem, not the
    student's)."""


@dataclass
class Verdict:
    grade_id: str
    passed: bool
    stdout: str = ""
    ename: str = ""
    evalue: str = ""
    key: str | None = None            # the concept key of a CheckFailure
    seconds: float = 0.0


@dataclass
class Judgement:
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    cell_errors: dict[str, str] = field(default_factory=dict)  # probe cell -> its error
    probe_output: str = ""


def host_imports(setup: list) -> dict:
    """The namespace of the setup cells' import statements, executed here (trusted: nbgrader
    restored these cells from the source). Answer cells' imports are not run here."""
    ns: dict = {"__name__": "__judge__"}
    for cell in setup:
        if cell.kind != CODE:
            continue
        for node in ast.parse(cell.source).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                code = compile(ast.Module(body=[node], type_ignores=[]), "<setup imports>",
                               "exec")
                with contextlib.suppress(Exception):
                    exec(code, ns)
    return ns


def probe_session(command: list[str], env: dict | None = None,
                  step_seconds: float | None = None) -> ProbeSession:
    """The session ``judge`` talks to; ``session.launch()`` starts its process early, so that
    it has imported torch by the time the notebook has run (its first request waits)."""
    return ProbeSession(command, env=env, step_seconds=step_seconds)


def judge(nb, command: list[str] | None = None, env: dict | None = None, cell_timeout: float = 120,
          step_seconds: float | None = None, session: ProbeSession | None = None) -> Judgement:
    """Run every test cell of ``nb`` (a prepared notebook: setup and test cells restored,
    hidden tests included) here, against a probe started with ``command`` (or ``session``,
    from ``probe_session``, possibly launched already). The session is closed at the end."""
    torch.set_num_threads(1)  # the checks' tensors are tiny; threads would only spin
    answers = {c.grade_id: c.source for c in cells(nb) if c.kind == ANSWER and c.grade_id}
    if session is None:
        if command is None:
            raise TypeError("judge needs the probe's command or a session")
        session = probe_session(command, env=env, step_seconds=step_seconds)
    session.answer_sources = dict(answers)
    out = Judgement()
    try:
        session.start()
    except _probe.CheckFailure as e:
        session.close()
        raise JudgeUnavailable(f"the probe process did not start: {e}") from None
    try:
        probe = probe_cells(nb)
        for cell in probe:
            reply = session.exec(cell.source, f"<cell {cell.grade_id or cell.index}>",
                                 cell_timeout)
            if not reply.get("ok"):
                err = reply.get("cell_error") or {}
                out.cell_errors[cell.grade_id or str(cell.index)] = \
                    f"{err.get('type')}: {err.get('message')}"
        local = host_imports(probe)
        for cell in cells(nb):
            if cell.kind == TEST and cell.grade_id:
                out.verdicts[cell.grade_id] = _run_test(session, cell, local)
    finally:
        out.probe_output = "".join(session.output)[-4000:]
        session.close()
    return out


def _run_test(session: ProbeSession, cell, local: dict) -> Verdict:
    started = time.monotonic()
    printed = io.StringIO()
    verdict = Verdict(cell.grade_id, passed=True)
    try:
        names = free_names(cell.source) - set(dir(builtins))
        ns = {"__name__": "__judge__", **resolve_names(session, sorted(names), local)}
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            exec(compile(cell.source, f"<test {cell.grade_id}>", "exec"), ns)
    except Exception as e:  # noqa: BLE001 - a failing test is a verdict
        verdict.passed = False
        verdict.ename, verdict.evalue = type(e).__name__, str(e)
        verdict.key = getattr(e, "key", None)
    verdict.stdout = printed.getvalue()[:MAX_OUTPUT]
    verdict.seconds = round(time.monotonic() - started, 2)
    return verdict


def kernel_passed(cell) -> bool:
    return not any(o.get("output_type") == "error" for o in cell.get("outputs", []))


def write_verdicts(nb, judgement: Judgement) -> list[str]:
    """Replace each test cell's outputs with the host's verdict; return flags for the cells
    whose kernel run and host verdict disagree."""
    flags = []
    shown = test_cells_displaying(nb)
    if shown:
        flags.append(f"test cell(s) {', '.join(shown)} displayed a value: only student code "
                     "does that (ignored: no partial credit)")
    kernel_only, host_only = [], []
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        verdict = judgement.verdicts.get(gid)
        if verdict is None or cell.cell_type != "code":
            continue
        in_kernel = kernel_passed(cell)
        outputs = []
        if verdict.stdout:
            outputs.append(new_output("stream", name="stdout", text=verdict.stdout))
        if not verdict.passed:
            outputs.append(new_output("error", ename=verdict.ename, evalue=verdict.evalue,
                                      traceback=[f"{verdict.ename}: {verdict.evalue}"]))
        cell.outputs = outputs
        cell.metadata["loralab"] = {"judged_on_host": True, "passed_in_kernel": in_kernel,
                                    **({"concept": verdict.key} if verdict.key else {})}
        if in_kernel and not verdict.passed:
            kernel_only.append(gid)
        elif verdict.passed and not in_kernel:
            host_only.append(gid)
    if kernel_only:
        flags.append(f"passed in the kernel, failed on the host: {', '.join(kernel_only)} "
                     "(the grade is the host's)")
    if host_only:
        flags.append(f"failed in the kernel, passed on the host: {', '.join(host_only)}")
    for name, error in judgement.cell_errors.items():
        flags.append(f"cell {name} raised in the probe: {error[:200]}")
    return flags


def strip_hidden_tests(nb) -> dict[int, str]:
    """Remove the hidden-test regions from ``nb``'s test cells (for the kernel run); return
    {cell index: full source} to put back afterwards."""
    kept = {}
    for i, cell in enumerate(nb.cells):
        if is_test_cell(cell):
            visible = visible_source(cell.source)
            if visible != cell.source:
                kept[i] = cell.source
                cell.source = visible
    return kept


__all__ = ["judge", "write_verdicts", "strip_hidden_tests", "JudgeUnavailable", "Verdict",
           "Judgement"]
