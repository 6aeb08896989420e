"""Tools the checks use to probe a student's layer by *behaviour*, never by attribute name.

Everything here is deterministic: inputs come from seeded generators, the global RNG is
forked and seeded before a student's constructor runs, tolerances are explicit.
"""
from __future__ import annotations

import contextlib
import inspect
import signal
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

STEP_SECONDS = 10  # no single call into student code may take longer than this
_hung: set[type] = set()  # classes whose forward already ran out of time: fail fast next time


class CheckFailure(AssertionError):
    """A check failed; the message names the concept and what was observed.

    ``key`` is a stable concept key (e.g. ``"lora.scaling"``) that reports group failures by;
    it never changes when a message is reworded.
    """

    def __init__(self, message: str = "", key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class TimedOut(CheckFailure):
    """Student code ran past its time limit."""


def fail(concept: str, detail: str = "", key: str | None = None) -> None:
    """Raise a CheckFailure: ``concept`` says what is wrong, ``detail`` what was observed."""
    raise CheckFailure(concept + (f"\n  {detail}" if detail else ""), key=key)


SEED_SHIFT = 0  # added to every seed of the checks: hidden tests run them on other inputs


@contextlib.contextmanager
def other_inputs(shift: int) -> Iterator[None]:
    """Run the checks inside on inputs, layers and adapter values drawn with other seeds.

    A hidden test cell repeats its visible checks inside ``other_inputs(n)`` with an ``n`` that
    only the source notebook knows, so that a submission tuned to the visible cells' numbers
    fails. Every seed a check uses goes through :func:`generator` or :func:`seeded`.
    """
    global SEED_SHIFT
    previous, SEED_SHIFT = SEED_SHIFT, SEED_SHIFT + int(shift)
    try:
        yield
    finally:
        SEED_SHIFT = previous


def generator(seed: int) -> torch.Generator:
    """A CPU generator for the check's ``seed`` (shifted inside :func:`other_inputs`)."""
    return torch.Generator().manual_seed(seed + SEED_SHIFT)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG inside, restore the caller's RNG state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + SEED_SHIFT)
        yield


@contextlib.contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    """Turn an endless loop in student code into a CheckFailure (POSIX main thread only)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise TimedOut(
            f"{what[:1].upper()}{what[1:]} took longer than {seconds} s on a tiny input. "
            "Is there an endless loop?")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    except TimedOut as e:
        if getattr(e, "remote", False):  # the probe process's own timer (lorakit.checks.remote)
            on_alarm(None, None)
        raise
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


_reported_warnings: set[str] = set()


@contextlib.contextmanager
def student_code(what: str) -> Iterator[None]:
    """Run student code with a time limit, turning its warnings into plain notes on stdout.

    nbgrader scores a test cell 0 when anything is written to stderr, so a harmless warning from
    a correct solution (a deprecation, say) must not reach stderr. Each distinct warning is
    shown once, on stdout, so the student still sees it.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with time_limit(STEP_SECONDS, what):
                yield
        finally:
            for w in caught:
                text = f"{w.category.__name__}: {w.message}"
                if text not in _reported_warnings:
                    _reported_warnings.add(text)
                    print(f"Note, your code warned: {text}")


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=generator(seed)) * scale


def make_base(in_features: int, out_features: int, *, bias: bool = True, seed: int = 0) -> nn.Linear:
    with seeded(seed):
        return nn.Linear(in_features, out_features, bias=bias)


def describe_call(cls: type, kwargs: dict) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{cls.__name__}(base_layer, {args})"


def build(cls: type, base: nn.Linear, *, seed: int = 0, **kwargs) -> nn.Module:
    """Construct the student's layer around ``base`` with a seeded RNG; explain any crash."""
    what = describe_call(cls, kwargs) + f" on a {base.in_features}->{base.out_features} layer"
    try:
        with seeded(seed), student_code(what):
            layer = cls(base, **kwargs)
    except CheckFailure:
        raise
    except Exception as e:
        fail("Your layer could not be constructed.", f"{what} raised {type(e).__name__}: {e}")
    if not isinstance(layer, nn.Module):
        fail("Your layer must be an nn.Module.", f"{what} returned a {type(layer).__name__}")
    return layer


