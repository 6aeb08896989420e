"""The grader's side of a probe: student objects that live in another process.

A :class:`ProbeSession` runs :mod:`lorakit.checks.probe_server` (in grading: inside the
submission's sandbox) and hands the checks stand-ins for what the student defined:

- a :class:`RemoteCallable` for a class or function: calling it calls the original there;
- a :class:`Shadow` for a module instance: an ``nn.Module`` here whose parameters, buffers,
  submodules, plain attributes and train/eval flags mirror the probe's, and whose ``forward``
  runs there. A submodule that is exactly ``nn.Linear`` is mirrored as a real ``nn.Linear``
  (so ``layer.base_layer(x)`` is computed here); an ``nn.Linear`` the grader passed in *is*
  its own mirror (the probe gets a copy, and changes come back to it).

So the checks of :mod:`lorakit.checks` run unchanged in the grader's process: every number
they judge either comes from their own computation or arrived as a plain tensor (the wire
carries JSON and safetensors, never pickles, from the probe). Autograd crosses the wire: an
output of a remote call is the output of a :class:`_RemoteCall` function whose backward asks
the probe for the gradients of that call's inputs and parameters. The global CPU RNG is part
of the mirrored state, so seeded construction and dropout behave as in one process.
"""
from __future__ import annotations

import ast
import builtins
import pickle
import select
import subprocess
import sys
import time
import warnings
import weakref
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from . import _probe
from .wire import Encoder, WireError, decode, read_frame, write_frame

SERVER = [sys.executable, "-m", "lorakit.checks.probe_server"]
SPARE_SECONDS = 3.0     # the host waits this much longer than the probe's own timer
STARTUP_SECONDS = 120   # for the probe to import torch and answer its first request


class ProbeError(_probe.CheckFailure):
    """The probe process broke the protocol, died or hung (the student code in it did): the
    check fails, and the probe is restarted for the next one."""


def _exception(err: dict) -> Exception:
    """An exception here for one raised in the probe, never a BaseException that stops us."""
    if err.get("timeout"):
        e = _probe.TimedOut(str(err.get("message", "timed out")))
        e.remote = True
        return e
    name, message = str(err.get("type", "Exception")), str(err.get("message", ""))
    cls = getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)) or issubclass(cls, OSError):
        cls = type(name if name.isidentifier() else "RemoteError", (Exception,), {})
    try:
        return cls(message)
    except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError needs five arguments
        return RuntimeError(f"{name}: {message}")


# --- the session --------------------------------------------------------------------------------

