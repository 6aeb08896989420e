"""A real code corpus that needs no download: the Python standard library's own source files.

Two disjoint *domains*, chosen by package, module and test-file *names* (never by file contents,
so the split is the same on every Python version even though the files differ a little):

- ``"pretrain"``: library code — the top-level modules (``typing.py``, ``argparse.py``, …) and
  packages such as ``asyncio``, ``collections``, ``importlib``, ``logging``, ``unittest``. The
  shipped TinyLM was trained on its ``"train"`` split.
- ``"adapt"``: *unit tests* of the Internet data handling modules — ``test/test_email/``,
  ``test/test_json/``, ``test_httplib.py``, ``test_urllib*.py``, ``test_xml_etree.py``,
  ``test_smtplib.py``, … Test code has its own idioms (``self.assertEqual``, fixtures, literal
  messages and headers), and it tests modules whose own code the model never saw: the library
  code of those modules (``HELD_OUT_PACKAGES``/``HELD_OUT_MODULES``) is in no domain. Measured on
  the shipped model, this is a real domain shift (see ``lorakit/assets/tinylm.json``).

Inside each domain a file goes to ``"val"`` when the CRC-32 of its relative path is divisible by
5 (about 20 % of the files), else to ``"train"``. Other test suites (``test/``, ``*/test/``,
``tests/``, ``idle_test/``) and generated or data-like files are in no domain.

Tokenizer: bytes. ``encode`` maps UTF-8 text to ids in [0, 256); ``decode`` maps them back.
A vocabulary of 256 keeps the embedding small, and every file tokenizes.
"""
from __future__ import annotations

import hashlib
import os
import sysconfig
import zlib
from pathlib import Path
from typing import Iterator

import torch

VOCAB_SIZE = 256

PRETRAIN_PACKAGES = (
    "asyncio", "collections", "concurrent", "ctypes", "curses", "dbm", "importlib", "logging",
    "multiprocessing", "re", "sqlite3", "tomllib", "unittest", "zoneinfo",
)
# The Internet data handling library: kept out of pretraining (its tests are the "adapt" domain).
HELD_OUT_PACKAGES = ("email", "html", "http", "json", "urllib", "wsgiref", "xml", "xmlrpc")
HELD_OUT_MODULES = (
    "cgi", "cgitb", "ftplib", "imaplib", "mailbox", "mailcap", "mimetypes", "nntplib", "poplib",
    "quopri", "smtpd", "smtplib",
)
# Test subjects of the "adapt" domain: test/test_<subject>.py or test/test_<subject>/..., where
# <subject> starts with one of these (test_httplib, test_urllib2, test_xml_etree, test_sax, ...).
ADAPT_TEST_SUBJECTS = (
    "cgi", "email", "ftplib", "html", "http", "imaplib", "json", "mailbox", "mailcap",
    "mimetypes", "minidom", "nntplib", "poplib", "pulldom", "quopri", "sax", "smtp", "urllib",
    "urlparse", "wsgiref", "xml",
)
# Top-level files that are generated, platform data, jokes or not code-like: in no domain.
EXCLUDED_MODULES = ("__hello__", "antigravity", "this")
EXCLUDED_PREFIXES = ("_sysconfigdata",)
EXCLUDED_DIRS = ("test", "tests", "idle_test", "__pycache__", "site-packages")
TEST_ROOT = "test"  # the stdlib's own test suite: only its adapt-domain files are used
DOMAINS = ("pretrain", "adapt")
SPLITS = ("train", "val")
VAL_EVERY = 5  # crc32(path) % VAL_EVERY == 0 -> "val"


def stdlib_root() -> Path:
    """Where this interpreter's standard library lives."""
    return Path(sysconfig.get_paths()["stdlib"])


def test_subject(relpath: str) -> str | None:
    """'test/test_email/test_utils.py' -> 'email', 'test/test_httplib.py' -> 'httplib', else None."""
    parts = Path(relpath).parts
    if len(parts) < 2 or parts[0] != TEST_ROOT or not parts[1].startswith("test_"):
        return None
    if len(parts) == 2:
        return parts[1][len("test_"):-3] if parts[1].endswith(".py") else None
    if any(p in EXCLUDED_DIRS for p in parts[2:-1]):
        return None
    return parts[1][len("test_"):]


def domain_of(relpath: str) -> str | None:
    """The domain of a stdlib file given its path relative to the stdlib root ('email/utils.py')."""
    parts = Path(relpath).parts
    if not parts or not relpath.endswith(".py"):
        return None
    subject = test_subject(relpath)
    if subject is not None:
        return "adapt" if subject.startswith(ADAPT_TEST_SUBJECTS) else None
    if any(p in EXCLUDED_DIRS for p in parts[:-1]):
        return None
    if len(parts) == 1:
        module = parts[0][:-3]
        if (module in EXCLUDED_MODULES or module.startswith(EXCLUDED_PREFIXES)
                or module in HELD_OUT_MODULES):
            return None
        return "pretrain"
    if parts[0] in PRETRAIN_PACKAGES:
        return "pretrain"
    return None


def split_of(relpath: str) -> str:
    """'val' for about one file in five (by a hash of the path, stable across machines), else 'train'."""
    return "val" if zlib.crc32(relpath.encode()) % VAL_EVERY == 0 else "train"


