"""What the checks of the DoRA family share: notebooks 05 (DoRA), 06 (HyLoRADA), 07 (HyLoRADA v2).

The three layers compute one equation. With W (out, in) and b the frozen base's weight and
bias, s = alpha / rank, A (r, in), B (out, r) and x (..., in)::

    V     = W + s·B A                       (out, in)   the adapted weight
    n_i   = ‖V_i‖                           (out,)      one norm per ROW, a constant in backward
    m_eff = γ·m + (1 − γ)·m0                (out,)      m trainable, m0 = ‖W_i‖ frozen
    c     = (1 − β)·m_eff / n + β           (out,)      the row factor
    y     = c ⊙ (W x + f·s·B A x) + b       (..., out)

- DoRA (05):        γ = 1, β = 0, f = 1, so c = m / n.
- HyLoRADA (06):    γ = σ(g), β = σ(b_res), two trainable scalars; f = 1.
- HyLoRADA v2 (07): f_t = 0.5 + σ(w · P_t), one factor per position t of a prior P (..., sd).

The checks find every part by shape, never by name: A and B among the trainable parameters
(either orientation, nn.Parameter or nn.Linear), m as the vector with ``out`` entries outside the
base (a trainable parameter first), the scalars as the trainable one-element parameters, w as
the trainable tensor with ``structure_dim`` entries. Probe layers are non-square with in, out,
rank (and structure_dim) pairwise different, so every shape is unambiguous.

Three behaviours every member must show in the same way are checked here, for a ``Member``
that says how to build and feed one:

- ``check_train_eval``: the contracts have no dropout, so ``eval()`` computes the same function,
  with the same gradients, as ``train()``.
- ``check_training_steps``: no state survives a call. After each of a few optimizer steps (and,
  in eval mode, after each edit of the parameters) the layer computes what a freshly built layer
  holding the same parameter values computes.
- ``check_gradcheck``: gradients reach every input (x, the prior) and agree with the derivative
  of the layer's own forward, in float64: for the inputs along random directions (what
  ``torch.autograd.gradcheck``'s fast mode does), for the parameters that do not enter the row
  norm (m, the scalars, w) entry by entry, the parameter moved in place. It is written out rather
  than calling gradcheck so that every backward follows its own forward and the other forwards
  run without a graph: so it also runs on a layer that lives in a probe process.
  A and B are not gradchecked: the norm is detached by contract, so their gradients are compared
  with a reference that detaches (each module's "norm detached" check). The gradcheck is valid
  only where the norm does not depend on what is varied, so it runs on a layer whose forward is
  the contract's (``Member.matches``); for any other layer, whose bug the forward checks name,
  only the gradient flow to the inputs is checked. The contracts promise float32 only: a layer
  that does not run in float64 is told so in a note, and is checked with central differences
  in float32 instead.

Every failure carries a concept key ``<topic>.<concept>`` (``dora.norm_detached``); a check
declares its key with ``@concept(...)``, and the helpers here name theirs with ``key(...)``.
"""
from __future__ import annotations

import functools
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ._probe import (
    CheckFailure,
    TimedOut,
    assert_own_implementation,
    build,
    call,
    close,
    fail,
    find_base,
    find_factors,
    generator,
    make_base,
    randn,
    trainable,
)

# Probe layers: non-square; in, out and rank pairwise different.
IN, OUT, RANK = 24, 10, 3
STEPS = 3            # optimizer steps (and parameter edits in eval mode) of check_training_steps
STEP_LR = 0.05       # Adam's learning rate there: every parameter moves by about this much a step
EDIT_SCALE = 0.05    # the size of the eval-mode edits


# --- concept keys --------------------------------------------------------------------------

_topic: ContextVar[str] = ContextVar("dora_family_topic", default="dora")


def key(concept_name: str) -> str:
    """The concept key ``<topic>.<concept_name>`` for the check that is running."""
    return f"{_topic.get()}.{concept_name}"