class ProbeSession:
    """One probe process and the mirrors of its objects.

    ``command`` starts the server (default: this Python, unsandboxed — for tests and for a
    student's own machine; the grader passes a sandboxed command). Cells given to
    :meth:`exec` are replayed if the probe has to be restarted after a hang.
    """

    def __init__(self, command: list[str] | None = None, env: dict | None = None,
                 step_seconds: float | None = None, sources: dict[str, str] | None = None):
        self.command = command or SERVER
        self.env = env
        self.step_seconds = step_seconds
        self.answer_sources = dict(sources or {})   # grade_id -> source, for static facts
        self.cells: list[tuple[str, str, float]] = []
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        self.restarts = 0
        self.output: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self.mirrors: dict[str, weakref.ref] = {}   # ref -> module mirrored here
        self.local: dict[int, str] = {}             # id(host object) -> ref
        self.sig: dict[tuple, object] = {}          # (ref, kind, name) -> what it was at the last sync
        self.free: list[str] = []
        self.pinned: list[nn.Module] = []
        self.host_ids = 0
        self.classes: dict[tuple, type] = {}

    # -- process ------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the probe process, unless it runs: it imports torch and lorakit while the
        caller does other work (the grader runs the notebook meanwhile). ``start`` greets it."""
        if self.proc is not None:
            return
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=self.env, close_fds=True)
        self.generation += 1
        self._reset()

    def start(self) -> None:
        """Launch the probe (if ``launch`` did not), greet it, replay the cells it ran."""
        self.launch()
        step = self.step_seconds or _probe.STEP_SECONDS
        self._request({"op": "hello", "step_seconds": max(0.5, step - 0.5)}, {}, STARTUP_SECONDS)
        for source, name, timeout in self.cells:
            self._request({"op": "exec", "source": source, "name": name, "timeout": timeout},
                          {}, timeout + SPARE_SECONDS)

    def close(self) -> None:
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> "ProbeSession":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _broken(self, why: str) -> ProbeError:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self.proc = None
        return ProbeError("The process running your code stopped answering: " + why + ".")

    def _request(self, header: dict, tensors: dict, timeout: float | None = None):
        if self.proc is None:
            if self.restarts >= 3:
                raise ProbeError("the probe process was restarted 3 times; giving up")
            self.restarts += 1
            self.start()
        if self.free:
            header["free"], self.free = self.free, []
        deadline = time.monotonic() + (timeout or (self.step_seconds or _probe.STEP_SECONDS)
                                       + SPARE_SECONDS)
        fd_out = self.proc.stdout.fileno()

        def wait():
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd_out], [], [], left)[0]:
                raise self._broken("the probe did not answer in time")
        try:
            write_frame(self.proc.stdin.fileno(), header, tensors)
            reply, got = read_frame(fd_out, wait)
        except (WireError, OSError) as e:
            raise self._broken(f"the probe process broke the protocol or died: {e}") from None
        except BaseException:  # e.g. the checks' own time limit, mid-read: the stream is lost
            self._broken("interrupted")
            raise
        if reply.get("output"):
            self.output.append(str(reply["output"]))
        try:
            self._apply(reply.get("modules", []), got)
            if "rng" in reply and header.get("op") == "call":
                torch.set_rng_state(_tensor(reply["rng"], got))
        except (WireError, KeyError, TypeError, ValueError, RuntimeError) as e:
            raise self._broken(f"the probe sent a state that does not fit: {e}") from None
        if "error" in reply:
            raise _exception(reply["error"] if isinstance(reply["error"], dict) else {})
        return reply, got

    # -- values -------------------------------------------------------------------------
    def _encoder(self) -> Encoder:
        def other(obj):
            if isinstance(obj, (Shadow, RemoteCallable)):
                return {"$ref": obj._ref_checked(self)}
            ref = self.local.get(id(obj))
            if ref is not None:
                return {"$ref": ref}
            self.host_ids += 1
            ref = f"h{self.host_ids}"
            try:
                data = pickle.dumps(obj)
            except Exception as e:  # noqa: BLE001
                raise TypeError(f"cannot send a {type(obj).__name__} to the probe: {e}") from None
            key = f"p{self.host_ids}"
            enc.tensors[key] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            if isinstance(obj, nn.Module):
                self._adopt(obj, ref)
            return {"$host": ref, "pickle": key}
        enc = Encoder(other)
        return enc

    def _adopt(self, module: nn.Module, ref: str) -> None:
        """A module of ours that the probe now holds a copy of: it mirrors that copy."""
        self.local[id(module)] = ref
        self.mirrors[ref] = weakref.ref(module)
        object.__setattr__(module, "_probe_ref", (self.generation, ref))
        weakref.finalize(module, self._forget, ref, id(module), self.generation)
        self._mark_synced(ref, module)

    def _decode(self, tree, tensors):
        return decode(tree, tensors, lambda node: self._object(node))

    def _object(self, node: dict):
        if not isinstance(node.get("$ref"), str):
            raise WireError("an object reference that is not a string")
        ref, kind = node["$ref"], node.get("kind")
        if ref in self.mirrors and self.mirrors[ref]() is not None:
            return self.mirrors[ref]()
        if kind == "module":
            raise WireError(f"a module {ref} that the probe did not describe")
        return RemoteCallable(self, ref, str(node.get("name")), str(node.get("module", "")),
                              kind)

    # -- mirrored state -----------------------------------------------------------------
    def _apply(self, descriptions: list, tensors) -> None:
        """Make our mirrors match the probe's modules (children first, so they can be linked)."""
        by_ref = {d["ref"]: d for d in descriptions}
        done: set[str] = set()
        self.pinned = []  # mirrors live until the reply's value holds them

        def build(ref: str) -> nn.Module:
            if ref in done or ref not in by_ref:
                m = self.mirrors.get(ref)
                if m is None or m() is None:
                    raise WireError(f"a child module {ref} that the probe did not describe")
                return m()
            done.add(ref)
            d = by_ref[ref]
            module = self._mirror_for(d)
            for name, child in d["children"]:
                module._modules[name] = None if child is None else build(child)
            for kind, store in (("param", module._parameters), ("buffer", module._buffers)):
                entries = d["params" if kind == "param" else "buffers"]
                names = {n for n, _ in entries}
                for gone in [n for n in store if n not in names]:
                    del store[gone]
                for name, tree in entries:
                    if tree is None:
                        store[name] = None
                        continue
                    value = _tensor(tree, tensors)
                    old = store.get(name)
                    if tree.get("fn"):  # not a leaf there (written in place with history)
                        store[name] = _with_history(value, tree["fn"])
                    elif (old is not None and old.grad_fn is None and old.shape == value.shape
                          and old.dtype == value.dtype):
                        with torch.no_grad():
                            old.data.copy_(value)
                        if kind == "param" and old.requires_grad != bool(tree["rg"]):
                            old.requires_grad_(bool(tree["rg"]))
                    elif kind == "param":
                        store[name] = nn.Parameter(value, requires_grad=bool(tree["rg"]))
                    else:
                        store[name] = value
            for name, tree in d["attrs"]:
                value = self._decode(tree, tensors)
                if isinstance(value, torch.Tensor) and isinstance(tree, dict) and tree.get("fn"):
                    value = _with_history(value, tree["fn"])
                if name not in module._parameters and name not in module._modules:
                    module.__dict__[name] = value
            module.training = bool(d["training"])
            self._mark_synced(ref, module)
            return module

        for ref in by_ref:
            self.pinned.append(build(ref))

    def _mirror_for(self, d: dict) -> nn.Module:
        ref = d["ref"]
        existing = self.mirrors.get(ref)
        if existing is not None and existing() is not None:
            return existing()
        kind = d.get("torch")
        if kind == "Linear":
            module = nn.Linear.__new__(nn.Linear)
            nn.Module.__init__(module)
        elif kind in ("ModuleList", "ModuleDict", "Sequential"):
            module = getattr(nn, kind)()
        else:
            module = self._shadow_class(*d["type"]).__new__(self._shadow_class(*d["type"]))
            nn.Module.__init__(module)
            object.__setattr__(module, "_session", self)
        object.__setattr__(module, "_probe_ref", (self.generation, ref))
        self.mirrors[ref] = weakref.ref(module)
        self.local[id(module)] = ref
        weakref.finalize(module, self._forget, ref, id(module), self.generation)
        return module

    def _forget(self, ref: str, ident: int, generation: int) -> None:
        """A mirror died here: the probe may drop its object, and its id may be reused."""
        if generation == self.generation:
            self.free.append(ref)
            self.mirrors.pop(ref, None)
            if self.local.get(ident) == ref:
                del self.local[ident]

    def _shadow_class(self, module: str, qualname: str) -> type:
        key = (module, qualname)
        if key not in self.classes:
            name = qualname.rsplit(".", 1)[-1]
            self.classes[key] = type(name if name.isidentifier() else "Layer", (Shadow,),
                                     {"__module__": module, "__qualname__": qualname})
        return self.classes[key]

    def _mark_synced(self, ref: str, module: nn.Module) -> None:
        for kind, store in (("param", module._parameters), ("buffer", module._buffers)):
            for name, t in store.items():
                if t is not None:
                    self.sig[(ref, kind, name)] = _Signature(t)
        self.sig[(ref, "training", "")] = (module.training,)

    def _changes(self, enc: Encoder) -> list:
        """What the checks changed in our mirrors since the last sync, for the probe."""
        out = []
        for ref, wr in list(self.mirrors.items()):
            module = wr()
            if module is None:
                continue
            for kind, store in (("param", module._parameters), ("buffer", module._buffers)):
                for name, t in store.items():
                    last = self.sig.get((ref, kind, name))
                    if t is not None and not (isinstance(last, _Signature) and last.same(t)):
                        out.append([ref, kind, name, enc.tensor(t)])
                        self.sig[(ref, kind, name)] = _Signature(t)
            if self.sig.get((ref, "training", "")) != (module.training,):
                out.append([ref, "training", "", module.training])
                self.sig[(ref, "training", "")] = (module.training,)
        return out

    # -- operations ---------------------------------------------------------------------
    def exec(self, source: str, name: str = "<cell>", timeout: float = 120) -> dict:
        """Run a cell in the probe (and again after any restart). Returns {"ok", "cell_error"}."""
        self.cells.append((source, name, timeout))
        reply, _ = self._request({"op": "exec", "source": source, "name": name,
                                  "timeout": timeout}, {}, timeout + SPARE_SECONDS)
        return reply

    def lookup(self, names: Iterable[str]) -> dict[str, Any]:
        """The probe's values of global ``names`` (missing ones are left out)."""
        reply, got = self._request({"op": "lookup", "names": list(names)}, {})
        return {n: self._decode(v, got) for n, v in reply["values"].items()
                if not (isinstance(v, dict) and v.get("$missing"))}

    def getattr(self, ref: str, name: str):
        reply, got = self._request({"op": "getattr", "ref": ref, "name": name}, {})
        return self._decode(reply["value"], got)

    def deepcopy(self, ref: str):
        reply, got = self._request({"op": "deepcopy", "ref": ref}, {})
        return self._decode(reply["value"], got)

    def facts(self, cls_ref: str, layer, fns) -> dict:
        enc = self._encoder()
        header = {"op": "facts", "cls": cls_ref,
                  "layer": None if layer is None else layer._ref_checked(self),
                  "fns": [enc(f) for f in fns if f is not None]}
        header["state"] = self._changes(enc)
        reply, _ = self._request(header, enc.tensors)
        facts = reply["facts"]
        if not isinstance(facts, dict):
            raise ProbeError("the probe sent facts that are not a dict")
        return facts

    def call(self, ref: str, args: tuple, kwargs: dict):
        """obj(*args, **kwargs) in the probe; autograd connects its outputs to its inputs and
        to the parameters of every module involved."""
        modules = [m for m in (self.mirrors.get(ref, lambda: None)(), *args, *kwargs.values())
                   if isinstance(m, nn.Module)]
        leaves, names = [], []
        for m in modules:
            for sub in m.modules():
                sub_ref = self.local.get(id(sub))
                for n, p in sub._parameters.items():
                    if sub_ref is not None and p is not None:
                        leaves.append(p)
                        names.append([sub_ref, n])
        inputs = [t for t in _flat((args, kwargs)) if isinstance(t, torch.Tensor)]
        grad = torch.is_grad_enabled()
        record = _probe.RECORDING[-1] if _probe.RECORDING else None
        spec = {"ref": ref, "args": args, "kwargs": kwargs, "names": names, "grad": grad,
                "record": record}
        if grad and any(t.requires_grad for t in inputs + leaves):
            box: dict = {}
            outs = _RemoteCall.apply(self, spec, box, len(inputs), *inputs, *leaves)
            connected = {**box["tensors"], **dict(zip(box["outputs"], outs, strict=False))}
            return self._decode(box["tree"], connected)
        return self._call(spec, [False] * len(inputs), None)[0]

    def _call(self, spec: dict, input_grads: list[bool], box: dict):
        with _disable_current_modes():
            enc = self._encoder()
            args, kwargs = enc(tuple(spec["args"])), enc(dict(spec["kwargs"]))
            inputs = [k for k in enc.tensors if k.startswith("t")]
            header = {"op": "call", "ref": spec["ref"], "args": args, "kwargs": kwargs,
                      "inputs": inputs, "input_grads": input_grads, "leaves": spec["names"],
                      "grad": spec["grad"], "keep": box is not None,
                      "record": spec["record"].limit if spec["record"] else None}
            header["state"] = self._changes(enc)
            enc.tensors["rng"] = torch.get_rng_state()
            header["rng"] = "rng"
            reply, got = self._request(header, enc.tensors)
        for category, text in reply.get("warnings", []):
            cls = getattr(builtins, str(category), None)
            if not (isinstance(cls, type) and issubclass(cls, Warning)):
                cls = UserWarning
            warnings.warn(str(text), cls, stacklevel=3)
        if spec["record"] is not None:
            spec["record"].seen.extend((str(op), tuple(shape)) for op, shape in reply["recorded"])
        if box is not None and "call" in reply:
            box.update(tree=reply["value"], tensors=got, call=reply["call"],
                       outputs=reply.get("outputs", []))
            return None
        return self._decode(reply["value"], got), reply

    def backward(self, call: int, grads: list) -> list:
        enc = self._encoder()
        header = {"op": "backward", "call": call,
                  "grads": [None if g is None else enc.tensor(g)["$t"] for g in grads]}
        header["state"] = self._changes(enc)
        reply, got = self._request(header, enc.tensors)
        return self._decode(reply["grads"], got)


