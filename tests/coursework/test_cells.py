"""autograde.cells: cell kinds, the names a cell reads and binds, the probe cells of a notebook."""
import builtins
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograde.cells import cells, defined_names, free_names, probe_cells

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "solutions").glob("*/*.ipynb"))
BUILTINS = set(dir(builtins))


@pytest.mark.parametrize("source, free, defined", [
    ("x = x + 1", {"x"}, {"x"}),
    ("x = 1\ny = x", set(), {"x", "y"}),
    ("y = x\nx = 1", {"x"}, {"x", "y"}),
    ("total += 1", {"total"}, {"total"}),
    ("import os.path, numpy as np\nfrom torch import nn as n2, optim", set(),
     {"os", "np", "n2", "optim"}),
    ("for i, (a, b) in enumerate(xs):\n    print(i, a, b)", {"enumerate", "xs", "print"},
     {"i", "a", "b"}),
    ("with open(p) as f:\n    f.read()", {"open", "p"}, {"f"}),
    ("def f(a, b=c):\n    return a + g(b) + later\nlater = 1", {"c", "g"}, {"f", "later"}),
    ("f = lambda t: t * k", {"k"}, {"f"}),
    ("class A(Base):\n    n = 2\n    m = n * k\n    def go(self):\n        return n, self",
     {"Base", "k", "n"}, {"A"}),
    ("ys = [x * w for x in xs if x]\nprint(x)", {"w", "xs", "print", "x"}, {"ys"}),
    ("d = {k: v for k, v in items}", {"items"}, {"d"}),
    ("try:\n    pass\nexcept ValueError as err:\n    print(err)", {"ValueError", "print"},
     set()),
    ("a = 1\ndel a\nb = a", {"a"}, {"b"}),
    ("if (n := len(s)) > 2:\n    m = n", {"len", "s"}, {"n", "m"}),
    ("x: int = y", {"int", "y"}, {"x"}),
    ("def f():\n    global G\n    G = 1\n    return G + H", {"G", "H"}, {"f"}),
    ("def outer(a):\n    def inner():\n        return a + z\n    return inner", {"z"},
     {"outer"}),
    ("match v:\n    case [first, *rest]:\n        pass\n    case {'k': w, **more}:\n        pass",
     {"v"}, {"first", "rest", "w", "more"}),
])
def test_names(source, free, defined):
    assert free_names(source) == free
    assert defined_names(source) == defined


def test_ipython_syntax_becomes_python():
    """Magics become calls with string arguments: what a magic binds or reads is not seen."""
    source = "%time y = f(x)\n!ls {path}\nz = y"
    assert free_names(source) == {"get_ipython", "y"}
    assert defined_names(source) == {"z"}


def _nb(*cells_):
    return new_notebook(cells=list(cells_))


def _code(source, grade_id=None, **flags):
    cell = new_code_cell(source)
    if grade_id:
        cell.metadata["nbgrader"] = {"grade_id": grade_id, "locked": False, "solution": False,
                                     "grade": False, **flags}
    return cell


def test_kinds_and_sources():
    nb = _nb(new_markdown_cell("# title"), _code("import torch", "setup", locked=True),
             _code("%matplotlib inline\nx = 1"), _code("def f(): ...", "answer", solution=True),
             _code("assert f() is None", "test", grade=True, locked=True, points=1),
             _code("y = 2", "written", solution=True, grade=True, points=1))
    got = [(c.index, c.grade_id, c.kind) for c in cells(nb)]
    assert got == [(0, None, "markdown"), (1, "setup", "code"), (2, None, "code"),
                   (3, "answer", "answer"), (4, "test", "test"), (5, "written", "answer")]
    assert "get_ipython()" in cells(nb)[2].source and cells(nb)[0].source == "# title"


def test_probe_cells_closure():
    nb = _nb(_code("import torch\nfrom lib import checks", "setup", locked=True),
             _code("data = torch.arange(3)"),                   # needed through `helper`
             _code("helper = lambda: data + 1"),                # needed by the test
             _code("for _ in range(10**9): pass"),              # a slow demo nobody needs
             _code("def f(): return helper()", "answer", solution=True),
             _code("checks.run(f)\nseen = 1", "t1", grade=True, locked=True, points=1),
             _code("plot(seen)"),                               # reads a test's name: a demo
             _code("helper = None"),                            # rebinds after every reader
             _code("checks.run(f, seen)", "t2", grade=True, locked=True, points=1))
    assert [c.index for c in probe_cells(nb)] == [0, 1, 2, 4]


def test_probe_cells_latest_definition_wins():
    nb = _nb(_code("k = 1"), _code("k = 2"), _code("checks = None", "setup", locked=True),
             _code("print(k, checks)", "t", grade=True, locked=True, points=1))
    assert [c.index for c in probe_cells(nb)] == [1, 2]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.parent.name)
def test_probe_cells_define_what_graded_cells_read(path):
    nb = nbformat.read(path, as_version=4)
    probes = probe_cells(nb)
    defined = set().union(*(defined_names(c.source) for c in probes))
    graded = [c for c in cells(nb) if c.kind in ("answer", "test")]
    assert {c.index for c in graded if c.kind == "answer"} <= {c.index for c in probes}
    for cell in graded:
        missing = free_names(cell.source) - defined - BUILTINS
        assert not missing, f"{path.parent.name} {cell.grade_id} reads {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.parent.name)
def test_no_probe_cell_rebinds_what_an_earlier_test_reads(path):
    """Graders run every probe cell, then the tests: a test must see what it saw in order."""
    nb = nbformat.read(path, as_version=4)
    probes = probe_cells(nb)
    for test in (c for c in cells(nb) if c.kind == "test"):
        later = set().union(*(defined_names(c.source) for c in probes if c.index > test.index))
        earlier = set().union(*(defined_names(c.source) for c in probes if c.index < test.index))
        rebound = free_names(test.source) & later & earlier
        assert not rebound, f"{path.parent.name} {test.grade_id}: {rebound} rebound after it"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.parent.name)
def test_kinds_agree_with_the_pipeline(path):
    from autograde.config import is_test_cell
    nb = nbformat.read(path, as_version=4)
    assert [c.kind == "test" for c in cells(nb)] == [is_test_cell(c) for c in nb.cells]