def concept(full_key: str) -> Callable[[Callable], Callable]:
    """Decorator: a check and its concept key, e.g. ``@concept("dora.forward")``.

    A CheckFailure raised inside without a key gets ``full_key``; the helpers of this module
    name finer concepts with ``key(...)`` (``dora.construct``, ``dora.forward_crash``, ...).
    """
    topic = full_key.split(".", 1)[0]

    def wrap(check: Callable) -> Callable:
        @functools.wraps(check)
        def run_check(*args, **kwargs):
            token = _topic.set(topic)
            try:
                return check(*args, **kwargs)
            except CheckFailure as e:
                if e.key is None:
                    e.key = full_key
                raise
            finally:
                _topic.reset(token)
        run_check.key = full_key
        return run_check
    return wrap


def all_of(*checks: Callable[[type], None]) -> Callable[[type], None]:
    """The checks of one test cell as one check: run in order, the first failure is the verdict."""
    def run_all(cls: type) -> None:
        for check in checks:
            check(cls)
    run_all.__doc__ = " ".join((c.__doc__ or c.__name__).strip().splitlines()[0] for c in checks)
    run_all.checks = checks
    return run_all


def not_reference(cls: type, exercise: str, build_layer: Callable[[], nn.Module],
                  note: str = "") -> None:
    """``assert_own_implementation`` with the concept key ``<topic>.not_reference``."""
    try:
        assert_own_implementation(cls, exercise, build_layer, note=note)
    except CheckFailure as e:
        e.key = e.key or key("not_reference")
        raise


# --- probe layers --------------------------------------------------------------------------

def probe_base(in_f: int = IN, out_f: int = OUT, *, bias: bool = True, seed: int = 0) -> nn.Linear:
    """An nn.Linear whose rows are rescaled by 0.4 to 2.5: row norms far from 1 and from each
    other (so m0 = ‖W_i‖ matters), and from the column norms; a bias of size about 0.5."""
    base = make_base(in_f, out_f, bias=bias, seed=seed)
    g = generator(seed + 100)
    with torch.no_grad():
        scales = torch.linspace(0.4, 2.5, out_f)[torch.randperm(out_f, generator=g)]   # (out,)
        base.weight.mul_(scales[:, None])
        if bias:
            base.bias.copy_(torch.randn(out_f, generator=g) * 0.5)
    return base


def build_layer(cls: type, base: nn.Linear, *, seed: int = 0, **kwargs) -> nn.Module:
    """The student's layer around ``base``, built with a seeded RNG (key ``<topic>.construct``)."""
    try:
        return build(cls, base, seed=seed, **kwargs)
    except CheckFailure as e:
        e.key = e.key or key("construct")
        raise


HUNG: set[type] = set()   # classes whose forward ran out of time once: fail fast next time


def describe(layer: nn.Module, inputs: Sequence[torch.Tensor | None]) -> str:
    """'Forward on x of shape (4, 24) (24->10 layer)', naming a prior when there is one."""
    base = getattr(layer, "base_layer", None)
    size = (f" ({base.in_features}->{base.out_features} layer)"
            if isinstance(base, nn.Linear) else "")
    prior = (f" with a structure prior of shape {tuple(inputs[1].shape)}"
             if len(inputs) > 1 and inputs[1] is not None else "")
    return f"Forward on x of shape {tuple(inputs[0].shape)}{prior}{size}"


def run(layer: nn.Module, *inputs: torch.Tensor | None) -> torch.Tensor:
    """``layer(x)`` or ``layer(x, prior)`` (a None prior is not passed), with a time limit.

    A crash becomes a CheckFailure that says where (key ``<topic>.forward_crash``); a result
    that is not a tensor fails too.
    """
    args = tuple(t for i, t in enumerate(inputs) if i == 0 or t is not None)
    what = describe(layer, inputs)
    if type(layer) in HUNG:
        fail(f"{what} was not run: an earlier call to this forward took longer than the time "
             "limit. Is there an endless loop?", key=key("timeout"))
    try:
        y = call(layer, *args, what=what)
    except TimedOut as e:
        HUNG.add(type(layer))
        e.key = e.key or key("timeout")
        raise
    except CheckFailure as e:
        e.key = e.key or key("forward_crash")
        raise
    if not isinstance(y, torch.Tensor):
        fail("forward must return a tensor.", f"{what} returned {type(y).__name__}",
             key=key("forward_crash"))
    return y


# --- finding the parts ---------------------------------------------------------------------