def _tensor(tree: dict, tensors: dict) -> torch.Tensor:
    key = tree["$t"] if isinstance(tree, dict) else None
    if key not in tensors:
        raise WireError(f"tensor {key!r} missing")
    return tensors[key]


class _Signature:
    """What a mirrored tensor was at the last sync: identity, dtype, shape, requires_grad and
    its values (a copy: edits through ``.data`` bump no version counter)."""

    def __init__(self, t: torch.Tensor):
        self.meta = (id(t), t.dtype, tuple(t.shape), t.requires_grad)
        self.values = t.detach().clone()

    def same(self, t: torch.Tensor) -> bool:
        return (self.meta == (id(t), t.dtype, tuple(t.shape), t.requires_grad)
                and torch.equal(self.values, t.detach()))



def _with_history(value: torch.Tensor, fn_name: str) -> torch.Tensor:
    """A stand-in for a tensor that carries autograd history in the probe."""
    name = fn_name[: -len("Backward0")] if fn_name.endswith("Backward0") else fn_name
    cls = type(name if name.isidentifier() else "Remote", (_History,), {})
    with torch.enable_grad():  # replies may be read inside a _RemoteCall's forward
        return cls.apply(value.detach().requires_grad_(True))


class _History(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g


def _flat(value) -> list:
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flat(v)]
    return [value]


