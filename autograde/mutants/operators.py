"""The mutation operators: each one a small function from an AST node to the variants it makes.

An operator is called on every node of an answer cell's syntax tree and yields
:class:`Variant`s: which nodes to replace and by what (one node, several, or a statement by a
list of statements), a short label when one node has several variants, and the node whose
position names the mutant. The operators mirror the bugs that real students write in these
layers (issue 11): swapped or transposed factors, dropped terms, cut gradients, eval-mode
branches, state kept across calls, wrong axes, other inits, lost scaling, a moved bias, writes
into the given layer, missing validation.

Mutants are made from the reference solutions only, so the operators may assume their style
(``forward`` methods, ``self.base_layer``, ``nn.init`` calls); :func:`mutate` in
``autograde.mutants`` applies them. No operator wraps code in ``try: ... except: return 0``:
around a correct body that never raises, that is equivalent by construction.
"""
from __future__ import annotations

import ast
import builtins
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

Change = dict  # {original node: replacement node, or a list of statements}


@dataclass
class Variant:
    changes: Change
    label: str = ""
    at: ast.AST | None = None       # the node that names the mutant (default: the first changed)


@dataclass
class Context:
    """Parent links of one tree, and what operators ask about a node's surroundings."""
    tree: ast.AST
    parent: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parent[child] = node

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        while node in self.parent:
            node = self.parent[node]
            yield node

    def function(self, node: ast.AST) -> ast.FunctionDef | None:
        """The innermost function around ``node`` (``node`` itself if it is one)."""
        for n in (node, *self.ancestors(node)):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return n
        return None

    def in_forward(self, node: ast.AST) -> bool:
        fn = self.function(node)
        return fn is not None and fn.name == "forward"

    def inputs(self, fn: ast.FunctionDef) -> list[str]:
        """The parameters of ``fn`` that carry data (``self`` left out of methods)."""
        names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        return names[1:] if isinstance(self.parent.get(fn), ast.ClassDef) else names

    def inside(self, node: ast.AST, kinds: tuple) -> bool:
        return any(isinstance(n, kinds) for n in self.ancestors(node))


Operator = Callable[[ast.AST, Context], Iterator[Variant]]


# -- small builders ---------------------------------------------------------------------------

def _expr(text: str) -> ast.expr:
    return ast.parse(text, mode="eval").body


def _stmt(text: str) -> ast.stmt:
    return ast.parse(text).body[0]


def _method(receiver: ast.expr, name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Attribute(receiver, name, ast.Load()), list(args), [])


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a chain of attributes on a name, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _int(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int(node.operand)
        return None if inner is None else -inner
    return None


def _is_sequence(node: ast.AST) -> bool:
    """A tuple or list expression (or a sum/product of one): ``+`` on these does not commute."""
    if isinstance(node, (ast.Tuple, ast.List)):
        return True
    return isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)) \
        and (_is_sequence(node.left) or _is_sequence(node.right))


def _is_transposed(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in ("T", "mT") or \
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and node.func.attr == "t" and not node.args


def _state_aliases(fn: ast.FunctionDef, attrs=("weight", "bias")) -> set[str]:
    """Names bound in ``fn`` to a layer's ``.weight`` or ``.bias`` (directly or by a choice)."""
    def is_state(v):
        return isinstance(v, ast.Attribute) and v.attr in attrs or \
            isinstance(v, ast.IfExp) and (is_state(v.body) or is_state(v.orelse))

    names = set()
    for node in ast.walk(fn):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        pairs = zip(target.elts, value.elts, strict=False) \
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) else [(target, value)]
        names |= {t.id for t, v in pairs if isinstance(t, ast.Name) and is_state(v)}
    return names


# -- the operators ----------------------------------------------------------------------------