def outside_base(layer: nn.Module) -> list[tuple[str, torch.Tensor, str]]:
    """(name, tensor, "parameter" or "buffer") for every tensor not owned by the base layer."""
    base = getattr(layer, "base_layer", None)
    skip: set[int] = set()
    if isinstance(base, nn.Module):
        skip = {id(t) for t in list(base.parameters()) + list(base.buffers())}
    out = [(n, p, "parameter") for n, p in layer.named_parameters() if id(p) not in skip]
    out += [(n, b, "buffer") for n, b in layer.named_buffers() if id(b) not in skip]
    return out


def is_vector(t: torch.Tensor, size: int) -> bool:
    """``size`` entries laid out as (size,), (size, 1) or (1, size)."""
    return t.numel() == size and (t.dim() == 1 or (t.dim() == 2 and 1 in t.shape))


def vectors(layer: nn.Module, size: int) -> list[tuple[str, torch.Tensor, str]]:
    return [(n, t, k) for n, t, k in outside_base(layer) if is_vector(t, size)]


def find_magnitude(layer: nn.Module, out_f: int) -> tuple[str, torch.Tensor] | None:
    """The magnitude m: out_f entries outside the base; a trainable parameter first, then any
    parameter, then a buffer."""
    cands = vectors(layer, out_f)
    for wanted in (lambda t, k: k == "parameter" and t.requires_grad,
                   lambda t, k: k == "parameter", lambda t, k: True):
        for n, t, k in cands:
            if wanted(t, k):
                return n, t
    return None


