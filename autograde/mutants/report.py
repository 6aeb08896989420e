"""The mutation report as Markdown (``report.md``) and as a one-screen summary."""
from __future__ import annotations

from .run import EQUIVALENT, KILLED, KNOWN, SURVIVED, load_lists


def summary(report: dict) -> str:
    """One line per assignment: mutants, killed, equivalent, known and new survivors."""
    lines = [(f"{'assignment':26s} {'mutants':>7s} {'killed':>6s} {'equiv':>5s} {'known':>5s} "
              f"{'new':>4s} {'kill rate':>9s}")]
    for name, a in report["assignments"].items():
        lines.append(f"{name:26s} {a['mutants']:7d} {a[KILLED]:6d} {a[EQUIVALENT]:5d} "
                     f"{a[KNOWN]:5d} {a[SURVIVED]:4d} {a['kill_rate']:9.1%}"
                     + ("   ERROR: " + "; ".join(f"{k}: {v}" for k, v in a["errors"].items())
                        if a["errors"] else ""))
    return "\n".join(lines)


def _code(diff: str) -> str:
    return "<br>".join(f"`{line}`" for line in diff.replace("|", "\\|").splitlines())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: dict) -> str:
    equivalent, survivors = load_lists()
    subset = f" (fast subset: ids hashing to 0 mod {report['fast_every']})" if report["fast"] \
        else ""
    out = ["# Mutation report", "",
           (f"Generated {report['generated']} by `python -m autograde.mutants`{subset}, with the "
            f"checks and solutions at {report['revision']}. "
            "Kill rate = killed / (mutants - equivalent). "
            "See autograde/README.md, \"Mutation testing\"."), "",
           ("| assignment | mutants | killed | equivalent | known survivors | new survivors "
            "| kill rate |"), "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, a in report["assignments"].items():
        out.append(f"| {name} | {a['mutants']} | {a[KILLED]} | {a[EQUIVALENT]} | {a[KNOWN]} "
                   f"| {a[SURVIVED]} | {a['kill_rate']:.1%} |")
    for name, a in report["assignments"].items():
        out += ["", f"## {name}", "", f"Source `{a['notebook']}`; probe cells: "
                + ", ".join(f"`{c}`" for c in a["probe_cells"]) + "."]
        if a["errors"]:
            out += ["", "**Errors** (the unmutated solution):", ""] + [
                f"- `{k}`: {_cell(v)}" for k, v in a["errors"].items()]
        for title, ids in (("Listed as equivalent but killed (remove from equivalent.toml)",
                            a["equivalent_but_killed"]),
                           ("Known survivors now killed (remove from survivors.json)",
                            a["known_but_killed"]),
                           ("Listed but no longer generated", a["listed_but_unknown"])):
            if ids:
                out += ["", f"**{title}:** " + ", ".join(f"`{i}`" for i in ids)]
        alive = [r for r in a["results"] if r["status"] in (SURVIVED, KNOWN)]
        if alive:
            out += ["", "### Survivors", "", "| mutant | change | status | breaks |",
                    "| --- | --- | --- | --- |"]
            out += [f"| `{r['id']}` | {_code(r['diff'])} | "
                    f"{'known' if r['status'] == KNOWN else '**new**'} | "
                    f"{_cell(survivors.get(r['id'], {}).get('breaks', ''))} |" for r in alive]
        same = [r for r in a["results"] if r["status"] == EQUIVALENT]
        if same:
            out += ["", "### Contract-equivalent", "", "| mutant | change | allowed by |",
                    "| --- | --- | --- |"]
            out += [f"| `{r['id']}` | {_code(r['diff'])} | "
                    f"\"{_cell(equivalent[r['id']]['contract'])}\" |" for r in same]
        out += ["", "### Which test cell killed what", "",
                "| test cell | mutants killed | concept keys of its failures |",
                "| --- | ---: | --- |"] + [
            f"| `{gid}` | {k['mutants']} | {', '.join(f'`{key}`' for key in sorted(k['keys']))} |"
            for gid, k in a["killed_by"].items()]
        out += ["", "<details><summary>Every killed mutant</summary>", "",
                "| mutant | change | killed by (first message) |", "| --- | --- | --- |"]
        for r in a["results"]:
            if r["status"] == KILLED:
                first = next(iter(r["killers"].items()))
                out.append(f"| `{r['id']}` | {_code(r['diff'])} | "
                           f"{', '.join(f'`{k}`' for k in r['killers'])}: {_cell(first[1])} |")
        out += ["", "</details>"]
    return "\n".join(out) + "\n"