def swap(node, ctx):
    """``a @ b`` -> ``b @ a``; the same for ``-`` and ``/`` (so ``alpha / rank`` -> ``rank /
    alpha``) and for ``+`` on tuples. Tensor ``+`` and ``*`` commute exactly: not mutated."""
    if not isinstance(node, ast.BinOp):
        return
    if isinstance(node.op, (ast.MatMult, ast.Sub, ast.Div)) or \
            isinstance(node.op, ast.Add) and (_is_sequence(node.left) or _is_sequence(node.right)):
        yield Variant({node: ast.BinOp(node.right, node.op, node.left)})


def transpose(node, ctx):
    """A transpose removed (``W.T`` -> ``W``), or added to a matmul operand (``x @ W.T`` ->
    ``x.T @ W.T``)."""
    if _is_transposed(node):
        yield Variant({node: node.value if isinstance(node, ast.Attribute) else node.func.value},
                      "drop")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        for side in ("left", "right"):
            operand = getattr(node, side)
            if not _is_transposed(operand):
                yield Variant({operand: ast.Attribute(operand, "T", ast.Load())}, side, at=node)


def drop_term(node, ctx):
    """A term of a sum dropped: ``a + b`` -> ``a`` or ``b``, ``a - b`` -> ``a``, ``t += e`` ->
    ``t = e``."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        yield Variant({node: node.left}, "left")
        yield Variant({node: node.right}, "right")
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub):
        yield Variant({node: node.left}, "left")
    elif isinstance(node, ast.AugAssign) and isinstance(node.op, (ast.Add, ast.Sub)):
        yield Variant({node: ast.Assign([node.target], node.value)})


def duplicate_term(node, ctx):
    """The added term counted twice: ``a + b`` -> ``a + b + b`` (numbers and tensors only)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and not _is_sequence(node):
        yield Variant({node: ast.BinOp(node, ast.Add(), node.right)})


_NOT_TENSORS = {"dim", "size", "numel", "item", "detach", "tolist", "requires_grad_"}


def detach(node, ctx):
    """``.detach()`` on a value that ``forward`` computes with: an input, a call's result, a
    matrix product (no gradient flows through it any more)."""
    if not ctx.in_forward(node) or ctx.inside(node, (ast.Raise,)):
        return
    fn, parent = ctx.function(node), ctx.parent.get(node)
    if isinstance(node, ast.Name):
        wanted = isinstance(node.ctx, ast.Load) and node.id in ctx.inputs(fn)
    elif isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        wanted = not (isinstance(node.func, ast.Name) and hasattr(builtins, name)) \
            and name not in _NOT_TENSORS
    else:
        wanted = isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult)
    used_as_value = isinstance(parent, (ast.BinOp, ast.Assign, ast.Return, ast.IfExp,
                                        ast.keyword)) \
        or isinstance(parent, ast.Call) and node in parent.args
    if wanted and used_as_value:
        yield Variant({node: _method(node, "detach")})


def _shape_math(node: ast.AST) -> bool:
    """Arithmetic on sequences or on sizes (``t.shape``, ``t.dim()``, ``t.size()``)."""
    return _is_sequence(node) or any(
        isinstance(n, ast.Attribute) and n.attr in ("shape", "dim", "size", "ndim")
        for n in ast.walk(node))


def _computes(stmt: ast.stmt) -> bool:
    """Whether a statement computes something autograd could record: tensor arithmetic or a
    call (builtins, size queries, ``raise`` and a final ``.detach()`` aside)."""
    value = getattr(stmt, "value", None)
    if isinstance(value, ast.Call) and getattr(value.func, "attr", "") == "detach":
        return False
    raised = {n for r in ast.walk(stmt) if isinstance(r, ast.Raise) for n in ast.walk(r)}
    for n in ast.walk(stmt):
        if n in raised:
            continue
        if isinstance(n, ast.BinOp) and not _shape_math(n):
            return True
        if isinstance(n, ast.Call) and not (isinstance(n.func, ast.Name)
                                            and hasattr(builtins, n.func.id)) \
                and getattr(n.func, "attr", "") not in _NOT_TENSORS:
            return True
    return False