def _tensor_nodes(tree) -> dict[str, dict]:
    """{key: node} for every tensor node of a JSON tree."""
    if isinstance(tree, dict):
        if "$t" in tree:
            return {tree["$t"]: tree}
        return {k: n for v in tree.values() for k, n in _tensor_nodes(v).items()}
    if isinstance(tree, list):
        return {k: n for v in tree for k, n in _tensor_nodes(v).items()}
    return {}


class _RemoteCall(torch.autograd.Function):
    """One call in the probe as one autograd node: forward sends the inputs and parameters,
    backward sends the output gradients and gets the inputs' and parameters' back."""

    @staticmethod
    def forward(ctx, session, spec, box, n_inputs, *tensors):
        input_grads = list(ctx.needs_input_grad[4:4 + n_inputs])
        session._call(spec, input_grads, box)
        outs = []
        for key in box["outputs"]:
            outs.append(box["tensors"][key].clone())
        ctx.session, ctx.call, ctx.n = session, box["call"], len(tensors)
        ctx.generation = session.generation
        nodes = _tensor_nodes(box["tree"])
        for key, out in zip(box["outputs"], outs, strict=False):
            if not nodes[key].get("rg"):  # it needs no gradient there: none here either
                ctx.mark_non_differentiable(out)
        return tuple(outs) or (torch.zeros(()),)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        if ctx.generation != ctx.session.generation:
            raise RuntimeError("the probe process was restarted since this forward call")
        got = ctx.session.backward(ctx.call, list(grads))
        got = list(got) + [None] * (ctx.n - len(got))
        return (None, None, None, None, *got[: ctx.n])


