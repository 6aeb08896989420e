"""Mutation testing of the checks: mutants of each reference solution, and what kills them.

    python -m autograde.mutants [ASSIGNMENT ...] [--fast] [--json PATH] [--markdown PATH]

A mutant is the reference solution with one answer cell changed by one operator
(``autograde/mutants/operators.py``). Each mutant runs the notebook's probe cells
(:func:`autograde.cells.probe_cells`, with the mutated cell in place of the original), then
every test cell, hidden tests included, in its own process (``worker.py``); a test cell that
fails kills it. ``run.py`` runs them and reports; ``equivalent.toml`` lists the survivors the
contract allows, ``survivors.json`` the known gaps in the checks. See autograde/README.md,
"Mutation testing".

This module makes the mutants; it imports nothing heavy (no torch).
"""
from __future__ import annotations

import ast
import copy
import difflib
from collections import Counter
from dataclasses import dataclass

from .operators import OPERATORS, Context

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class Mutant:
    id: str          # <head>/<operator>/<scope>:<line in scope>:<col>[/<label>][/<n>]
    grade_id: str    # the answer cell it changes
    operator: str
    line: int        # of the changed node, in the cell (1-based)
    col: int
    source: str      # the whole mutated cell
    diff: str        # the changed lines: "- before" / "+ after"


def mutate(source: str, grade_id: str, head: str | None = None,
           operators: dict = OPERATORS) -> list[Mutant]:
    """Every mutant of one answer cell, each with a different source, in a stable order.

    Ids start with ``head`` (default: the grade_id; ``run.py`` puts the notebook's number
    before it, since two notebooks have a ``merge_conditioned`` cell). ``operators`` (default:
    all) picks some, for tests.

    Ids name the operator and where it applied, relative to the innermost ``def`` or ``class``
    around it: lines added above that scope (or in other cells) do not change them. When one
    place yields the same id twice (nested operations starting at one column), the later ones
    get ``/2``, ``/3``, ... in tree order.
    """
    tree = ast.parse(source)
    ctx = Context(tree)
    original = ast.unparse(tree)
    seen, taken, out = {original}, Counter(), []
    for node in _preorder(tree):
        for name, operator in operators.items():
            for variant in operator(node, ctx):
                text = _apply(tree, variant.changes)
                if text in seen:
                    continue
                seen.add(text)
                at = _located(variant.at or next(iter(variant.changes)), ctx)
                base = f"{head or grade_id}/{name}/{_where(at, ctx)}" + (
                    f"/{variant.label}" if variant.label else "")
                taken[base] += 1
                mutant_id = base if taken[base] == 1 else f"{base}/{taken[base]}"
                out.append(Mutant(mutant_id, grade_id, name, at.lineno, at.col_offset,
                                  text, _diff(original, text)))
    return out


def _preorder(node: ast.AST):
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _preorder(child)


def _located(node: ast.AST, ctx: Context) -> ast.AST:
    """``node``, or its nearest ancestor that has a position (``withitem`` has none)."""
    return next(n for n in (node, *ctx.ancestors(node)) if hasattr(n, "lineno"))


def _where(node: ast.AST, ctx: Context) -> str:
    """``Class.method:line:col``, the line counted from the scope's ``def`` / ``class`` line;
    ``cell:line:col`` outside any scope."""
    scopes = [n for n in (node, *ctx.ancestors(node)) if isinstance(n, _SCOPES)]
    if not scopes:
        return f"cell:{node.lineno}:{node.col_offset}"
    name = ".".join(s.name for s in reversed(scopes))
    return f"{name}:{node.lineno - scopes[0].lineno}:{node.col_offset}"


class _Substitute(ast.NodeTransformer):
    """Replaces nodes by identity; a replacement is visited too (it may hold other changes)."""

    def __init__(self, replacements: dict[int, ast.AST | list]) -> None:
        self.replacements = replacements

    def visit(self, node):
        new = self.replacements.pop(id(node), None)
        if new is None:
            return self.generic_visit(node)
        if not isinstance(new, list):
            return self.visit(new)
        out = []
        for stmt in new:
            result = self.visit(stmt)
            out.extend(result if isinstance(result, list) else [result])
        return out


def _apply(tree: ast.AST, changes: dict) -> str:
    """The source of ``tree`` with ``changes`` made to a copy (the tree itself is unchanged).

    The copy and the replacements share one deepcopy memo, so an original node used inside a
    replacement is the very node of the copy, and a change inside it still applies.
    """
    memo: dict = {}
    mutated = copy.deepcopy(tree, memo)
    replacements = {id(memo[id(old)]): copy.deepcopy(new, memo) for old, new in changes.items()}
    return ast.unparse(ast.fix_missing_locations(_Substitute(replacements).visit(mutated)))


def _diff(before: str, after: str) -> str:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), n=0, lineterm="")
    return "\n".join(f"{line[0]} {line[1:].strip()}" for line in lines
                     if line[:1] in "+-" and not line.startswith(("---", "+++")))