def no_grad(node, ctx):
    """A computing statement of ``forward`` run under ``torch.no_grad()`` ("wrap"), or a
    ``with torch.no_grad():`` block run with autograd on ("drop")."""
    if isinstance(node, ast.With) and any(_dotted(i.context_expr.func) == "torch.no_grad"
                                          for i in node.items
                                          if isinstance(i.context_expr, ast.Call)):
        yield Variant({node: node.body}, "drop")
    elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Return, ast.Expr, ast.If)) \
            and ctx.in_forward(node) and not ctx.inside(node, (ast.With,)) and _computes(node):
        wrapped = ast.With([ast.withitem(_expr("torch.no_grad()"))], [node])
        yield Variant({node: wrapped}, "wrap")


def drop_detach(node, ctx):
    """A ``.detach()`` of ``forward`` removed: gradients flow where the contract says they do
    not (DoRA's row norm)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "detach" and not node.args and ctx.in_forward(node):
        yield Variant({node: node.func.value})


def eval_skip(node, ctx):
    """``forward`` returns the base layer alone in eval mode ("eval"), or in training mode
    ("train"): ``if not self.training: return self.base_layer(x)`` first."""
    if not (isinstance(node, ast.FunctionDef) and node.name == "forward" and ctx.inputs(node)):
        return
    me, x = node.args.args[0].arg, ctx.inputs(node)[0]
    for label, test in (("eval", f"not {me}.training"), ("train", f"{me}.training")):
        guard = _stmt(f"if {test}:\n    return {me}.base_layer({x})")
        yield Variant({node.body[0]: [guard, node.body[0]]}, label, at=node)


def cache(node, ctx):
    """A value of ``forward`` computed on the first call and reused ever after:
    ``v = e`` -> ``v = self.__dict__.setdefault('_cached_v', e)``."""
    if isinstance(node, ast.Assign) and ctx.in_forward(node) and len(node.targets) == 1 \
            and isinstance(node.targets[0], ast.Name):
        me = ctx.function(node).args.args[0].arg
        key = ast.Constant(f"_cached_{node.targets[0].id}")
        kept = _method(_expr(f"{me}.__dict__"), "setdefault", key, node.value)
        yield Variant({node.value: kept})


def dim(node, ctx):
    """A reduction over another axis (``dim=1`` -> ``dim=0``), over everything (``dim``
    dropped), or keeping its axis (``keepdim`` toggled or added)."""
    if not isinstance(node, ast.Call):
        return
    axis = next((k for k in node.keywords if k.arg in ("dim", "axis")), None)
    keep = next((k for k in node.keywords if k.arg == "keepdim"), None)
    value = None if axis is None else _int(axis.value)
    if value is None:
        return
    other = 0 if value != 0 else 1
    yield Variant({axis.value: ast.Constant(other)}, f"dim{other}", at=node)
    dropped = ast.Call(node.func, node.args, [k for k in node.keywords if k is not axis])
    yield Variant({node: dropped}, "nodim")
    if keep is None:
        flagged = ast.Call(node.func, node.args, node.keywords + [ast.keyword("keepdim",
                                                                             ast.Constant(True))])
        yield Variant({node: flagged}, "keepdim")
    elif isinstance(keep.value, ast.Constant):
        yield Variant({keep.value: ast.Constant(not keep.value.value)}, "keepdim", at=node)


def shape_index(node, ctx):
    """Another axis read from a shape: ``t.shape[0]`` -> ``t.shape[-1]``, others -> 0."""
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
            and node.value.attr == "shape" and _int(node.slice) is not None:
        other = -1 if _int(node.slice) == 0 else 0
        yield Variant({node.slice: _expr(str(other))})


_INITS = {
    "zeros_": ("normal_", "kaiming_uniform_"),
    "ones_": ("zeros_", "normal_"),
    "normal_": ("zeros_", "kaiming_uniform_"),
    "kaiming_uniform_": ("zeros_", "normal_", "orthogonal_"),
    "kaiming_normal_": ("zeros_", "kaiming_uniform_"),
    "xavier_uniform_": ("zeros_", "kaiming_uniform_"),
    "xavier_normal_": ("zeros_", "kaiming_uniform_"),
    "orthogonal_": ("zeros_", "normal_", "kaiming_uniform_"),
}
_FACTORIES = {"zeros": ("randn",), "zeros_like": ("randn_like", "ones_like"),
              "ones": ("zeros",), "ones_like": ("zeros_like",), "randn": ("zeros",),
              "randn_like": ("zeros_like",)}


def init(node, ctx):
    """Another initialisation: ``nn.init.zeros_(t)`` -> ``normal_`` or ``kaiming_uniform_``,
    Kaiming -> zeros / normal / orthogonal, orthogonal rows of norm 2 ("gain"),
    ``torch.zeros(...)`` -> ``torch.randn(...)``, ..."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return
    name, owner = node.func.attr, _dotted(node.func.value)
    if owner.split(".")[-1] == "init" and name in _INITS and node.args:
        for other in _INITS[name]:
            extra = [ast.keyword("a", _expr("5 ** 0.5"))] if other == "kaiming_uniform_" else []
            call = ast.Call(ast.Attribute(node.func.value, other, ast.Load()), node.args[:1], extra)
            yield Variant({node: call}, other)
        if name == "orthogonal_":   # orthogonal rows, but not of norm 1
            yield Variant({node: ast.Call(node.func, node.args[:1],
                                          [ast.keyword("gain", ast.Constant(2.0))])}, "gain")
    elif owner == "torch" and name in _FACTORIES:
        for other in _FACTORIES[name]:
            call = ast.Call(ast.Attribute(node.func.value, other, ast.Load()), node.args,
                            node.keywords)
            yield Variant({node: call}, other)


