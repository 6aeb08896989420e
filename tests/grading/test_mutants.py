"""autograde.mutants: each operator's mutants, stable ids, the equivalent and survivor lists, and
the checks against the fast subset of mutants (the full run is marked slow)."""
import ast
import textwrap

import pytest

from autograde.mutants import mutate
from autograde.mutants.operators import OPERATORS
from autograde.mutants.run import (
    EQUIVALENT,
    KNOWN,
    SURVIVED,
    cites_its_notebook,
    load_lists,
    new_survivors,
    plan,
    resolve,
    run,
)


def sources(operator: str, code: str) -> set[str]:
    """What one operator makes of ``code``, each normalised by ast.unparse."""
    code = textwrap.dedent(code)
    return {m.source for m in mutate(code, "cell", operators={operator: OPERATORS[operator]})}


def norm(*codes: str) -> set[str]:
    return {ast.unparse(ast.parse(textwrap.dedent(c))) for c in codes}


def method(body: str, name: str = "forward", args: str = "x") -> str:
    """``body`` as the method ``name`` of a class."""
    return f"class L:\n    def {name}(self, {args}):\n" + textwrap.indent(
        textwrap.dedent(body), " " * 8)


DORA = method("""\
    V = self.base_layer.weight + self.scaling * (self.lora_B @ self.lora_A)
    n = V.norm(dim=1).detach()
    y = x @ V.T * (self.m / n)
    if self.base_layer.bias is not None:
        y = y + self.base_layer.bias
    return y
""")


@pytest.mark.parametrize("operator, code, expected", [
    ("swap", "y = x @ W", ["y = W @ x"]),
    ("swap", "s = alpha / rank", ["s = rank / alpha"]),
    ("swap", "y = a + b * c", []),                               # + and * on tensors commute
    ("swap", "v = (n,) + (1,)", ["v = (1,) + (n,)"]),
    ("transpose", "y = x @ W.T", ["y = x @ W", "y = x.T @ W.T"]),
    ("drop_term", "y = a + b - c", ["y = a + b", "y = a - c", "y = b - c"]),
    ("drop_term", "t += e", ["t = e"]),
    ("duplicate_term", "y = a + b", ["y = a + b + b"]),
    ("dim", "n = V.norm(dim=1)", ["n = V.norm(dim=0)", "n = V.norm()",
                                  "n = V.norm(dim=1, keepdim=True)"]),
    ("dim", "n = V.sum(dim=-1, keepdim=True)", ["n = V.sum(dim=0, keepdim=True)",
                                               "n = V.sum(keepdim=True)",
                                               "n = V.sum(dim=-1, keepdim=False)"]),
    ("shape_index", "g = g.view(g.shape[0], g.shape[-1])",
     ["g = g.view(g.shape[-1], g.shape[-1])", "g = g.view(g.shape[0], g.shape[0])"]),
    ("init", "nn.init.zeros_(self.B)", ["nn.init.normal_(self.B)",
                                        "nn.init.kaiming_uniform_(self.B, a=5 ** 0.5)"]),
    ("init", "nn.init.orthogonal_(self.A)", [
        "nn.init.zeros_(self.A)", "nn.init.normal_(self.A)",
        "nn.init.kaiming_uniform_(self.A, a=5 ** 0.5)", "nn.init.orthogonal_(self.A, gain=2.0)"]),
    ("init", "B = nn.Parameter(torch.zeros(3, 4))", ["B = nn.Parameter(torch.randn(3, 4))"]),
    ("scaling", "self.scaling = alpha / rank", ["self.scaling = 1"]),
    ("scaling", "y = self.scaling * u", ["y = u", "y = u / self.scaling"]),
    ("drop_guard", "if rank < 1:\n    raise ValueError(rank)", ["if rank < 1:\n    pass"]),
    ("drop_guard", "for m in ms:\n    continue", ["for m in ms:\n    pass"]),
    ("drop_call", "super().__init__()\nnn.init.zeros_(w)\nself.base.requires_grad_(False)",
     ["super().__init__()\nnn.init.zeros_(w)\npass"]),
    ("compare", "ok = b is None", ["ok = b is not None"]),
    ("compare", "ok = r < 1", ["ok = r <= 1"]),
    ("boolean", "ok = a or b", ["ok = a", "ok = b", "ok = a and b"]),
    ("boolean", "ok = not c", ["ok = c"]),
    ("any_loop", "if any(n.endswith(t) for t in ts):\n    k += 1",
     ["for t in ts:\n    if n.endswith(t):\n        k += 1"]),
    ("constant", "g = torch.tensor(0.1)\nh = torch.tensor(0.0)\nk = 2",
     ["g = torch.tensor(0.0)\nh = torch.tensor(0.0)\nk = 2",
      "g = torch.tensor(0.1)\nh = torch.tensor(1.0)\nk = 2"]),
    ("clone", "m = P(r.clone())\nbuf(r.clone())", ["m = P(r)\nbuf(r)"]),
    ("clone", "m = P(r.clone())", []),                           # r used once: nothing shared
    ("clone", "w = self.w.clone()", ["w = self.w"]),
])
def test_operator(operator, code, expected):
    assert sources(operator, code) == norm(*expected)