def call(fn: Callable, *args, what: str):
    """Call student code with a time limit; a crash becomes a CheckFailure that says where."""
    try:
        with student_code(what):
            return fn(*args)
    except CheckFailure:
        raise
    except Exception as e:
        fail(f"{what} raised {type(e).__name__}: {e}")


def forward(layer: nn.Module, x: torch.Tensor, in_f: int, out_f: int) -> torch.Tensor:
    what = f"Forward on x of shape {tuple(x.shape)} ({in_f}->{out_f} layer)"
    if type(layer) in _hung:
        fail(f"{what} was not run: an earlier call to this forward took longer than "
             f"{STEP_SECONDS} s. Is there an endless loop?")
    try:
        y = call(layer, x, what=what)
    except TimedOut:
        _hung.add(type(layer))
        raise
    if not isinstance(y, torch.Tensor):
        fail("forward must return a tensor.", f"{what} returned {type(y).__name__}")
    return y


def trainable(layer: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in layer.named_parameters() if p.requires_grad]


def find_base(layer: nn.Module) -> nn.Linear:
    base = getattr(layer, "base_layer", None)
    if not isinstance(base, nn.Linear):
        fail("The layer must keep the pretrained layer as self.base_layer (an nn.Linear).",
             f"found self.base_layer = {type(base).__name__}")
    return base


@dataclass
class Factors:
    """The adapter matrices found by shape, in nn.Linear orientation: A (r, in), B (out, r)."""
    A: torch.Tensor
    B: torch.Tensor
    A_param: nn.Parameter
    B_param: nn.Parameter


def find_factors(layer: nn.Module, in_f: int, out_f: int, rank: int) -> Factors:
    """Find A and B among the trainable parameters by shape alone (either orientation).

    Needs in_f, out_f and rank pairwise different so that every shape is unambiguous.
    """
    assert len({in_f, out_f, rank}) == 3, "probe layers need distinct in, out and rank"
    params = trainable(layer)
    A = B = None
    for _, p in params:
        if tuple(p.shape) == (rank, in_f):
            A = (p, p.detach())
        elif tuple(p.shape) == (in_f, rank):
            A = (p, p.detach().T)
        elif tuple(p.shape) == (out_f, rank):
            B = (p, p.detach())
        elif tuple(p.shape) == (rank, out_f):
            B = (p, p.detach().T)
    if A is None or B is None:
        shapes = [tuple(p.shape) for _, p in params] or "none"
        fail("Could not find the two adapter matrices among the trainable parameters.",
             f"For a {in_f}->{out_f} layer with rank={rank} expected one of shape ({rank}, {in_f}) "
             f"or ({in_f}, {rank}) (A) and one of shape ({out_f}, {rank}) or ({rank}, {out_f}) (B); "
             f"trainable parameter shapes: {shapes}")
    return Factors(A=A[1], B=B[1], A_param=A[0], B_param=B[0])


@torch.no_grad()
def randomize_adapters(layer: nn.Module, seed: int, scale: float = 0.5) -> None:
    """Give every trainable parameter seeded random values (so B is no longer zero)."""
    g = generator(seed)
    for _, p in trainable(layer):
        p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p) * scale)


@torch.no_grad()
def effective_delta(layer: nn.Module, base: nn.Linear, in_f: int, out_f: int) -> torch.Tensor:
    """The (out, in) matrix M with layer(x) - base(x) = x M^T, read off by feeding the identity."""
    eye = torch.eye(in_f)
    return (forward(layer, eye, in_f, out_f) - base(eye)).T


RECORDING: list["BigIntermediates"] = []  # the active recorders, innermost last


