"""The probe: the one process of a grading run that holds student code.

    python -m lorakit.checks.probe_server

The grader starts it inside the submission's sandbox and speaks :mod:`lorakit.checks.wire`
over its stdin and stdout. It executes the notebook's setup cells and the student's answer
cells, then does what the grader asks: construct the student's class around layers the grader
sends, call it on the grader's inputs, run backward with the grader's output gradients, report
parameters, gradients, errors and the RNG state. It returns raw data only; every verdict is
computed by the grader (:mod:`lorakit.checks.remote`) in a process that never ran student code.

Anything in this process may be replaced by student code, which can therefore make it return
anything at all. That is harmless: the grader decides from what comes back, as it would from a
layer that computed those numbers.
"""
from __future__ import annotations

import copy
import io
import os
import pickle
import signal
import sys
import traceback
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from . import _probe
from .wire import Encoder, WireError, decode, read_frame, write_frame

CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential)
MAX_TEXT = 4000         # characters of captured output returned per request
MAX_GRAPHS = 1024       # forward calls kept for a later backward (oldest dropped first)


class _Capped(io.TextIOBase):
    """stdout/stderr of student code: kept up to MAX_TEXT characters, the rest dropped."""

    def __init__(self):
        self.parts: list[str] = []
        self.size = 0

    def write(self, s):
        if self.size < MAX_TEXT:
            self.parts.append(str(s)[: MAX_TEXT - self.size])
            self.size += len(self.parts[-1])
        return len(s)

    def take(self) -> str:
        text, self.parts, self.size = "".join(self.parts), [], 0
        return text


def _error(e: BaseException) -> dict:
    tb = traceback.extract_tb(e.__traceback__)
    where = next((f"{f.filename}:{f.lineno}" for f in reversed(tb)
                  if not f.filename.startswith(os.path.dirname(__file__))), "")
    return {"type": type(e).__name__, "message": str(e)[:2000], "where": where,
            "timeout": isinstance(e, _probe.TimedOut)}