@pytest.mark.parametrize("operator, body, expected", [
    ("detach", "return self.base_layer(x) + x @ self.A", [
        "return self.base_layer(x).detach() + x @ self.A",
        "return self.base_layer(x.detach()) + x @ self.A",
        "return self.base_layer(x) + (x @ self.A).detach()",
        "return self.base_layer(x) + x.detach() @ self.A"]),
    ("detach", "if x.shape[-1] != len(self.A):\n    raise ValueError(x.dim())\nreturn x",
     ["if x.shape[-1] != len(self.A):\n    raise ValueError(x.dim())\nreturn x.detach()"]),
    ("drop_detach", "n = V.norm(dim=1).detach()", ["n = V.norm(dim=1)"]),
    ("no_grad", "h = x @ self.A\nshape = (x.shape[0],) + (1,)", [
        "with torch.no_grad():\n    h = x @ self.A\nshape = (x.shape[0],) + (1,)"]),
    ("eval_skip", "return x", [
        "if not self.training:\n    return self.base_layer(x)\nreturn x",
        "if self.training:\n    return self.base_layer(x)\nreturn x"]),
    ("cache", "n = V.norm(dim=1)", ["n = self.__dict__.setdefault('_cached_n', V.norm(dim=1))"]),
    ("bias_dropped", "return self.base_layer(x)", ["return x @ self.base_layer.weight.T"]),
    ("dropout", "u = self.B(self.A(self.drop(x)))", [
        "u = self.B(self.A(x))", "u = self.B(self.drop(self.A(x)))",
        "u = self.drop(self.B(self.A(x)))",
        "u = self.B(self.A(self.drop(x) * (1 - getattr(self.drop, 'p', 0.0))))"]),
    ("dropout_on_base", "return self.base_layer(x) + self.B(self.drop(x))",
     ["return self.base_layer(self.drop(x)) + self.B(self.drop(x))"]),
])
def test_forward_operator(operator, body, expected):
    assert sources(operator, method(body)) == norm(*(method(e) for e in expected))


def test_forward_only_operators_leave_other_methods_alone():
    for operator in ("detach", "no_grad", "eval_skip", "cache", "drop_detach", "bias_dropped"):
        assert sources(operator, method("h = self.base_layer(x) @ self.A.detach()\nreturn h",
                                        name="__init__", args="base")) == set()


def test_no_grad_block_dropped():
    code = "def merge(layer):\n    with torch.no_grad():\n        layer.w += d\n    return layer"
    assert norm("def merge(layer):\n    layer.w += d\n    return layer") <= sources("no_grad", code)


def test_bias_moved_before_the_rescaling():
    want = DORA.replace("y = x @ V.T * (self.m / n)",
                        "y = (x @ V.T + self.base_layer.bias if self.base_layer.bias is not None "
                        "else x @ V.T) * (self.m / n)").replace(
        "y = y + self.base_layer.bias", "y = y")
    assert sources("bias_moved", DORA) == norm(want)


def test_inplace_writes_into_the_given_layer():
    code = "def merge(layer, p):\n    bias = layer.base.bias\n    w = layer.base.weight + d\n" \
           "    return bias + s, p + 1, q + 1"
    assert sources("inplace", code) == norm(
        code.replace("layer.base.weight + d", "layer.base.weight.add_(d)"),
        code.replace("bias + s", "bias.add_(s)"), code.replace("p + 1", "p.add_(1)"))


def test_ids_name_operator_scope_and_position():
    ids = [m.id for m in mutate(DORA, "dora", head="05/dora")]
    assert "05/dora/dim/L.forward:2:12/dim0" in ids
    assert "05/dora/eval_skip/L.forward:0:4/eval" in ids
    assert len(ids) == len(set(ids))


def test_ids_stable_when_lines_are_added_above():
    before = {m.id: m.diff for m in mutate(DORA, "dora")}
    above = "import math\n\n" + DORA.replace(
        "class L:\n", "class L:\n    def extra(self):\n        return math.pi * 2\n\n")
    after = {m.id: m.diff for m in mutate(above, "dora")}
    assert before.items() <= after.items()


def test_every_mutant_of_every_solution_compiles_and_differs():
    for assignment in resolve([]):
        p = plan(assignment)
        ids = [m.id for m in p.mutants]
        assert len(ids) == len(set(ids)), assignment
        originals = {c["index"]: ast.unparse(ast.parse(c["source"])) for c in p.job["probes"]}
        for m, job in zip(p.mutants, p.job["mutants"][1:], strict=True):
            compile(m.source, m.id, "exec")
            assert m.source != originals[job["index"]] and m.diff, m.id


def test_equivalent_and_survivor_lists_name_current_mutants():
    equivalent, survivors = load_lists()
    current = {m.id for a in resolve([]) for m in plan(a).mutants}
    assert not set(equivalent) & set(survivors), "a mutant is either equivalent or a gap"
    assert set(equivalent) <= current, set(equivalent) - current
    assert set(survivors) <= current, set(survivors) - current
    for entry in equivalent.values():
        assert cites_its_notebook(entry), f"{entry['id']}: contract quote not in its notebook"
    for mutant_id, entry in survivors.items():
        assert entry.get("breaks"), f"{mutant_id}: say which contract behaviour it breaks"


def _check(report):
    errors = {name: a["errors"] for name, a in report["assignments"].items() if a["errors"]}
    assert not errors, f"the unmutated solutions fail: {errors}"
    new = new_survivors(report)
    assert not new, "new surviving mutants (kill them with a check, or cite the contract in " \
        "autograde/mutants/equivalent.toml):\n" + "\n".join(f"{r['id']}\n{r['diff']}" for r in new)
    for a in report["assignments"].values():
        assert all(r["status"] in ("killed", EQUIVALENT, KNOWN, SURVIVED) for r in a["results"])


def test_fast_subset_has_no_new_survivors(request):
    """The quick check (`-m "not slow"`); the full run below is a superset of it, so when
    that one is selected too this one has nothing to add."""
    full = "test_every_mutant_is_killed_equivalent_or_known"
    if any(item.name == full for item in request.session.items):
        pytest.skip(f"{full} runs every mutant, this subset included")
    _check(run([], fast=True))


@pytest.mark.slow
def test_every_mutant_is_killed_equivalent_or_known():
    _check(run([]))
