"""AST depth of code: one structure prior per byte token for HyLoRADA v2 (notebook 07).

Nothing is downloaded: code comes from ``lorakit.lm.corpus`` (standard-library files of CPython
3.11.7 that ship with lorakit).

**AST depth of code.** For each byte of a Python source, the depth of the innermost AST node
whose source span contains that byte (``ast_depths``): the module is depth 0, a top-level
statement 1, its sub-expressions 2, 3, ...; a function body one deeper than its ``def``.
Bytes that no node covers (blank lines, comments between statements, the indentation before a
statement) get the depth of the innermost node around them.

Alignment with the tokenizer: ``lorakit.lm.corpus`` tokenizes by UTF-8 *bytes*, and Python's AST
reports ``col_offset``/``end_col_offset`` as UTF-8 *byte* offsets within a line (not character
offsets; ``'é'`` is two bytes, and both get the same depth). So a node spanning line l1, byte c1
to line l2, byte c2 covers token ids ``line_start[l1] + c1 ... line_start[l2] + c2 − 1``, where
``line_start`` are the byte offsets after each newline as Python's tokenizer sees them
(``\\n``, ``\\r\\n`` or a lone ``\\r``; a form feed is not a newline). ``ast_depths(s)[i]`` is
the depth of token ``corpus.encode(s)[i]``: one depth per token, same length.

Nodes without a position (``arguments``, ``comprehension``, operators, contexts) do not count
as a level. Inside f-strings Python 3.8–3.11 give the literal parts the span of the whole
string; the expressions inside keep their own spans, so they still come out deeper.

Honest caveat for language modelling: the depth is read off the parse of the *whole* file, so
the depth of byte t can tell something about bytes after t (a space inside ``a + b`` sits in the
BinOp, a trailing space after ``a`` does not). A model that sees depth(t) while predicting byte
t + 1 gets a little information from the future; an incremental parser would be needed for a
strictly causal prior. Notebook 07 says so beside its numbers and runs a positions-only control.

``load_tokens_with_depths`` returns the same tokens as ``corpus.load_tokens`` (same files, same
order, same ``"\\n\\n"`` separators, depth 0) with their depths; ``get_batch_with_depths`` cuts
aligned windows; ``depth_types`` clamps depths into the type ids a ``StructureEncoder`` with
``num_structure_types`` rows takes.
"""
from __future__ import annotations

import ast
from typing import Sequence

import numpy as np
import torch

from ..lm import corpus

__all__ = ["line_starts", "ast_depths", "depth_types", "load_tokens_with_depths",
           "get_batch_with_depths"]


def line_starts(data: bytes) -> list[int]:
    """Byte offset where each line starts, with Python's newlines (\\n, \\r\\n, lone \\r)."""
    starts, i, n = [0], 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x0A:                                      # \n
            starts.append(i + 1)
        elif c == 0x0D:                                    # \r or \r\n
            if i + 1 < n and data[i + 1] == 0x0A:
                i += 1
            starts.append(i + 1)
        i += 1
    return starts


def _span(node: ast.AST, starts: list[int], size: int) -> tuple[int, int] | None:
    lineno, end = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
    if lineno is None or end is None or node.end_col_offset is None:
        return None
    if lineno > len(starts) or end > len(starts):
        return None
    s = starts[lineno - 1] + node.col_offset
    e = starts[end - 1] + node.end_col_offset
    s, e = max(0, min(s, size)), max(0, min(e, size))
    return (s, e) if e > s else None