def _is_scaling(node):
    return isinstance(node, ast.Attribute) and node.attr == "scaling"


def scaling(node, ctx):
    """The scaling set to 1 (``self.scaling = 1``), left out of a product ("drop") or inverted
    in it ("invert"; ``rank / alpha`` comes from :func:`swap`)."""
    if isinstance(node, ast.Assign) and any(_is_scaling(t) for t in node.targets):
        yield Variant({node.value: ast.Constant(1)}, "one")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        for side, other in (("left", "right"), ("right", "left")):
            if _is_scaling(getattr(node, side)):
                kept = getattr(node, other)
                yield Variant({node: kept}, "drop")
                yield Variant({node: ast.BinOp(kept, ast.Div(), getattr(node, side))}, "invert")


def _bias_terms(fn: ast.FunctionDef) -> list[tuple[ast.BinOp, ast.expr, ast.expr]]:
    """``(sum, bias, rest)`` for every ``rest + bias`` in ``fn`` (bias: a ``.bias`` or a name
    bound to one)."""
    aliases = _state_aliases(fn, ("bias",))

    def is_bias(v):
        return isinstance(v, ast.Attribute) and v.attr == "bias" or \
            isinstance(v, ast.Name) and v.id in aliases

    found = []
    for node in ast.walk(fn):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            for bias, rest in ((node.right, node.left), (node.left, node.right)):
                if is_bias(bias):
                    found.append((node, bias, rest))
    return found


def bias_moved(node, ctx):
    """The bias added to ``x @ W.T`` before the rescaling instead of after it (one mutant per
    product of the input): ``(x @ V.T) * c + b`` -> ``(x @ V.T + b) * c``."""
    if not (isinstance(node, ast.FunctionDef) and node.name == "forward" and ctx.inputs(node)):
        return
    terms = _bias_terms(node)
    if not terms:
        return
    total, bias, rest = terms[0]
    x = ctx.inputs(node)[0]
    for mm in ast.walk(node):
        if isinstance(mm, ast.BinOp) and isinstance(mm.op, ast.MatMult) \
                and isinstance(mm.left, ast.Name) and mm.left.id == x:
            guarded = ast.IfExp(ast.Compare(bias, [ast.IsNot()], [ast.Constant(None)]),
                                ast.BinOp(mm, ast.Add(), bias), mm)
            yield Variant({total: rest, mm: guarded}, at=mm)