# --- stand-ins ----------------------------------------------------------------------------------

class RemoteCallable:
    """A class, function or other object that lives in the probe; calling it calls it there."""

    def __init__(self, session: ProbeSession, ref: str, name: str, module: str, kind: str):
        self._session, self._ref, self._generation = session, ref, session.generation
        self.__name__ = self.__qualname__ = name
        self.__module__ = module
        self.kind = kind

    def _ref_checked(self, session: ProbeSession) -> str:
        if session is not self._session or self._generation != session.generation:
            raise ProbeError(f"{self.__name__} belongs to a probe process that was restarted")
        return self._ref

    def __call__(self, *args, **kwargs):
        return self._session.call(self._ref_checked(self._session), args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._session.getattr(self._ref_checked(self._session), name)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.__name__} in the probe>"

    def implementation_facts(self, layer, fns) -> dict:
        """Facts for :func:`lorakit.checks._probe.judge_own_implementation`: the probe's, plus
        what the answer cells' source says (names imported from lorakit)."""
        facts = self._session.facts(self._ref_checked(self._session), layer, fns)
        names = {self.__name__, *(getattr(f, "__name__", "") for f in fns if f is not None)}
        for grade_id, source in self._session.answer_sources.items():
            if names & _defines(source):
                for name in lorakit_layers_used(source):
                    facts.setdefault("borrowed", []).append([f"answer cell {grade_id}", name])
        return facts


