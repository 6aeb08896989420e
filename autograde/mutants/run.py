"""Runs the mutants of each assignment and tells killed, equivalent and surviving apart.

One worker process per assignment (``worker.py``) runs its mutants one at a time, each in a
forked child; ``--jobs`` runs several assignments side by side. The unmutated solution runs
first, as mutant ``original``: a test cell that fails there is an error of the assignment
(reported, and ignored as a killer since it fails for every mutant).

Verdicts:

- ``killed``: at least one test cell failed (its first message is kept), or the mutant ran
  past the timeout (``timeout``) or crashed its process (``crashed``): a grader fails those too;
- ``equivalent``: survived, and ``equivalent.toml`` cites the contract sentence that allows it;
- ``known``: survived, listed in ``survivors.json`` (a known gap in the checks);
- ``survived``: survived and listed nowhere: a new gap, which fails the test suite.

The kill rate is killed / (mutants - equivalent).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import nbformat
import tomllib

from ..cells import ANSWER, TEST, cells, probe_cells
from . import Mutant, mutate

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SOLUTIONS = ROOT / "solutions"
EQUIVALENT_FILE = HERE / "equivalent.toml"
SURVIVORS_FILE = HERE / "survivors.json"

ORIGINAL = "original"
FAST_EVERY = 4       # --fast runs the mutants whose id hashes to 0 modulo this: a stable quarter
TIMEOUT = 60         # seconds per mutant (the original takes a few)
STEP_SECONDS = 5     # lorakit.checks' limit per call into student code, lowered from 10
KILLED, EQUIVALENT, KNOWN, SURVIVED = "killed", "equivalent", "known", "survived"


@dataclass
class Plan:
    """What one assignment's worker needs, and the mutants it will run."""
    assignment: str
    notebook: Path
    job: dict
    mutants: list[Mutant]
    lines: dict[str, str]     # mutant id -> the original line it changes


def assignments() -> list[str]:
    return sorted(p.name for p in SOLUTIONS.iterdir() if list(p.glob("*.ipynb")))


def resolve(names: list[str]) -> list[str]:
    """Assignment names from arguments: full names or unique prefixes (``01``)."""
    every, out = assignments(), []
    for name in names:
        found = [a for a in every if a == name or a.startswith(name)]
        if len(found) != 1:
            raise SystemExit(f"unknown or ambiguous assignment {name!r}; one of {every}")
        out.append(found[0])
    return out or every


def number(assignment: str) -> str:
    """``03`` for ``03_bilinear_conditioning``: the head of its mutant ids (two notebooks have
    an answer cell ``merge_conditioned``)."""
    return assignment.split("_")[0]


def is_fast(mutant_id: str) -> bool:
    return zlib.crc32(mutant_id.encode()) % FAST_EVERY == 0


def plan(assignment: str, fast: bool = False, timeout: int = TIMEOUT) -> Plan:
    notebook = next((SOLUTIONS / assignment).glob("*.ipynb"))
    nb = nbformat.read(notebook, as_version=4)
    probes = probe_cells(nb)
    first_answer = next(i for i, c in enumerate(probes) if c.kind == ANSWER)
    mutants, lines = [], {}
    for cell in probes[first_answer:]:
        if cell.kind != ANSWER:
            continue
        for m in mutate(cell.source, cell.grade_id, head=f"{number(assignment)}/{cell.grade_id}"):
            if not fast or is_fast(m.id):
                mutants.append(m)
                lines[m.id] = cell.source.splitlines()[m.line - 1].strip()
    index = {c.grade_id: c.index for c in probes if c.kind == ANSWER}

    def entry(c):
        return {"index": c.index, "grade_id": c.grade_id, "source": c.source}

    job = {"assignment": assignment, "workdir": str(notebook.parent), "timeout": timeout,
           "step_seconds": STEP_SECONDS,
           "prefix": [entry(c) for c in probes[:first_answer]],
           "probes": [entry(c) for c in probes[first_answer:]],
           "tests": [entry(c) for c in cells(nb) if c.kind == TEST],
           "mutants": [{"id": ORIGINAL, "index": None, "source": None}] + [
               {"id": m.id, "index": index[m.grade_id], "source": m.source} for m in mutants]}
    return Plan(assignment, notebook, job, mutants, lines)


