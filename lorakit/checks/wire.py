"""The wire between a grader and a probe process: frames of JSON plus tensors, never pickles.

A frame is ``len(header) | header | len(blob) | blob``: the header is UTF-8 JSON, the blob is a
safetensors file holding the frame's tensors. Values travel as JSON trees in which

    {"$t": key, "rg": bool, "fn": str | None}   is a tensor (blob[key]; requires_grad; grad_fn)
    {"$list": [...]} / {"$tuple": [...]}        are sequences
    {"$dict": [[key, value], ...]}              is a dict with str keys
    {"$ref": id, "kind": ..., "name": ...}      is an object that stays on the other side

The grader (the host) decodes what a probe sends with :func:`decode`, which builds nothing but
tensors, numbers, strings and containers: nothing the probe sends is ever executed or
unpickled. Sizes are bounded by ``MAX_HEADER`` and ``MAX_BLOB``.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any, Callable

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

MAX_HEADER = 16 << 20   # bytes of JSON per frame
MAX_BLOB = 256 << 20    # bytes of tensors per frame
_LEN = struct.Struct(">Q")


class WireError(RuntimeError):
    """A frame that breaks the protocol: too big, truncated, or not what was promised."""


# --- frames -------------------------------------------------------------------------------------

def _read_exactly(fd: int, n: int, wait: Callable[[], None] | None) -> bytes:
    chunks, left = [], n
    while left:
        if wait is not None:
            wait()
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise WireError("the other side closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, wait: Callable[[], None] | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """One frame from ``fd``: (header, tensors). ``wait`` blocks until fd is readable or raises."""
    (n,) = _LEN.unpack(_read_exactly(fd, _LEN.size, wait))
    if n > MAX_HEADER:
        raise WireError(f"a header of {n} bytes (limit {MAX_HEADER})")
    try:
        header = json.loads(_read_exactly(fd, n, wait).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError(f"a header that is not JSON: {e}") from None
    (m,) = _LEN.unpack(_read_exactly(fd, _LEN.size, wait))
    if m > MAX_BLOB:
        raise WireError(f"{m} bytes of tensors (limit {MAX_BLOB})")
    blob = _read_exactly(fd, m, wait) if m else b""
    try:
        tensors = load_tensors(blob) if blob else {}
    except Exception as e:  # safetensors raises its own error types
        raise WireError(f"tensors that are not a safetensors file: {e}") from None
    if not isinstance(header, dict):
        raise WireError("a header that is not a JSON object")
    return header, tensors


def write_frame(fd: int, header: dict, tensors: dict[str, torch.Tensor]) -> None:
    head = json.dumps(header, allow_nan=True).encode("utf-8")
    blob = save_tensors(tensors) if tensors else b""
    data = _LEN.pack(len(head)) + head + _LEN.pack(len(blob)) + blob
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --- values -------------------------------------------------------------------------------------

class Encoder:
    """Turns a value into a JSON tree, collecting its tensors; ``other`` encodes anything else
    (an object that stays on this side, as a ``$ref``)."""

    def __init__(self, other: Callable[[Any], dict]):
        self.tensors: dict[str, torch.Tensor] = {}
        self.other = other

    def tensor(self, t: torch.Tensor) -> dict:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = t.detach().to("cpu").clone().contiguous()
        fn = t.grad_fn
        return {"$t": key, "rg": bool(t.requires_grad),
                "fn": None if fn is None else type(fn).__name__}

    def __call__(self, value: Any, depth: int = 0) -> Any:
        if depth > 50:
            raise WireError("a value nested more than 50 levels deep")
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, float)) and type(value) in (int, float):
            return value
        if isinstance(value, torch.Tensor) and not value.is_sparse and value.device.type != "meta":
            return self.tensor(value)
        if type(value) in (list, tuple):
            return {"$" + type(value).__name__: [self(v, depth + 1) for v in value]}
        if type(value) is dict and all(type(k) is str for k in value):
            return {"$dict": [[k, self(v, depth + 1)] for k, v in value.items()]}
        return self.other(value)


def decode(tree: Any, tensors: dict[str, torch.Tensor], ref: Callable[[dict], Any],
           depth: int = 0) -> Any:
    """The value a JSON tree stands for; ``ref`` resolves ``$ref`` nodes. Builds only plain
    values, tensors and containers."""
    if depth > 50:
        raise WireError("a value nested more than 50 levels deep")
    if tree is None or isinstance(tree, (bool, str, int, float)):
        return tree
    if isinstance(tree, list):
        raise WireError("a bare JSON list (sequences travel as $list or $tuple)")
    if not isinstance(tree, dict) or len(tree) == 0:
        raise WireError(f"an unknown value {str(tree)[:80]!r}")
    if "$t" in tree:
        key = tree["$t"]
        if not isinstance(key, str) or key not in tensors:
            raise WireError(f"a tensor {key!r} missing from the frame")
        return tensors[key]
    if "$list" in tree:
        return [decode(v, tensors, ref, depth + 1) for v in _seq(tree["$list"])]
    if "$tuple" in tree:
        return tuple(decode(v, tensors, ref, depth + 1) for v in _seq(tree["$tuple"]))
    if "$dict" in tree:
        return {str(k): decode(v, tensors, ref, depth + 1) for k, v in _pairs(tree["$dict"])}
    if "$ref" in tree or "$host" in tree:
        return ref(tree)
    raise WireError(f"an unknown value {str(tree)[:80]!r}")


def _seq(x: Any) -> list:
    if not isinstance(x, list):
        raise WireError("a sequence that is not a list")
    return x


def _pairs(x: Any) -> list:
    if not isinstance(x, list) or not all(isinstance(p, list) and len(p) == 2 for p in x):
        raise WireError("a dict that is not a list of pairs")
    return x
