"""Sample submissions: small Python files whose sections fill a release notebook's cells.

Format (one file per submission)::

    # sample: what this submission is
    # expect: full | partial | zero
    # fails: check name, check name        (optional: the lorakit checks it must fail)
    # %% [grade_id]          source for the solution cell with that grade_id
    # %% [delete:grade_id]   delete that cell from the submission
    # %% [edit:grade_id]     replace the source of a locked (test) cell
    # %% [after:grade_id]    a new code cell of the student's own right after that cell
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

SECTION = re.compile(r"^# %% \[(?:(delete|edit|after):)?([\w-]+)\]\s*$")


@dataclass
class Sample:
    name: str
    description: str
    expect: str
    fails: list[str] = field(default_factory=list)
    cells: dict[str, str] = field(default_factory=dict)   # grade_id -> new source
    edits: dict[str, str] = field(default_factory=dict)   # locked grade_id -> new source
    deletes: list[str] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)  # (after grade_id, source)


def load_sample(path: str | Path) -> Sample:
    path = Path(path)
    header: dict[str, str] = {}
    sample = Sample(name=path.stem, description="", expect="")
    target, lines = None, []

    def flush():
        if target is None:
            return
        kind, grade_id = target
        text = "\n".join(lines).strip("\n") + "\n"
        if kind == "delete":
            sample.deletes.append(grade_id)
        elif kind == "edit":
            sample.edits[grade_id] = text
        elif kind == "after":
            sample.extra.append((grade_id, text))
        else:
            sample.cells[grade_id] = text

    for line in path.read_text().splitlines():
        m = SECTION.match(line)
        if m:
            flush()
            target, lines = (m.group(1), m.group(2)), []
        elif target is None:
            key, _, value = line.lstrip("# ").partition(":")
            header[key.strip()] = value.strip()
        else:
            lines.append(line)
    flush()
    sample.description = header.get("sample", "")
    sample.expect = header.get("expect", "")
    if sample.expect not in ("full", "partial", "zero"):
        raise ValueError(f"{path}: '# expect:' must be full, partial or zero, got {sample.expect!r}")
    sample.fails = [f.strip() for f in header.get("fails", "").split(",") if f.strip()]
    return sample


def load_samples(folder: str | Path) -> list[Sample]:
    return [load_sample(p) for p in sorted(Path(folder).glob("*.py"))]


def build_submission(release_nb: str | Path, sample: Sample) -> nbformat.NotebookNode:
    """The release notebook with the sample's sections filled in (the student's submission)."""
    nb = nbformat.read(str(release_nb), as_version=4)
    known = set()
    kept = []
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        known.add(grade_id)
        if grade_id in sample.deletes:
            continue
        if grade_id in sample.cells:
            cell.source = sample.cells[grade_id]
        if grade_id in sample.edits:
            cell.source = sample.edits[grade_id]
        kept.append(cell)
        kept += [nbformat.v4.new_code_cell(text) for after, text in sample.extra
                 if after == grade_id]
    missing = (set(sample.cells) | set(sample.edits) | set(sample.deletes)
               | {after for after, _ in sample.extra}) - known
    if missing:
        raise ValueError(f"sample {sample.name} names cells the notebook lacks: {sorted(missing)}")
    nb.cells = kept
    return nb