def bias_dropped(node, ctx):
    """The base layer applied without its bias in ``forward``: ``self.base_layer(x)`` ->
    ``x @ self.base_layer.weight.T``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "base_layer" and len(node.args) == 1 and ctx.in_forward(node):
        weight = ast.Attribute(ast.Attribute(node.func, "weight", ast.Load()), "T", ast.Load())
        yield Variant({node: ast.BinOp(node.args[0], ast.MatMult(), weight)})


def inplace(node, ctx):
    """A sum written into its first operand when that is layer state or an input:
    ``base.weight + d`` -> ``base.weight.add_(d)`` (the given layer, or the caller's tensor,
    changes)."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)):
        return
    fn, left = ctx.function(node), node.left
    if fn is None:
        return
    state = isinstance(left, ast.Attribute) and left.attr in ("weight", "bias") or \
        isinstance(left, ast.Name) and (left.id in _state_aliases(fn) or left.id in ctx.inputs(fn))
    if state:
        yield Variant({node: _method(left, "add_", node.right)})


def drop_guard(node, ctx):
    """Validation or filtering removed: a ``raise`` or a ``continue`` -> ``pass``."""
    if isinstance(node, (ast.Raise, ast.Continue)):
        yield Variant({node: ast.Pass()})


def _is_init_call(call: ast.Call) -> bool:
    owner = _dotted(call.func.value) if isinstance(call.func, ast.Attribute) else ""
    return owner.split(".")[-1] == "init"


def drop_call(node, ctx):
    """A call made for its effect left out (``self.base_layer.requires_grad_(False)``,
    ``self.register_buffer(...)``, ``w.copy_(...)``). Kept: ``super().__init__()``, and init
    calls, whose removal leaves ``torch.empty`` memory (use :func:`init` for those)."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        call = node.value
        is_super = isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Call) \
            and getattr(call.func.value.func, "id", "") == "super"
        if not (is_super or _is_init_call(call)):
            yield Variant({node: ast.Pass()})


_FLIPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
          ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn,
          ast.NotIn: ast.In}


def compare(node, ctx):
    """A comparison flipped or moved by one: ``<`` -> ``<=``, ``==`` -> ``!=``, ``is not`` ->
    ``is``, ``in`` -> ``not in``."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _FLIPS:
        yield Variant({node: ast.Compare(node.left, [_FLIPS[type(node.ops[0])]()],
                                         node.comparators)})


def boolean(node, ctx):
    """A condition weakened: ``not c`` -> ``c``, ``a or b`` -> ``a`` / ``b`` / ``a and b``."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield Variant({node: node.operand}, "not")
    elif isinstance(node, ast.BoolOp):
        for i, value in enumerate(node.values):
            rest = [v for v in node.values if v is not value]
            yield Variant({node: rest[0] if len(rest) == 1 else ast.BoolOp(node.op, rest)},
                          f"drop{i}")
        flipped = ast.And() if isinstance(node.op, ast.Or) else ast.Or()
        yield Variant({node: ast.BoolOp(flipped, node.values)}, "flip")


def any_loop(node, ctx):
    """``if any(c for t in ts): body`` -> ``for t in ts: if c: body`` (a module that matches two
    patterns counted twice)."""
    if isinstance(node, ast.If) and not node.orelse and isinstance(node.test, ast.Call) \
            and getattr(node.test.func, "id", "") == "any" and len(node.test.args) == 1 \
            and isinstance(node.test.args[0], ast.GeneratorExp):
        gen = node.test.args[0]
        if len(gen.generators) == 1 and not gen.generators[0].ifs:
            g = gen.generators[0]
            loop = ast.For(g.target, g.iter, [ast.If(gen.elt, node.body, [])], [])
            yield Variant({node: loop})


def constant(node, ctx):
    """A float literal changed: ``c`` -> ``0.0`` (or ``1.0`` for zero): initial logits,
    offsets such as the 0.5 in ``0.5 + sigmoid(u)``, default rates."""
    if isinstance(node, ast.Constant) and type(node.value) is float \
            and not ctx.inside(node, (ast.JoinedStr, ast.Raise)):
        yield Variant({node: ast.Constant(0.0 if node.value else 1.0)})


def _is_dropout(node):
    """A call of a dropout module the layer holds: ``self.lora_dropout(x)``."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and isinstance(node.func.value, ast.Name) and "drop" in node.func.attr.lower() \
        and len(node.args) == 1


