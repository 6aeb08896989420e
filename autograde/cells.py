"""What each cell of an nbgrader source notebook is, and which cells a grader must run.

A grader that judges test cells does not need the whole notebook: experiments, demos and plots
only cost time. :func:`probe_cells` keeps the cells that define what the answer and test cells
use (a def-use closure over top-level names, walking backwards), plus every answer cell.

Names are found statically: :func:`free_names` lists what a cell reads before (or without)
binding it, :func:`defined_names` what it binds at top level. Function bodies count as read
when the cell defines them (they run later, so a name they read may be bound anywhere in the
cell); names bound through ``global`` inside a function, ``globals()[...]``, ``exec``,
``from m import *`` or inside a magic's string (``%time y = f(x)``) are not seen.
"""
from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from dataclasses import dataclass

ANSWER, TEST, CODE, MARKDOWN = "answer", "test", "code", "markdown"


@dataclass(frozen=True)
class Cell:
    index: int            # position in nb.cells
    grade_id: str | None  # nbgrader grade_id
    kind: str             # "answer", "test", "code" or "markdown" (raw cells count as markdown)
    source: str           # plain Python for code cells (IPython syntax transformed), else the text


def kind(cell) -> str:
    """``answer``: an nbgrader solution code cell; ``test``: an autograded test code cell (graded,
    not a solution, as ``autograde.config.is_test_cell``); ``code``: any other code cell."""
    if cell.get("cell_type") != "code":
        return MARKDOWN
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if meta.get("solution"):
        return ANSWER
    return TEST if meta.get("grade") else CODE


@functools.lru_cache(maxsize=1024)
def to_python(source: str) -> str:
    """IPython cell syntax (``%magic``, ``!shell``, ``x?``) as the Python IPython would run."""
    from IPython.core.inputtransformer2 import TransformerManager
    return TransformerManager().transform_cell(source)


def cells(nb) -> list[Cell]:
    """Every cell of ``nb`` (an nbformat notebook), classified."""
    out = []
    for index, cell in enumerate(nb.cells):
        k = kind(cell)
        source = to_python(cell.source) if k != MARKDOWN else cell.source
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        out.append(Cell(index=index, grade_id=grade_id, kind=k, source=source))
    return out


def free_names(source: str) -> set[str]:
    """Names the code reads before (or without) binding them at top level, builtins included."""
    return _analyse(source)[0]


def defined_names(source: str) -> set[str]:
    """Names the code binds at top level: assignments, imports, def, class, for and with
    targets, walrus, match captures (names it deletes, or binds only in ``except ... as``, are
    not bound after it)."""
    return _analyse(source)[1]


def probe_cells(nb) -> list[Cell]:
    """The code cells that define what the answer and test cells read, transitively, plus all
    answer cells, in notebook order.

    Walking backwards, a code cell is kept when it binds a name that a kept cell after it (or a
    test cell) still needs; a kept cell's own bindings then satisfy that need, and its free
    names become needs. Test cells are not returned (the grader runs them after these) and
    their bindings satisfy nothing: a failing test cell binds nothing.
    """
    wanted: set[str] = set()
    kept = []
    for cell in reversed(cells(nb)):
        if cell.kind == MARKDOWN:
            continue
        binds = defined_names(cell.source)
        if cell.kind == CODE and not binds & wanted:
            continue
        if cell.kind != TEST:
            kept.append(cell)
            wanted -= binds
        wanted |= free_names(cell.source)
    return kept[::-1]


# -- the analysis ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _analyse(source: str) -> tuple[frozenset, frozenset]:
    walker = _Ordered(bound=set())
    for stmt in ast.parse(to_python(source)).body:
        walker.visit(stmt)
    bound = walker.bound
    return frozenset(walker.free | (walker.deferred - bound)), frozenset(bound)