def worker_env() -> dict[str, str]:
    env = dict(os.environ, NBGRADER_EXECUTION="autograde", PYTHONHASHSEED="0", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def start(p: Plan, scratch: Path) -> tuple[subprocess.Popen, Path]:
    job_path, out_path = scratch / f"{p.assignment}.json", scratch / f"{p.assignment}.jsonl"
    job_path.write_text(json.dumps(p.job))
    with open(scratch / f"{p.assignment}.log", "w") as log:   # the child keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "autograde.mutants.worker",
                                 str(job_path), str(out_path)], cwd=ROOT, env=worker_env(),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, out_path


def execute(plans: list[Plan], jobs: int = 1) -> dict[str, dict[str, dict]]:
    """{assignment: {mutant id: raw result}}, running ``jobs`` workers at a time."""
    results, pending, running = {}, list(plans), []
    with tempfile.TemporaryDirectory(prefix="mutants-") as scratch:
        while pending or running:
            while pending and len(running) < jobs:
                p = pending.pop(0)
                running.append((p, *start(p, Path(scratch)), time.monotonic()))
            time.sleep(0.2)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                p, proc, out_path, began = item
                raw = [json.loads(line) for line in out_path.read_text().splitlines()] \
                    if out_path.exists() else []
                results[p.assignment] = {r["id"]: r for r in raw}
                if proc.returncode or len(raw) != len(p.job["mutants"]):
                    log = (Path(scratch) / f"{p.assignment}.log").read_text()[-2000:]
                    results[p.assignment][ORIGINAL] = {"worker_error": log or "no output"}
                print(f"  {p.assignment}: {len(p.mutants)} mutants in "
                      f"{time.monotonic() - began:.0f} s", file=sys.stderr)
    return results


def plain(text: str) -> str:
    """Text without Markdown's inline marks (`, *, $) and with single spaces: how a contract
    quote of ``equivalent.toml`` is found in its notebook."""
    return " ".join(re.sub(r"[`*$]", "", text).split())


def notebook_of(mutant_id: str) -> Path:
    """The source notebook of a mutant id (``03/merge_conditioned/...``)."""
    head = mutant_id.split("/")[0]
    return next(next((SOLUTIONS / a).glob("*.ipynb")) for a in assignments()
                if number(a) == head)


def cites_its_notebook(entry: dict) -> bool:
    """Whether an equivalent entry's contract quote is in the notebook it belongs to."""
    nb = nbformat.read(notebook_of(entry["id"]), as_version=4)
    return plain(entry["contract"]) in plain("\n".join(c.source for c in nb.cells))


def load_lists() -> tuple[dict[str, dict], dict[str, dict]]:
    """The equivalent list ({id: entry}) and the known survivors ({id: entry})."""
    listed = tomllib.loads(EQUIVALENT_FILE.read_text()) if EQUIVALENT_FILE.exists() else {}
    equivalent = {e["id"]: e for e in listed.get("mutant", [])}
    survivors = json.loads(SURVIVORS_FILE.read_text()) if SURVIVORS_FILE.exists() else {}
    return equivalent, survivors


def verdict(raw: dict, ignore: set[str]) -> dict[str, str]:
    """{test cell: first message} of what killed one mutant (empty: it survived); a timeout or a
    crash kills too. Test cells in ``ignore`` (failing without a mutation) kill nothing."""
    if raw.get("timeout"):
        return {"timeout": "ran past the time limit"}
    if raw.get("crashed"):
        return {"crashed": raw["crashed"]}
    return {gid: f["message"] for gid, f in raw.get("failed", {}).items() if gid not in ignore}