def find_scalars(layer: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trainable parameters with one element, shape () or (1,): the gate and blend logits."""
    return [(n, p) for n, p in trainable(layer) if p.numel() == 1 and p.dim() <= 1]


@dataclass
class Parts:
    """A probe layer's adapter found by shape; values are returned in nn.Linear orientation."""
    layer: nn.Module
    base: nn.Linear
    rank: int
    A_param: nn.Parameter                     # (r, in) or (in, r)
    B_param: nn.Parameter                     # (out, r) or (r, out)
    m_name: str | None = None
    m_param: torch.Tensor | None = None       # (out,), (out, 1) or (1, out); may be a buffer
    scalars: list[tuple[str, nn.Parameter]] = field(default_factory=list)   # () or (1,) each
    w_name: str | None = None
    w_param: nn.Parameter | None = None       # (sd,), (1, sd) or (sd, 1)

    @property
    def A_t(self) -> bool:
        return tuple(self.A_param.shape) != (self.rank, self.base.in_features)

    @property
    def B_t(self) -> bool:
        return tuple(self.B_param.shape) != (self.base.out_features, self.rank)

    def A(self) -> torch.Tensor:
        """A, (r, in), detached."""
        a = self.A_param.detach()
        return a.T if self.A_t else a

    def B(self) -> torch.Tensor:
        """B, (out, r), detached."""
        b = self.B_param.detach()
        return b.T if self.B_t else b

    def m(self) -> torch.Tensor | None:
        """m, (out,), detached; None when the layer has none."""
        return None if self.m_param is None else self.m_param.detach().reshape(-1)

    def w(self) -> torch.Tensor | None:
        """w, (sd,), detached; None when the layer has none."""
        return None if self.w_param is None else self.w_param.detach().reshape(-1)

    def grad(self, which: str) -> torch.Tensor | None:
        """The gradient of "A" (r, in), "B" (out, r), "m" (out,) or "w" (sd,), or None."""
        p, transposed = {"A": (self.A_param, self.A_t), "B": (self.B_param, self.B_t),
                         "m": (self.m_param, False), "w": (self.w_param, False)}[which]
        if p is None or p.grad is None:
            return None
        g = p.grad.T if transposed else p.grad
        return g.reshape(-1) if which in ("m", "w") else g

    def grads(self) -> tuple[torch.Tensor | None, ...]:
        """(grad A, grad B, grad m)."""
        return self.grad("A"), self.grad("B"), self.grad("m")

    def norm_free(self) -> list[tuple[str, torch.Tensor]]:
        """The trainable parts that do not enter the row norm ‖W + s·B A‖: m, scalars, w."""
        out = []
        if self.m_param is not None and self.m_param.requires_grad:
            out.append((self.m_name or "m", self.m_param))
        out += [(n, p) for n, p in self.scalars]
        if self.w_param is not None:
            out.append((self.w_name or "w", self.w_param))
        return out

    @torch.no_grad()
    def assign(self, A: torch.Tensor, B: torch.Tensor, m: torch.Tensor | None,
               logits: Sequence[float] | None = None, w: torch.Tensor | None = None) -> None:
        """Set A (r, in), B (out, r), m (out,), the scalars (in their order) and w (sd,)."""
        self.A_param.copy_((A.T if self.A_t else A).to(self.A_param))
        self.B_param.copy_((B.T if self.B_t else B).to(self.B_param))
        if m is not None and self.m_param is not None:
            self.m_param.copy_(m.reshape(self.m_param.shape).to(self.m_param))
        if logits is not None:
            for (_, p), v in zip(self.scalars, logits, strict=False):
                p.fill_(v)
        if w is not None and self.w_param is not None:
            self.w_param.copy_(w.reshape(self.w_param.shape).to(self.w_param))


def find_parts(layer: nn.Module, in_f: int = IN, out_f: int = OUT, rank: int = RANK,
               sd: int | None = None) -> Parts:
    """A, B (by shape, key ``<topic>.adapters``), m, the scalars and (given sd) w of ``layer``."""
    base = find_base(layer)
    try:
        f = find_factors(layer, in_f, out_f, rank)
    except CheckFailure as e:
        e.key = e.key or key("adapters")
        raise
    mag = find_magnitude(layer, out_f)
    m_name, m = mag if mag else (None, None)
    taken = {id(f.A_param), id(f.B_param), id(m)}
    scalars = [(n, p) for n, p in find_scalars(layer) if id(p) not in taken]
    w_name = w = None
    if sd is not None:
        for n, t, kind in vectors(layer, sd):
            if kind == "parameter" and t.requires_grad and id(t) not in taken:
                w_name, w = n, t
                break
    return Parts(layer, base, rank, f.A_param, f.B_param, m_name, m, scalars, w_name, w)


def random_values(base: nn.Linear, rank: int, seed: int,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded non-zero A (r, in), B (out, r) and a magnitude m (out,) moved off ‖W‖_row."""
    in_f, out_f = base.in_features, base.out_features
    g = generator(seed)
    A = torch.randn(rank, in_f, generator=g) * scale
    B = torch.randn(out_f, rank, generator=g) * scale
    moved = torch.linspace(0.5, 1.6, out_f)[torch.randperm(out_f, generator=g)]   # (out,)
    m = base.weight.detach().norm(dim=1) * moved
    return A, B, m


# --- the definition ------------------------------------------------------------------------

def row_norm(V: torch.Tensor, detach: bool = True) -> torch.Tensor:
    """n_i = ‖V_i‖: V (out, in) -> (out,), detached unless ``detach=False``."""
    n = V.norm(dim=1)
    return n.detach() if detach else n


Scalar = float | torch.Tensor


def family_output(W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor, B: torch.Tensor,
                  s: float, x: torch.Tensor, *, m: torch.Tensor, m0: torch.Tensor | None = None,
                  gamma: Scalar = 1.0, beta: Scalar = 0.0, f: torch.Tensor | None = None,
                  detach: bool = True, norm_of: torch.Tensor | None = None) -> torch.Tensor:
    """y = c ⊙ (W x + f·s·B A x) + b in float64, the family's equation (module docstring).

    W (out, in), b (out,) or None, A (r, in), B (out, r), x (..., in), m and m0 (out,) (m0
    defaults to ‖W‖_row), gamma and beta numbers or 0-dim tensors, f (..., 1) or None (= 1).
    ``norm_of``: the (out, in) matrix whose row norms are n (default W + s·B A; the checks'
    diagnoses pass others); ``detach=False`` lets autograd differentiate through n.
    """
    W, A, B, m, x = (t.double() for t in (W, A, B, m, x))
    m0 = W.norm(dim=1) if m0 is None else m0.double()
    V = W + s * B @ A                                         # (out, in)
    n = row_norm(V if norm_of is None else norm_of.double(), detach)
    m_eff = gamma * m + (1 - gamma) * m0                      # (out,)
    c = (1 - beta) * m_eff / n + beta                         # (out,)
    update = s * (x @ A.T) @ B.T                              # (..., out)
    if f is not None:
        update = f.double() * update
    y = c * (x @ W.T + update)
    return y if b is None else y + b.double()


# --- one member of the family, for the shared checks ---------------------------------------

@dataclass(frozen=True)
class Member:
    """How the shared checks build and feed one member of the family."""
    title: str                                            # "DoRA", for messages
    build: Callable[[type, int], nn.Module]               # (cls, seed) -> a probe layer at init
    prepare: Callable[[nn.Module, int], Parts]            # seeded non-zero A, B, m, scalars, w
    inputs: Callable[[int], tuple[torch.Tensor, ...]]     # seed -> (x,) or (x, prior), simplest first
    input_names: tuple[str, ...] = ("x",)
    recomputed: str = "the row norm ‖W + sBA‖"            # what every forward recomputes
    # whether a prepared layer computes the contract's function on these inputs (see check_gradcheck)
    matches: Callable[[nn.Module, Parts, tuple[torch.Tensor, ...]], bool] | None = None
    # whether inputs after the first may be left out (v2's prior): then state checks call both ways
    optional_inputs: bool = False

    def prepared(self, cls: type, seed: int) -> tuple[nn.Module, Parts]:
        layer = self.build(cls, seed)
        return layer, self.prepare(layer, seed + 1)


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
    return f"{(a.double() - b.double()).abs().max().item():.3g}"


def _forward_backward(layer: nn.Module, inputs: Sequence[torch.Tensor], names: Sequence[str],
                      seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor | None] | None]:
    """(y, {name: gradient}) of the loss <g, y> for a seeded g, for every input and trainable
    parameter; the gradients are None when y carries no gradient at all."""
    ins = [t.detach().clone().requires_grad_(True) for t in inputs]
    layer.zero_grad(set_to_none=True)
    y = run(layer, *ins)
    if not y.requires_grad:
        return y.detach(), None
    g = randn(*y.shape, seed=seed)
    call(lambda: (y * g.to(y.dtype)).sum().backward(), what="Backward through your layer")
    grads: dict[str, torch.Tensor | None] = {n: t.grad for n, t in zip(names, ins, strict=False)}
    grads.update({n: p.grad for n, p in trainable(layer)})
    return y.detach(), grads


def check_train_eval(member: Member, cls: type, seed: int) -> None:
    """eval() computes what train() computes, with the same gradients (no dropout here)."""
    layer, parts = member.prepared(cls, seed)
    inputs = member.inputs(seed + 2)
    layer.train()
    y_train, g_train = _forward_backward(layer, inputs, member.input_names, seed + 3)
    call(layer.eval, what="layer.eval()")
    y_eval, g_eval = _forward_backward(layer, inputs, member.input_names, seed + 3)
    head = (f"{member.title} has no dropout in this contract, so the layer must compute the same "
            "function in eval() mode as in train() mode: model.eval() is called before every "
            "validation run and at inference.")
    if not close(y_eval, y_train, rtol=1e-5, atol=1e-6):
        with torch.no_grad():
            plain = parts.base(inputs[0])
        why = ""
        if close(y_eval, plain, rtol=1e-5, atol=1e-6):
            why = " In eval() mode your layer returns the pretrained layer's output: it skips the adapter."
        fail(head, f"With non-zero A and B, eval() changes the output by up to "
                   f"{largest_difference(y_eval, y_train)}.{why}", key=key("eval_mode"))
    if g_train is None:
        return                      # no gradient even in train mode: the gradients check's case
    if g_eval is None:
        fail(head, "In eval() mode your output carries no gradient (computed under "
                   "torch.no_grad(), or detached?): gradients in eval mode are used too (saliency, "
                   "fine-tuning with frozen dropout elsewhere).", key=key("eval_mode"))
    differ = [n for n, gt in g_train.items()
              if (gt is None) != (g_eval.get(n) is None)
              or (gt is not None and not close(g_eval[n], gt, rtol=1e-4, atol=1e-6))]
    if differ:
        fail(head, f"In eval() mode the gradients of {', '.join(differ)} differ from those in "
                   "train() mode.", key=key("eval_mode"))


def twin_of(member: Member, cls: type, seed: int, layer: nn.Module) -> nn.Module:
    """A freshly built layer (same seed, same base) that holds the current values of
    ``layer``'s trainable parameters and was never called: what ``layer`` must compute."""
    twin = member.build(cls, seed)
    theirs = dict(twin.named_parameters())
    with torch.no_grad():
        for name, p in trainable(layer):
            q = theirs.get(name)
            if q is None or q.shape != p.shape:
                fail("Two layers built the same way must have the same parameters.",
                     f"a second {type(layer).__name__} has no parameter {name!r} of shape "
                     f"{tuple(p.shape)}", key=key("stale_state"))
            q.copy_(p)
    twin.train(layer.training)
    return twin


class Adam:
    """Adam (Kingma & Ba), written out: torch.optim's first step costs seconds of imports."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps, self.t = list(params), lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v, strict=False):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            m_hat, v_hat = m / (1 - b1 ** self.t), v / (1 - b2 ** self.t)
            p.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))


def check_training_steps(member: Member, cls: type, seed: int) -> None:
    """No state survives a call: after each optimizer step, and after each edit of the
    parameters in eval mode, the layer computes what a fresh layer with the same values does."""
    layer = member.build(cls, seed)
    params = trainable(layer)
    if not params:
        return                      # nothing trains: the trainable-parameters check's case
    inputs = member.inputs(seed + 2)
    with torch.no_grad():
        y0 = run(layer, *inputs)
    target = randn(*y0.shape, seed=seed + 3)
    opt = Adam([p for _, p in params], lr=STEP_LR)
    recompute = (f"Everything your layer derives from its parameters ({member.recomputed}, the "
                 "adapted weight) must be computed from their current values in every forward.")
    before = y0
    for step in range(1, STEPS + 1):
        opt.zero_grad(set_to_none=True)
        y = run(layer, *inputs)
        if not y.requires_grad:
            return                  # no gradient: the gradients check's case
        loss = (y - target.to(y.dtype)).pow(2).mean()
        call(loss.backward, what="Backward through your layer")
        opt.step()
        now = run(layer, *inputs).detach()
        twin = twin_of(member, cls, seed, layer)
        if member.optional_inputs:      # a call with x alone, after calls with the prior
            alone, want_alone = run(layer, inputs[0]).detach(), run(twin, inputs[0]).detach()
            if not close(alone, want_alone, rtol=1e-5, atol=1e-6):
                fail(f"Your layer keeps state across calls: after calls with a "
                     f"{member.input_names[1]}, a call without one differs from that of a freshly "
                     f"built layer holding the same parameter values, by up to "
                     f"{largest_difference(alone, want_alone)}. A call without a {member.input_names[1]} "
                     "must not reuse one from an earlier call.", key=key("stale_state"))
        want = run(twin, *inputs).detach()
        if not close(now, want, rtol=1e-5, atol=1e-6):
            same = close(now, before, rtol=1e-6, atol=1e-7)
            fail(f"Your layer keeps state across calls: after {step} optimizer step(s) (Adam, lr "
                 f"{STEP_LR:g}, starting at init) its output differs from that of a freshly built "
                 f"layer holding the same parameter values, by up to {largest_difference(now, want)}. "
                 + recompute,
                 "Its output did not change at all with the step: is the output or the adapted "
                 "weight cached?" if same else
                 f"Part of what it computes is stale: is {member.recomputed} computed once (on "
                 "the first call) and reused? Detached means 'no gradient', not 'computed once'.",
                 key=key("stale_state"))
        before = now
    call(layer.eval, what="layer.eval()")
    gen = generator(seed + 4)
    for step in range(1, STEPS + 1):
        before = run(layer, *inputs).detach()          # whatever eval() caches, it caches now
        with torch.no_grad():
            for _, p in params:
                p.add_(torch.randn(p.shape, generator=gen).to(p) * EDIT_SCALE)
        now = run(layer, *inputs).detach()
        want = run(twin_of(member, cls, seed, layer), *inputs).detach()
        if not close(now, want, rtol=1e-5, atol=1e-6):
            same = close(now, before, rtol=1e-6, atol=1e-7)
            fail("In eval() mode your layer reuses what it computed in an earlier call: after its "
                 "parameters changed (as load_state_dict, an optimizer step or an edit under "
                 f"torch.no_grad() changes them; edit {step} of {STEPS}), its output differs from "
                 f"that of a freshly built layer holding the same values, by up to "
                 f"{largest_difference(now, want)}. " + recompute,
                 "It returned exactly what it returned before the change: is a merged weight (or "
                 "the output) cached in eval mode? A cache must notice when the parameters change."
                 if same else f"Part of it is stale: is {member.recomputed} cached in eval mode?",
                 key=key("stale_state"))


class _NoFloat64(Exception):
    """The layer does not run in float64 (the contracts promise float32 only)."""


def _float64_copy(member: Member, cls: type, seed: int, inputs: Sequence[torch.Tensor]):
    """(layer, parts, inputs) in float64, or raise _NoFloat64 saying why not."""
    try:
        layer, parts = member.prepared(cls, seed)
        call(layer.double, what="layer.double()")
        ins = [t.double() for t in inputs]
        y = run(layer, *ins)
    except TimedOut:
        raise
    except CheckFailure as e:
        raise _NoFloat64(str(e).splitlines()[0]) from None
    if y.dtype != torch.float64:
        raise _NoFloat64(f"after layer.double() its output is {y.dtype}")
    return layer, parts, ins


def _with_input(layer: nn.Module, inputs: Sequence[torch.Tensor], i: int):
    """fn(t) = the layer's output with input number i set to t."""
    def fn(t):
        ins = list(inputs)
        ins[i] = t
        return run(layer, *ins)
    return fn


def _loss(layer: nn.Module, inputs: Sequence[torch.Tensor], g: torch.Tensor) -> torch.Tensor:
    y = run(layer, *inputs)
    return (y * g.to(y.dtype)).sum()


@dataclass(frozen=True)
class Tolerance:
    """Central differences with step eps (times max(1, |t|)); |analytic − numerical| may be
    rtol·(|analytic| + |numerical|) + atol."""
    eps: float
    rtol: float
    atol: float
    how: str                  # for messages


FLOAT64 = Tolerance(1e-3, 1e-4, 1e-7, "a gradient check in float64")
FLOAT32 = Tolerance(1e-2, 2e-2, 1e-4, "central differences in float32")
DIRECTIONS = 3                # random directions per input


def _input_check(fn, t0: torch.Tensor, g: torch.Tensor, tol: Tolerance, seed: int) -> str | None:
    """d<g, fn(t)>/dt from one backward, against central differences along random directions
    (what torch.autograd.gradcheck's fast mode does). Backward runs right after its forward and
    every other forward runs without a graph, so this works for a layer in a probe process too.
    None if they agree, else what was observed."""
    t = t0.detach().clone().requires_grad_(True)
    y = fn(t)
    grad = None
    if y.requires_grad:
        (grad,) = call(lambda: torch.autograd.grad((y * g.to(y.dtype)).sum(), t, allow_unused=True),
                       what="Backward through your layer")
    grad = torch.zeros_like(t0) if grad is None else grad.detach()
    eps = tol.eps * max(1.0, t0.abs().max().item())
    for k in range(DIRECTIONS):
        v = randn(*t0.shape, seed=seed + k).to(t0)
        with torch.no_grad():
            up, down = (fn(t0 + eps * v) * g).sum().item(), (fn(t0 - eps * v) * g).sum().item()
        numerical, analytic = (up - down) / (2 * eps), (grad * v).sum().item()
        if abs(analytic - numerical) > tol.rtol * (abs(analytic) + abs(numerical)) + tol.atol:
            return (f"along a random direction: your backward gives {analytic:.6g}, the "
                    f"numerical derivative of your forward {numerical:.6g}")
    return None


def _param_check(layer: nn.Module, p: torch.Tensor, inputs: Sequence[torch.Tensor],
                 g: torch.Tensor, tol: Tolerance) -> str | None:
    """d<g, y>/dp from one backward, against central differences with p moved in place entry
    by entry (and restored), so that it works for any module. None if they agree, else what
    was observed."""
    layer.zero_grad(set_to_none=True)
    p.grad = None
    loss = _loss(layer, inputs, g)
    if loss.requires_grad:
        call(loss.backward, what="Backward through your layer")
    analytic = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
    analytic = analytic.double().reshape(-1)
    orig = p.detach().clone()
    eps = tol.eps * max(1.0, orig.abs().max().item())
    numerical = torch.zeros(orig.numel(), dtype=torch.float64)
    try:
        with torch.no_grad():
            for i in range(orig.numel()):
                e = torch.zeros(orig.numel(), dtype=orig.dtype)
                e[i] = eps
                p.copy_(orig + e.reshape(orig.shape))
                up = _loss(layer, inputs, g).item()
                p.copy_(orig - e.reshape(orig.shape))
                down = _loss(layer, inputs, g).item()
                numerical[i] = (up - down) / (2 * eps)
    finally:
        with torch.no_grad():
            p.copy_(orig)
    err = (analytic - numerical).abs()
    if bool((err <= tol.rtol * (analytic.abs() + numerical.abs()) + tol.atol).all()):
        return None
    i = int(err.argmax())
    return (f"entry {i}: your backward gives {analytic[i].item():.6g}, the numerical derivative "
            f"of your forward {numerical[i].item():.6g}")


GRAD_HINT = ("Is part of the path computed under torch.no_grad(), detached, written through .data, "
             "or a hand-written backward wrong?")


def check_gradcheck(member: Member, cls: type, seed: int) -> None:
    """Gradients reach every input, and for the inputs and the norm-free parameters (m, the
    scalars, w) they are the derivatives of the layer's own forward (a gradient check in
    float64 where the layer runs in float64, else in float32)."""
    layer, parts = member.prepared(cls, seed)
    inputs = member.inputs(seed + 2)
    ins = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = run(layer, *ins)
    if y.requires_grad:
        g = randn(*y.shape, seed=seed + 3).to(y.dtype)
        call(lambda: (y * g).sum().backward(), what="Backward through your layer")
    for name, t in zip(member.input_names, ins, strict=False):
        gr = t.grad
        if gr is None or not bool(torch.isfinite(gr).all()) or gr.abs().max() == 0:
            fail(f"The loss must send a gradient back to the input {name}: the layers before this "
                 "one (and whatever computes the input) learn through it. Is part of the path from "
                 f"{name} computed under torch.no_grad() or detached? Freeze the base *weights* "
                 "(requires_grad=False) instead.",
                 f"dL/d{name}: " + ("None" if gr is None else "not finite" if not
                                   bool(torch.isfinite(gr).all()) else "all zeros"),
                 key=key("input_gradient"))
    if member.matches is not None and not member.matches(layer, parts, tuple(inputs)):
        # The gradient check is valid for every input the row norm does not depend on: in a
        # layer that computes the contract's function, x, the prior, m, the scalars and w. A
        # layer whose forward differs (the forward checks say how) may take its detached norm
        # of something else, so only the gradient flow above is checked for it.
        return
    tol = FLOAT64
    try:
        layer, parts, inputs = _float64_copy(member, cls, seed, inputs)
    except _NoFloat64 as why:
        print(f"Note: your layer does not run in float64 ({why}), so its gradients are checked "
              "with central differences in float32, with float32's tolerances. That is allowed: "
              "the contract promises float32 only.")
        tol = FLOAT32
    with torch.no_grad():
        g = randn(*run(layer, *inputs).shape, seed=seed + 3).to(inputs[0].dtype)
    for i, name in enumerate(member.input_names):
        detail = _input_check(_with_input(layer, inputs, i), inputs[i], g, tol, seed + 10 * i + 10)
        if detail:
            fail(f"The gradient with respect to the input {name} that your layer's backward "
                 f"computes is not the derivative of its own forward ({tol.how}). " + GRAD_HINT,
                 detail, key=key("input_gradient"))
    names = {id(p): n for n, p in layer.named_parameters()}
    for _, p in parts.norm_free():
        detail = _param_check(layer, p, inputs, g, tol)
        if detail:
            fail(f"The gradient with respect to the parameter {names.get(id(p), '?')!r} that your "
                 f"layer's backward computes is not the derivative of its own forward ({tol.how}). "
                 + GRAD_HINT, detail, key=key("gradcheck"))