def _defines(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}


def lorakit_layers_used(source: str) -> list[str]:
    """lorakit's reference layers (subclasses of AdapterLinear) that a cell's source imports or
    reaches as ``lorakit.X`` / ``lorakit.layers.X``: read from the source, not from the probe."""
    import lorakit
    from lorakit import layers
    from lorakit.layers import AdapterLinear

    def is_layer(module, name: str) -> bool:
        obj = getattr(module, name, None)
        return isinstance(obj, type) and issubclass(obj, AdapterLinear)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lorakit":
            found += [f"{node.module}.{a.name}" for a in node.names
                      if node.module.startswith("lorakit.layers")
                      or (node.module == "lorakit" and (a.name == "layers"
                                                        or is_layer(lorakit, a.name)))]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = {"lorakit": lorakit, "layers": layers}.get(node.value.id)
            if module is not None and is_layer(module, node.attr):
                found.append(f"{node.value.id}.{node.attr}")
    return found


class Shadow(nn.Module):
    """The mirror of a module that lives in the probe; ``forward`` runs there."""

    _session: ProbeSession

    def _ref_checked(self, session: ProbeSession) -> str:
        generation, ref = self.__dict__["_probe_ref"]
        if session is not self._session or generation != session.generation:
            raise ProbeError(f"this {type(self).__name__} belongs to a probe process that was "
                             "restarted")
        return ref

    def forward(self, *args, **kwargs):
        return self._session.call(self._ref_checked(self._session), args, kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or "_session" not in self.__dict__:
                raise
            return self._session.getattr(self._ref_checked(self._session), name)

    def __deepcopy__(self, memo):
        return self._session.deepcopy(self._ref_checked(self._session))

    def extra_repr(self) -> str:
        return "in the probe"


def resolve_names(session: ProbeSession, names: Iterable[str], local: dict) -> dict:
    """Values for ``names``: ``local`` first (the grader's own imports), else the probe's."""
    missing = [n for n in names if n not in local and not hasattr(builtins, n)]
    found = session.lookup(missing) if missing else {}
    return {**{n: local[n] for n in names if n in local}, **found}


__all__ = ["ProbeSession", "ProbeError", "Shadow", "RemoteCallable", "resolve_names",
           "lorakit_layers_used", "SERVER"]