def assess(p: Plan, raw: dict[str, dict]) -> dict:
    """The results of one assignment, as plain data; :func:`label` adds the verdicts."""
    original = raw.get(ORIGINAL, {"worker_error": "no result"})
    errors = {gid: f["message"] for gid, f in original.get("failed", {}).items()}
    if "worker_error" in original:
        errors["worker"] = original["worker_error"]
    errors.update({f"probe {k}": v for k, v in original.get("probe_errors", {}).items()})
    rows = []
    for m in p.mutants:
        result = raw.get(m.id, {"crashed": "no result"})
        killers = verdict(result, set(errors))
        keys = {gid: f["key"] for gid, f in result.get("failed", {}).items()
                if gid in killers and f.get("key")}
        rows.append({"id": m.id, "operator": m.operator, "cell": m.grade_id, "line": m.line,
                     "was": p.lines[m.id], "diff": m.diff, "killers": killers, "keys": keys,
                     "seconds": result.get("seconds")})
    return {"notebook": str(p.notebook.relative_to(ROOT)),
            "probe_cells": [c["grade_id"] or f"cell {c['index']}"
                            for c in p.job["prefix"] + p.job["probes"]],
            "errors": errors, "results": rows}


def label(report: dict) -> dict:
    """Each result's status and each assignment's tallies, from the lists as they are now."""
    equivalent, survivors = load_lists()
    for name, a in report["assignments"].items():
        rows = a["results"]
        for r in rows:
            r["status"] = KILLED if r["killers"] else EQUIVALENT if r["id"] in equivalent \
                else KNOWN if r["id"] in survivors else SURVIVED
        counts = {s: sum(r["status"] == s for r in rows)
                  for s in (KILLED, EQUIVALENT, KNOWN, SURVIVED)}
        judged = len(rows) - counts[EQUIVALENT]
        killed_by: dict[str, dict] = {}
        for r in rows:
            for gid in r["killers"]:
                entry = killed_by.setdefault(gid, {"mutants": 0, "keys": []})
                entry["mutants"] += 1
                if r["keys"].get(gid) and r["keys"][gid] not in entry["keys"]:
                    entry["keys"].append(r["keys"][gid])
        killed, head = {r["id"] for r in rows if r["killers"]}, number(name) + "/"
        ids = {r["id"] for r in rows}
        a.update(mutants=len(rows), **counts,
                 kill_rate=round(counts[KILLED] / judged, 4) if judged else 1.0,
                 killed_by=dict(sorted(killed_by.items())),
                 equivalent_but_killed=sorted(killed & set(equivalent)),
                 known_but_killed=sorted(killed & set(survivors)),
                 listed_but_unknown=[] if report["fast"] else sorted(
                     i for i in (*equivalent, *survivors) if i.startswith(head) and i not in ids))
    return report


def revision() -> str:
    """The commit the checks and solutions were run at, and what differed from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout
    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        changed = [line[3:] for line in
                   git("status", "--porcelain", "--", "lorakit", "solutions").splitlines()]
    except OSError:
        return "unknown"
    return commit + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def run(names: list[str], fast: bool = False, jobs: int = 1, timeout: int = TIMEOUT) -> dict:
    """Plan, execute, assess and label; the whole report as plain data."""
    plans, at = [plan(a, fast, timeout) for a in resolve(names)], revision()
    raw = execute(plans, jobs)
    return label({"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "revision": at,
                  "fast": fast, "fast_every": FAST_EVERY if fast else None,
                  "assignments": {p.assignment: assess(p, raw.get(p.assignment, {}))
                                  for p in plans}})


def new_survivors(report: dict) -> list[dict]:
    return [r for a in report["assignments"].values() for r in a["results"]
            if r["status"] == SURVIVED]


def update_survivors(report: dict) -> dict:
    """``survivors.json`` after a full run: this run's new survivors added (with an empty
    ``breaks`` note to write), ids no longer generated dropped. Entries a check now kills stay
    until the checks' owners remove them (the report lists them): a check may kill one in a
    working copy only."""
    _, known = load_lists()
    generated = {r["id"] for a in report["assignments"].values() for r in a["results"]}
    heads = tuple(number(a) + "/" for a in report["assignments"])
    kept = {i: e for i, e in known.items() if i in generated or not i.startswith(heads)}
    for a in report["assignments"].values():
        for r in a["results"]:
            if r["status"] == SURVIVED:
                kept[r["id"]] = {"was": r["was"], "diff": r["diff"], "breaks": ""}
    return dict(sorted(kept.items()))