def dropout(node, ctx):
    """Dropout removed ("drop"), applied one call later ("after": after A instead of before),
    on the adapter's output ("output"), or without the 1/(1 - p) rescale ("norescale")."""
    if not (_is_dropout(node) and ctx.in_forward(node)):
        return
    yield Variant({node: node.args[0]}, "drop")
    chain, outer = [], ctx.parent.get(node)
    while isinstance(outer, ast.Call) and outer.args == [chain[-1] if chain else node]:
        chain.append(outer)
        outer = ctx.parent.get(outer)
    module, inner = ast.unparse(node.func), ast.unparse(node.args[0])
    for label, call in (("after", chain[:1]), ("output", chain[1:][-1:])):
        for c in call:
            without = ast.unparse(c).replace(ast.unparse(node), inner, 1)
            yield Variant({c: _expr(f"{module}({without})")}, label, at=node)
    keep = _expr(f"1 - getattr({module}, 'p', 0.0)")
    yield Variant({node: ast.BinOp(node, ast.Mult(), keep)}, "norescale")


def dropout_on_base(node, ctx):
    """Dropout applied to the base layer's input too: ``self.base_layer(x)`` ->
    ``self.base_layer(self.lora_dropout(x))``, when ``forward`` uses a dropout module."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "base_layer" and len(node.args) == 1 and ctx.in_forward(node)):
        return
    drop = next((n for n in ast.walk(ctx.function(node)) if _is_dropout(n)), None)
    if drop is not None:
        yield Variant({node.args[0]: ast.Call(drop.func, [node.args[0]], [])}, at=node)


def clone(node, ctx):
    """Copies dropped so that two tensors share storage: ``self.w.clone()`` -> ``self.w``, and
    every ``t.clone()`` of a name ``t`` -> ``t`` when ``t`` is read elsewhere too (dropping the
    copy of a tensor used once shares nothing: equivalent by construction)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "clone" and not node.args):
        return
    receiver = node.func.value
    if isinstance(receiver, ast.Attribute):
        yield Variant({node: receiver})
    elif isinstance(receiver, ast.Name):
        scope = ctx.function(node) or ctx.tree
        reads = [n for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id == receiver.id
                 and isinstance(n.ctx, ast.Load)]
        copies = sorted((c for c in ast.walk(scope) if isinstance(c, ast.Call)
                         and isinstance(c.func, ast.Attribute) and c.func.attr == "clone"
                         and c.func.value in reads), key=lambda c: (c.lineno, c.col_offset))
        if len(reads) > 1 and copies[0] is node:
            yield Variant({c: c.func.value for c in copies})


OPERATORS: dict[str, Operator] = {f.__name__: f for f in (
    swap, transpose, drop_term, duplicate_term, detach, drop_detach, no_grad, eval_skip, cache, dim,
    shape_index, init, scaling, bias_moved, bias_dropped, inplace, drop_guard, drop_call, compare,
    boolean, any_loop, constant, dropout, dropout_on_base, clone)}