def _check(domain: str, split: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def top_name(relpath: str) -> str:
    """What a file is about: its test subject for test files ('test/test_email/x.py' -> 'email'),
    else its package or module ('asyncio/tasks.py' -> 'asyncio', 'typing.py' -> 'typing')."""
    subject = test_subject(relpath)
    if subject is not None:
        return subject
    first = relpath.split("/", 1)[0]
    return first[:-3] if first.endswith(".py") else first


def list_files(domain: str, split: str, root: str | os.PathLike | None = None,
               packages: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Sorted relative paths (POSIX style) of the stdlib files in one domain and split.

    ``packages``: keep only files whose ``top_name`` starts with one of these, e.g.
    ``("email", "smtp")`` for the mail tests of the "adapt" domain.
    """
    _check(domain, split)
    root = Path(root) if root is not None else stdlib_root()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS
                             or (d == TEST_ROOT and rel_dir == Path(".") and domain == "adapt"))
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if (domain_of(rel) == domain and split_of(rel) == split
                    and (packages is None or top_name(rel).startswith(tuple(packages)))):
                found.append(rel)
    return sorted(found)


def existing_files(domain: str, split: str, root: str | os.PathLike | None = None,
                   packages: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """``list_files``, but a FileNotFoundError that says why when there are none."""
    root = Path(root) if root is not None else stdlib_root()
    files = list_files(domain, split, root, packages)
    if not files:
        hint = (" The adapt domain lives in the standard library's own test suite (test/), which some "
                "Linux distributions package separately (Debian/Ubuntu: libpython3.X-testsuite); "
                "Python from python.org, conda or pyenv includes it." if domain == "adapt" else "")
        raise FileNotFoundError(f"no {domain}/{split} files (packages={packages}) under {root}.{hint}")
    return files


def load_text(domain: str, split: str, max_bytes: int | None = None,
              root: str | os.PathLike | None = None,
              packages: tuple[str, ...] | list[str] | None = None) -> str:
    """The files of one domain and split, concatenated in sorted order (two newlines between).

    ``max_bytes`` cuts the UTF-8 text after that many bytes (whole files first, then the tail).
    """
    root = Path(root) if root is not None else stdlib_root()
    files = existing_files(domain, split, root, packages)
    parts, size = [], 0
    for rel in files:
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text.encode("utf-8")) + 2
        if max_bytes is not None and size >= max_bytes:
            break
    text = "\n\n".join(parts)
    if max_bytes is not None:
        text = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    return text


def fingerprint(domain: str, split: str, root: str | os.PathLike | None = None) -> dict:
    """Number of files, bytes and a SHA-256 over names and contents: records what a run saw."""
    root = Path(root) if root is not None else stdlib_root()
    h, n_bytes = hashlib.sha256(), 0
    files = list_files(domain, split, root)
    for rel in files:
        data = (root / rel).read_bytes()
        h.update(rel.encode() + b"\0" + data)
        n_bytes += len(data)
    return {"files": len(files), "bytes": n_bytes, "sha256": h.hexdigest()}


# --- tokenizer --------------------------------------------------------------------------------

def encode(text: str) -> torch.Tensor:
    """UTF-8 bytes of ``text`` as a 1-D int64 tensor of ids in [0, 256)."""
    data = bytearray(text.encode("utf-8"))
    if not data:
        return torch.zeros(0, dtype=torch.long)
    return torch.frombuffer(data, dtype=torch.uint8).long()


def decode(ids) -> str:
    """The text of a sequence of byte ids (invalid UTF-8 shows as U+FFFD)."""
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def load_tokens(domain: str, split: str, max_bytes: int | None = None,
                root: str | os.PathLike | None = None,
                packages: tuple[str, ...] | list[str] | None = None) -> torch.Tensor:
    """``encode(load_text(...))``: one long 1-D tensor of byte ids."""
    return encode(load_text(domain, split, max_bytes=max_bytes, root=root, packages=packages))


# --- batching ---------------------------------------------------------------------------------

def get_batch(tokens: torch.Tensor, batch_size: int, context: int,
              generator: torch.Generator | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: inputs x (B, context) and next-token targets y (B, context)."""
    if tokens.ndim != 1 or len(tokens) < context + 1:
        raise ValueError(f"need a 1-D token tensor longer than context={context}, "
                         f"got shape {tuple(tokens.shape)}")
    starts = torch.randint(0, len(tokens) - context, (batch_size,), generator=generator)
    offsets = torch.arange(context + 1)
    windows = tokens[starts[:, None] + offsets]            # (B, context + 1)
    x, y = windows[:, :-1], windows[:, 1:]
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


def eval_batches(tokens: torch.Tensor, context: int, batch_size: int = 32,
                 max_windows: int | None = None, device=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows of ``tokens``, in order (deterministic).

    All of them by default; with ``max_windows``, that many spread evenly over the whole text
    (so a small evaluation still sees every part of the corpus, not just its first file).
    """
    n = (len(tokens) - 1) // context
    if n < 1:
        raise ValueError(f"need more than context={context} tokens, got {len(tokens)}")
    index = torch.arange(n)
    if max_windows is not None and max_windows < n:
        index = torch.linspace(0, n - 1, max_windows).round().long()
        n = max_windows
    starts = index * context
    offsets = torch.arange(context + 1)
    for i in range(0, n, batch_size):
        windows = tokens[starts[i:i + batch_size, None] + offsets]
        x, y = windows[:, :-1], windows[:, 1:]
        if device is not None:
            x, y = x.to(device), y.to(device)
        yield x, y