class Server:
    warned: list = []

    def __init__(self, fd_in: int, fd_out: int):
        self.fd_in, self.fd_out = fd_in, fd_out
        self.ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.objects: dict[str, Any] = {}      # ref -> object
        self.refs: dict[int, str] = {}         # id(object) -> ref
        self.graphs: OrderedDict[int, tuple] = OrderedDict()
        self.calls = 0
        self.counter = 0
        self.out = _Capped()
        self.step_seconds = _probe.STEP_SECONDS

    # -- references ---------------------------------------------------------------------
    def ref(self, obj: Any) -> str:
        r = self.refs.get(id(obj))
        if r is None:
            self.counter += 1
            r = f"r{self.counter}"
            self.objects[r], self.refs[id(obj)] = obj, r
        return r

    def resolve(self, node: dict, tensors) -> Any:
        r = node.get("$ref") or node.get("$host")
        if r not in self.objects:
            raise WireError(f"unknown object {r!r}")
        return self.objects[r]

    def receive(self, node: Any, tensors) -> None:
        """Register every object the grader sends by value in this request ($host nodes)."""
        if isinstance(node, dict):
            if "$host" in node and node["$host"] not in self.objects:
                obj = pickle.loads(tensors[node["pickle"]].numpy().tobytes())
                self.objects[node["$host"]], self.refs[id(obj)] = obj, node["$host"]
            for v in node.values():
                self.receive(v, tensors)
        elif isinstance(node, list):
            for v in node:
                self.receive(v, tensors)

    def encoder(self, touched: list) -> Encoder:
        def other(obj):
            kind = ("module" if isinstance(obj, nn.Module) else "class" if isinstance(obj, type)
                    else "function" if callable(obj) else "object")
            if kind == "module":
                touched.append(obj)
            t = obj if kind == "class" else type(obj)
            return {"$ref": self.ref(obj), "kind": kind,
                    "name": getattr(obj, "__name__", None) if kind in ("class", "function")
                    else t.__name__,
                    "module": getattr(t, "__module__", "") or ""}
        return Encoder(other)

    def describe(self, roots: list, enc: Encoder) -> list[dict]:
        """The state of every module under ``roots``: what the grader mirrors."""
        seen, out = set(), []
        stack = list(roots)
        while stack:
            m = stack.pop()
            if id(m) in seen or not isinstance(m, nn.Module):
                continue
            seen.add(id(m))
            t = type(m)
            children = [[n, None if c is None else self.ref(c)] for n, c in m._modules.items()]
            stack.extend(c for c in m._modules.values() if c is not None)
            attrs = []
            for k, v in vars(m).items():
                if k.startswith("_") or k == "training":
                    continue
                if v is None or type(v) in (bool, int, float, str) or isinstance(v, torch.Tensor):
                    attrs.append([k, enc(v)])
            out.append({
                "ref": self.ref(m), "type": [t.__module__, t.__qualname__],
                "torch": t.__name__ if t in (nn.Linear, *CONTAINERS) else None,
                "training": bool(m.training), "children": children, "attrs": attrs,
                "params": [[n, None if p is None else enc(p)] for n, p in m._parameters.items()],
                "buffers": [[n, None if b is None else enc(b)] for n, b in m._buffers.items()]})
        return out

    # -- the loop -----------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            try:
                header, tensors = read_frame(self.fd_in)
            except WireError:
                return
            touched: list = []
            enc = self.encoder(touched)
            try:
                for r in header.get("free", []):
                    obj = self.objects.pop(r, None)
                    if obj is not None:
                        self.refs.pop(id(obj), None)
                self.receive(header, tensors)
                self.apply_state(header.get("state", []), tensors)
                if "rng" in header:
                    torch.set_rng_state(tensors[header["rng"]])
                op = getattr(self, "op_" + str(header.get("op")), None)
                if op is None:
                    raise WireError(f"unknown op {header.get('op')!r}")
                reply = op(header, tensors, enc, touched)
            except BaseException as e:  # noqa: BLE001 - everything goes back as data
                if isinstance(e, WireError) and "unknown" not in str(e):
                    return
                reply = {"error": _error(e)}
            try:
                reply["modules"] = self.describe(touched, enc)
                reply["rng"] = enc.tensor(torch.get_rng_state())
                reply["output"] = self.out.take()
                write_frame(self.fd_out, reply, enc.tensors)
            except BaseException as e:  # noqa: BLE001
                write_frame(self.fd_out, {"error": _error(e), "modules": [], "output": ""}, {})

    def apply_state(self, state: list, tensors) -> None:
        """The grader's changes to mirrored modules: values, requires_grad, train/eval."""
        for ref, kind, name, value in state:
            m = self.objects[ref]
            if kind == "training":
                m.training = bool(value)
                continue
            store = m._parameters if kind == "param" else m._buffers
            new = tensors[value["$t"]]
            old = store.get(name)
            if old is None:
                continue
            with torch.no_grad():
                if old.shape == new.shape and old.dtype == new.dtype:
                    old.copy_(new)
                else:
                    old.data = new.clone()
            if kind == "param":
                old.requires_grad_(bool(value["rg"]))

    def run(self, fn, what: str, seconds: float):
        """fn() with warnings recorded and a timer: past ``seconds`` it raises TimedOut."""
        def on_alarm(signum, frame):
            raise _probe.TimedOut(f"{what} took longer than {seconds:g} s")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(0.1, float(seconds)))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        self.warned = [[w.category.__name__, str(w.message)] for w in caught]
        return result

    # -- ops ----------------------------------------------------------------------------
    def op_hello(self, h, tensors, enc, touched):
        self.step_seconds = float(h.get("step_seconds", self.step_seconds))
        return {"torch": torch.__version__, "python": sys.version.split()[0]}

    def op_exec(self, h, tensors, enc, touched):
        code = compile(h["source"], h.get("name", "<cell>"), "exec")
        try:
            self.run(lambda: exec(code, self.ns), f"cell {h.get('name')}", h.get("timeout", 120))
        except BaseException as e:  # noqa: BLE001
            return {"ok": False, "cell_error": _error(e)}
        return {"ok": True}

    def op_lookup(self, h, tensors, enc, touched):
        values = {}
        for name in h["names"]:
            values[name] = enc(self.ns[name]) if name in self.ns else {"$missing": True}
        return {"values": values}

    def op_getattr(self, h, tensors, enc, touched):
        obj = self.objects[h["ref"]]
        value = self.run(lambda: getattr(obj, h["name"]), "getattr", self.step_seconds)
        return {"value": enc(value)}

    def op_deepcopy(self, h, tensors, enc, touched):
        obj = self.objects[h["ref"]]
        return {"value": enc(self.run(lambda: copy.deepcopy(obj), "deepcopy", self.step_seconds))}

    def op_call(self, h, tensors, enc, touched):
        ref = lambda node: self.resolve(node, tensors)  # noqa: E731
        fn = self.objects[h["ref"]]
        args = decode(h["args"], tensors, ref)
        kwargs = decode(h["kwargs"], tensors, ref)
        inputs = [tensors[k] for k in h.get("inputs", [])]
        for key, rg in zip(h.get("inputs", []), h.get("input_grads", []), strict=False):
            if rg and tensors[key].is_floating_point():
                tensors[key].requires_grad_(True)
        leaves = [self.objects[r]._parameters[n] for r, n in h.get("leaves", [])]
        for obj in [fn, *args, *kwargs.values()]:
            if isinstance(obj, nn.Module):
                touched.append(obj)

        def go():
            with torch.set_grad_enabled(bool(h.get("grad"))):
                return fn(*args, **kwargs)
        record = h.get("record")
        if record:
            rec = _probe.BigIntermediates(int(record))
            with rec:
                result = self.run(go, "call", self.step_seconds)
        else:
            result = self.run(go, "call", self.step_seconds)
        value = enc(result)
        outputs = list(enc.tensors)  # every tensor of the result, in the order it was met
        reply = {"value": value, "warnings": self.warned}
        if record:
            reply["recorded"] = [[op, list(shape)] for op, shape in rec.seen]
        if h.get("keep"):  # the grader connected this call to autograd: keep its graph
            outs = _tensors_of(result)
            self.calls += 1
            self.graphs[self.calls] = (outs, inputs, leaves)
            while len(self.graphs) > MAX_GRAPHS:
                self.graphs.popitem(last=False)
            reply["call"] = self.calls
            reply["outputs"] = outputs
        return reply

    def op_backward(self, h, tensors, enc, touched):
        if h["call"] not in self.graphs:
            raise RuntimeError("that forward call is too old: its graph was freed")
        outs, inputs, leaves = self.graphs[h["call"]]
        pairs = [(o, tensors[g]) for o, g in zip(outs, h["grads"], strict=False)
                 if g is not None and o.requires_grad]
        targets = inputs + leaves
        need = [i for i, t in enumerate(targets) if t.requires_grad]
        grads = [None] * len(targets)
        if pairs and need:
            got = self.run(lambda: torch.autograd.grad(
                [o for o, _ in pairs], [targets[i] for i in need], [g for _, g in pairs],
                allow_unused=True, retain_graph=True), "backward", self.step_seconds)
            for i, g in zip(need, got, strict=False):
                grads[i] = g
        elif not pairs:
            raise RuntimeError("element 0 of tensors does not require grad and does not "
                               "have a grad_fn")
        return {"grads": enc(grads), "warnings": self.warned}

    def op_facts(self, h, tensors, enc, touched):
        """Raw facts for the not-a-copy-of-lorakit judge (see _probe.implementation_facts)."""
        ref = lambda node: self.resolve(node, tensors)  # noqa: E731
        cls = self.objects[h["cls"]]
        layer = self.objects[h["layer"]] if h.get("layer") else None
        fns = [decode(f, tensors, ref) for f in h.get("fns", [])]
        return {"facts": _probe.implementation_facts(cls, layer, fns)}


def _tensors_of(value) -> list[torch.Tensor]:
    """The tensors of a result in the order :class:`Encoder` meets them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if type(value) in (list, tuple):
        return [t for v in value for t in _tensors_of(v)]
    if type(value) is dict:
        return [t for v in value.values() for t in _tensors_of(v)]
    return []


def main() -> None:
    fd_in, fd_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    torch.set_num_threads(1)  # probes are tiny: extra threads only spin on a busy machine
    # the first torch.autograd.grad imports torch.fx.experimental.symbolic_shapes (0.3 s):
    # paid here, while the grader runs the notebook, not after its hello
    one = torch.ones(1, requires_grad=True)
    torch.autograd.grad(one * 2, one, torch.ones(1))
    server = Server(fd_in, fd_out)
    sys.stdout = sys.stderr = server.out
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server.serve()


if __name__ == "__main__":
    main()
