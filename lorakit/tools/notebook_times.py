"""How long each solution notebook takes to run top to bottom, against the course's 90 s budget.

    python -m lorakit.tools.notebook_times                        # every solutions/*/*.ipynb
    python -m lorakit.tools.notebook_times solutions/01_lora_linear/lora_linear.ipynb
    python -m lorakit.tools.notebook_times --limit 60 --json times.json
    python -m lorakit.tools.bench notebooks ...                   # the same command

Each notebook runs in a fresh kernel (nbclient, the notebook's own kernel, its folder as the
working directory; nothing is written back to the file). The time is wall-clock seconds from
kernel start to the last cell, as a student running "Restart and run all" would wait. Cells
tagged ``raises-exception`` may raise, as under nbval; any other error fails the notebook.
Exit status 1 when a notebook fails or takes longer than ``--limit`` seconds (default 90: a
notebook stays fast on a 2-core CPU); CI already executes every notebook under nbval, this command adds the
clock.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from ..provenance import cpu_model

LIMIT_S = 90.0
REPO = Path(__file__).resolve().parents[2]


def default_notebooks(root: Path = REPO) -> list[Path]:
    return sorted((root / "solutions").glob("*/*.ipynb"))


def run_notebook(path: Path, cell_timeout: int = 600) -> dict:
    """Execute one notebook; returns {"notebook", "seconds", "error"} (error None when it ran)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=cell_timeout,
                            kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as exc:   # CellExecutionError, timeouts, a dead kernel: report, go on
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    seconds = time.perf_counter() - start
    try:
        path = path.resolve().relative_to(REPO)       # repository-relative in the JSON
    except ValueError:
        pass
    return {"notebook": str(path), "seconds": seconds, "error": error}


def verdict(result: dict, limit: float) -> str:
    if result["error"]:
        return "FAILED"
    return "ok" if result["seconds"] <= limit else f"over {limit:g} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lorakit.tools.notebook_times",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path,
                    help="notebooks to run (default: every solutions/*/*.ipynb)")
    ap.add_argument("--limit", type=float, default=LIMIT_S,
                    help=f"seconds one notebook may take (default {LIMIT_S:g})")
    ap.add_argument("--cell-timeout", type=int, default=600, help="seconds per cell")
    ap.add_argument("--json", metavar="PATH", help="also write the results to PATH")
    args = ap.parse_args(argv)
    paths = args.notebooks or default_notebooks()
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    results = []
    width = max(len(str(p)) for p in paths)
    for p in paths:
        r = run_notebook(p, args.cell_timeout)
        r["verdict"] = verdict(r, args.limit)
        results.append(r)
        print(f"{str(p):{width}s} {r['seconds']:7.1f} s  {r['verdict']}", flush=True)
        if r["error"]:
            print(f"    {r['error']}", flush=True)
    total = sum(r["seconds"] for r in results)
    bad = [r for r in results if r["verdict"] != "ok"]
    print(f"{'total':{width}s} {total:7.1f} s  "
          + (f"{len(bad)} of {len(results)} over the limit or failed" if bad else "all ok"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"limit_s": args.limit, "python": platform.python_version(),
                       "date": time.strftime("%Y-%m-%d"), "machine": _machine(),
                       "results": results, "total_s": total}, f, indent=1)
    return 1 if bad else 0


def _machine() -> str:
    """CPU model, core count and torch version: what the times depend on."""
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"


if __name__ == "__main__":
    raise SystemExit(main())