class BigIntermediates(TorchDispatchMode):
    """Records every non-view op output with at least ``limit`` elements."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.seen: list[tuple[str, tuple[int, ...]]] = []

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # False: torch leaves __torch_dispatch__ unwrapped. Its wrapper (torch._disable_dynamo)
        # only matters under torch.compile, which a check never runs, and imports torch._dynamo
        # the first time a mode dispatches: a second of CPU in every probe (tests/checks/
        # test_remote.py checks that a probe never imports it).
        return False

    # a layer that lives in a probe process records there: it reads RECORDING
    def __enter__(self):
        RECORDING.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        RECORDING.remove(self)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not getattr(func, "is_view", False):
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor) and t.numel() >= self.limit:
                    self.seen.append((str(func.overloadpacket.__name__), tuple(t.shape)))
        return out


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


# --- running a set of checks --------------------------------------------------------------------

def run_checks(checks: dict[str, Callable], cls, verbose: bool = True) -> dict[str, str | None]:
    """Run ``check(cls)`` for every named check and print a PASS/FAIL table; never raises.

    Returns {check name: None if passed, else the failure message}.
    """
    results: dict[str, str | None] = {}
    for name, check in checks.items():
        try:
            check(cls)
            results[name] = None
        except AssertionError as e:
            results[name] = str(e)
    if verbose and results:
        width = max(map(len, results))
        for name, msg in results.items():
            mark = "PASS" if msg is None else "FAIL"
            print(f"{mark}  {name:<{width}}"
                  + ("" if msg is None else "  " + msg.replace("\n", "\n" + " " * (width + 8))))
    return results


# --- a submission must implement the layer, not borrow lorakit's --------------------------------

def _code_objects(fn) -> list[types.CodeType]:
    code = getattr(fn, "__code__", None)
    out, stack = [], [code] if code else []
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return out


def borrows_lorakit(fn) -> str | None:
    """The first global name ``fn`` uses that refers to lorakit or its reference layers."""
    g = getattr(fn, "__globals__", {})
    for code in _code_objects(fn):
        for name in code.co_names:
            obj = g.get(name)
            mod = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "")
            if isinstance(mod, str) and (mod == "lorakit" or mod.startswith("lorakit.layers")):
                return name
    return None


def implementation_facts(cls, layer: nn.Module | None, extra_fns=()) -> dict:
    """Raw facts about where ``cls`` (and ``extra_fns``, e.g. a merge function, and the
    submodules of ``layer``) come from: which lorakit reference layer it subclasses, which
    lorakit names its functions use, which lorakit layers it contains. Plain data, so that a
    grader can judge them in another process (:func:`judge_own_implementation`)."""
    from ..layers import AdapterLinear

    facts: dict = {"subclass": None, "borrowed": [], "inside": []}
    if isinstance(cls, type) and issubclass(cls, AdapterLinear):
        facts["subclass"] = (f"{cls.__name__} subclasses "
                             f"{AdapterLinear.__module__}.{AdapterLinear.__name__}")
    fns = [f for k in (cls.__mro__ if isinstance(cls, type) else ())
           if k.__module__.split(".")[0] not in ("torch", "builtins")
           for f in vars(k).values() if inspect.isfunction(f)]
    fns += [f for f in extra_fns if f is not None]
    for f in fns:
        name = borrows_lorakit(f)
        if name:
            facts["borrowed"].append([str(getattr(f, "__qualname__", f)), name])
    if layer is not None:
        facts["inside"] = [n for n, m in layer.named_modules() if isinstance(m, AdapterLinear)]
    return facts


def judge_own_implementation(facts: dict, exercise: str, note: str = "") -> None:
    msg = (f"This exercise is to implement {exercise} yourself{note}: the submission may not "
           "subclass or call lorakit's reference layers.")
    if facts.get("subclass"):
        fail(msg, facts["subclass"], key="own_implementation")
    for qualname, name in facts.get("borrowed", []):
        fail(msg, f"{qualname} uses {name} from lorakit", key="own_implementation")
    if facts.get("inside"):
        fail(msg, f"the layer contains lorakit layers: {facts['inside']}", key="own_implementation")


def assert_own_implementation(cls, exercise: str, build_layer: Callable[[], nn.Module],
                              extra_fns: tuple = (), note: str = "") -> None:
    """Fail when ``cls`` (or ``extra_fns``, e.g. a merge function) subclasses, calls or contains
    lorakit's reference layers (all of which subclass ``AdapterLinear``).

    When ``cls`` lives in a probe process (grading, :mod:`lorakit.checks.remote`) the facts
    come from there and from the answer cells' source; the verdict is always taken here."""
    gather = getattr(cls, "implementation_facts", None)
    if gather is None:
        gather = lambda layer, fns: implementation_facts(cls, layer, fns)  # noqa: E731
    judge_own_implementation(gather(None, extra_fns), exercise, note)
    judge_own_implementation(gather(build_layer(), ()), exercise, note)
