"""python -m autograde.mutants [ASSIGNMENT ...] [--fast] [--json PATH] [--markdown PATH]

Exit status 0 when every mutant is killed, contract-equivalent or a known survivor and the
unmutated solutions pass every test cell; 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .report import markdown, summary
from .run import FAST_EVERY, SURVIVORS_FILE, TIMEOUT, label, new_survivors, run, update_survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograde.mutants",
                                     description="Mutation testing of the notebooks' checks.")
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                        help="e.g. 01_lora_linear or 01 (default: all)")
    parser.add_argument("--fast", action="store_true",
                        help=f"only the stable subset CI runs (about 1 mutant in {FAST_EVERY})")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the full report here")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="and as Markdown here")
    parser.add_argument("--jobs", type=int, default=1, help="assignments run side by side")
    parser.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds per mutant")
    parser.add_argument("--update-survivors", action="store_true",
                        help=f"rewrite {SURVIVORS_FILE.name} from this run (full runs only)")
    args = parser.parse_args(argv)
    if args.update_survivors and args.fast:
        parser.error("--update-survivors needs a full run, not --fast")
    report = run(args.assignments, fast=args.fast, jobs=args.jobs, timeout=args.timeout)
    if args.update_survivors:
        SURVIVORS_FILE.write_text(json.dumps(update_survivors(report), indent=1,
                                             ensure_ascii=False) + "\n")
        report = label(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(report))
    print(summary(report))
    new = new_survivors(report)
    for r in new:
        print(f"new survivor {r['id']}:\n    " + r["diff"].replace("\n", "\n    "))
    errors = any(a["errors"] for a in report["assignments"].values())
    return 1 if new or errors else 0


if __name__ == "__main__":
    sys.exit(main())