class _Ordered(ast.NodeVisitor):
    """Walks module or class code in execution order: a name read while unbound is free.

    Function and lambda bodies run later: what they read goes to ``deferred`` and is checked
    against the cell's final bindings. Class bodies and comprehensions get their own scope,
    seeded with what is bound around them; their bindings stay inside.
    """

    def __init__(self, bound: set[str], free: set[str] | None = None,
                 deferred: set[str] | None = None) -> None:
        self.bound = bound
        self.free = set() if free is None else free
        self.deferred = set() if deferred is None else deferred

    def inner(self) -> _Ordered:
        return _Ordered(set(self.bound), self.free, self.deferred)

    def read(self, name: str) -> None:
        if name not in self.bound:
            self.free.add(name)

    def visit_all(self, nodes: Iterable[ast.AST | None]) -> None:
        for node in nodes:
            if node is not None:
                self.visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.read(node.id)
        elif isinstance(node.ctx, ast.Store):
            self.bound.add(node.id)
        else:
            self.bound.discard(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        self.visit_all(node.targets)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit_all([node.annotation, node.value, node.target])

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.read(node.target.id)
        self.visit(node.value)
        self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit_all([node.iter, node.target, *node.body, *node.orelse])

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit_all([item.context_expr, item.optional_vars])
        self.visit_all(node.body)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self.visit_all([node.type])
        if node.name:
            self.bound.add(node.name)
        self.visit_all(node.body)
        if node.name:
            self.bound.discard(node.name)   # Python deletes it when the handler ends

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self.bound.add(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.visit_all(node.decorator_list)
        self.visit_all([*node.args.defaults, *node.args.kw_defaults])
        self.visit_all(_annotations(node))
        self.deferred |= _scope_reads(node.body, _params(node.args), frozenset())
        self.bound.add(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit_all([*node.args.defaults, *node.args.kw_defaults])
        self.deferred |= _scope_reads([node.body], _params(node.args), frozenset())

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.visit_all([*node.decorator_list, *node.bases, *node.keywords])
        self.inner().visit_all(node.body)
        self.bound.add(node.name)

    def _comprehension(self, node, results: list[ast.AST]) -> None:
        first, *rest = node.generators
        self.visit(first.iter)
        scope = self.inner()
        scope.visit_all([first.target, *first.ifs])
        for gen in rest:
            scope.visit_all([gen.iter, gen.target, *gen.ifs])
        scope.visit_all(results)

    def visit_ListComp(self, node):
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node):
        self._comprehension(node, [node.key, node.value])

    def visit_MatchAs(self, node: ast.MatchAs | ast.MatchStar) -> None:
        self.generic_visit(node)
        if node.name:
            self.bound.add(node.name)

    visit_MatchStar = visit_MatchAs

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self.bound.add(node.rest)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _params(args: ast.arguments) -> set[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return {a.arg for a in every if a is not None}


def _annotations(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST | None]:
    args = node.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return [a.annotation for a in every if a is not None] + [node.returns]


def _outer_parts(node: ast.AST) -> list[ast.AST]:
    """The parts of a nested scope that its enclosing scope evaluates (decorators, defaults,
    annotations, bases)."""
    if isinstance(node, ast.ClassDef):
        return [*node.decorator_list, *node.bases, *node.keywords]
    parts = [*node.args.defaults, *node.args.kw_defaults]
    if not isinstance(node, ast.Lambda):
        parts += [*node.decorator_list, *(a for a in _annotations(node) if a is not None)]
    return parts


def _in_scope(nodes: Iterable[ast.AST]):
    """Every node of one scope, and each nested scope's node (not its body)."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _SCOPES):
            stack.extend(_outer_parts(node))
        else:
            stack.extend(ast.iter_child_nodes(node))


def _bound_in(nodes: list[ast.AST]) -> set[str]:
    """Names one function scope binds (any binding anywhere makes a name local), minus
    its ``global`` and ``nonlocal`` names."""
    bound, declared = set(), set()
    for node in _in_scope(nodes):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {a.asname or a.name.split(".")[0] for a in node.names if a.name != "*"}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                               ast.ExceptHandler)) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared |= set(node.names)
    return bound - declared


def _scope_reads(body: list[ast.AST], params: set[str], enclosing: frozenset) -> set[str]:
    """Names a function (or lambda) body reads from the module: neither its own locals nor
    those of the functions around it. (A class nested in a function counts as one more scope
    around its methods: a slight over-approximation of what they can see.)"""
    local = frozenset(params | _bound_in(body)) | enclosing
    reads = set()
    for node in _in_scope(body):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local:
            reads.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner = node.body if isinstance(node.body, list) else [node.body]
            reads |= _scope_reads(inner, _params(node.args), local)
        elif isinstance(node, ast.ClassDef):
            reads |= _scope_reads(node.body, set(), local)
    return reads