def ast_depths(source: str, on_error: str = "raise") -> torch.Tensor:
    """Depth of the innermost AST node containing each UTF-8 byte of ``source``: (n_bytes,) long.

    ``on_error``: "raise" (a SyntaxError propagates) or "zeros" (depth 0 everywhere for a file
    that does not parse, e.g. a window cut out of the middle of a file).
    """
    if on_error not in ("raise", "zeros"):
        raise ValueError(f"on_error must be 'raise' or 'zeros', got {on_error!r}")
    data = source.encode("utf-8")
    depth = np.zeros(len(data), dtype=np.int64)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        if on_error == "raise":
            raise
        return torch.from_numpy(depth)
    starts = line_starts(data)
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]          # pre-order: parents paint first
    while stack:
        node, d = stack.pop()
        for child in ast.iter_child_nodes(node):
            span = _span(child, starts, len(data))
            if span is None:                                 # no position: not a level
                stack.append((child, d))
            else:
                depth[span[0]:span[1]] = d + 1
                stack.append((child, d + 1))
    return torch.from_numpy(depth)


def depth_types(depths: torch.Tensor, num_types: int) -> torch.Tensor:
    """Depths clamped to [0, num_types − 1]: type ids for ``StructureEncoder(num_structure_types=...)``."""
    if num_types < 1:
        raise ValueError(f"num_types must be >= 1, got {num_types}")
    return depths.clamp(0, num_types - 1)


def load_tokens_with_depths(domain: str, split: str, max_bytes: int | None = None,
                            root=None, packages: Sequence[str] | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(tokens, depths, info): ``corpus.load_tokens(...)`` and the AST depth of every token.

    Each file is parsed whole (then cut, when ``max_bytes`` cuts it); the ``"\\n\\n"`` between
    files has depth 0. ``info``: files, files that did not parse (depth 0 throughout), bytes.
    ``root``: as in ``corpus.list_files`` (default: where ``corpus.source_of`` reads the split).
    """
    chunks, dchunks, size, failed, files = [], [], 0, [], 0
    for i, rel in enumerate(corpus.existing_files(domain, split, root, packages)):
        text = corpus.read_text(rel, root)
        if i:
            chunks.append(b"\n\n")
            dchunks.append(torch.zeros(2, dtype=torch.long))
        data = text.encode("utf-8")
        try:
            d = ast_depths(text)
        except (SyntaxError, ValueError):
            failed.append(rel)
            d = torch.zeros(len(data), dtype=torch.long)
        chunks.append(data)
        dchunks.append(d)
        files += 1
        size += len(data) + 2                               # as corpus.load_text counts
        if max_bytes is not None and size >= max_bytes:
            break
    data = b"".join(chunks)
    depths = torch.cat(dchunks) if dchunks else torch.zeros(0, dtype=torch.long)
    if max_bytes is not None:                               # corpus.load_text's cut, exactly
        data = data[:max_bytes].decode("utf-8", errors="ignore").encode("utf-8")
    tokens = corpus.encode(data.decode("utf-8"))
    depths = depths[:len(tokens)].clone()
    return tokens, depths, {"files": files, "unparsed": failed, "bytes": len(tokens)}


def get_batch_with_depths(tokens: torch.Tensor, depths: torch.Tensor, batch_size: int,
                          context: int, generator: torch.Generator | None = None, device=None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``corpus.get_batch`` plus the depths of the *input* tokens: x, y, depth, each (B, context).

    Draws the same windows as ``corpus.get_batch`` with the same generator state.
    """
    if depths.shape != tokens.shape:
        raise ValueError(f"depths {tuple(depths.shape)} must align with tokens {tuple(tokens.shape)}")
    if tokens.ndim != 1 or len(tokens) < context + 1:
        raise ValueError(f"need a 1-D token tensor longer than context={context}, "
                         f"got shape {tuple(tokens.shape)}")
    starts = torch.randint(0, len(tokens) - context, (batch_size,), generator=generator)
    offsets = torch.arange(context + 1)
    windows = tokens[starts[:, None] + offsets]
    x, y = windows[:, :-1], windows[:, 1:]
    d = depths[starts[:, None] + offsets[:-1]]
    if device is not None:
        x, y, d = x.to(device), y.to(device), d.to(device)
    return x, y, d
