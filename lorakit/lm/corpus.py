"""A real code corpus that needs no download: source files of the Python standard library.

Two disjoint *domains*, chosen by package, module and test-file *names* (never by file contents):

- ``"pretrain"``: library code — the top-level modules (``typing.py``, ``argparse.py``, …) and
  packages such as ``asyncio``, ``collections``, ``importlib``, ``logging``, ``unittest``. The
  shipped TinyLM was trained on its ``"train"`` split.
- ``"adapt"``: *unit tests* of the Internet data handling modules — ``test/test_email/``,
  ``test/test_json/``, ``test_httplib.py``, ``test_urllib*.py``, ``test_xml_etree.py``,
  ``test_smtplib.py``, … Test code has its own idioms (``self.assertEqual``, fixtures, literal
  messages and headers), and it tests modules whose own code the model never saw: the library
  code of those modules (``HELD_OUT_PACKAGES``/``HELD_OUT_MODULES``) is in no domain. Measured on
  the shipped model, this is a real domain shift (see ``lorakit/lm/assets/tinylm.json``).

Inside each domain a file goes to ``"val"`` when the CRC-32 of its relative path is divisible by
5 (about 20 % of the files), else to ``"train"``. Other test suites (``test/``, ``*/test/``,
``tests/``, ``idle_test/``) and generated or data-like files are in no domain.

**Where the files come from.** The splits the notebooks and experiments read — ``adapt/train``,
``adapt/val`` and ``pretrain/val`` (``SHIPPED``) — ship with lorakit in
``lorakit/lm/assets/corpus.tar.xz``: the files of CPython 3.11.7 that the shipped TinyLM and every
saved experiment were made from, under the Python Software Foundation License
(``corpus-LICENSE.txt`` beside it; ``corpus-README.md`` says what is in it and why). So the data
are the same on every machine and Python version, and the stdlib's own ``test/`` package (which
Debian and Fedora package separately) is not needed. Only ``pretrain/train``, which nothing but
``python -m lorakit.lm.pretrain`` reads, comes from this interpreter's standard library
(``stdlib_root()``); the re-training command says when it differs from the shipped model's.
An explicit ``root=`` (a stdlib directory, or an archive made by ``build_archive``) reads every
split from there instead. ``python -m lorakit.lm.corpus build-archive`` rebuilds the archive.

Tokenizer: bytes. ``encode`` maps UTF-8 text to ids in [0, 256); ``decode`` maps them back.
A vocabulary of 256 keeps the embedding small, and every file tokenizes.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import lzma
import os
import sys
import sysconfig
import tarfile
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
TEST_ROOT = "test"  # the stdlib's own test package: only its adapt-domain files are used
DOMAINS = ("pretrain", "adapt")
SPLITS = ("train", "val")
VAL_EVERY = 5  # crc32(path) % VAL_EVERY == 0 -> "val"

ASSETS = Path(__file__).resolve().parent / "assets"
ARCHIVE = ASSETS / "corpus.tar.xz"          # the SHIPPED splits, paths relative to the stdlib root
ARCHIVE_LICENSE = ASSETS / "corpus-LICENSE.txt"   # the PSF License of those files
ARCHIVE_README = ASSETS / "corpus-README.md"      # what is in the archive, from where, and why
# The splits read from ARCHIVE by default. pretrain/train (only `python -m lorakit.lm.pretrain`
# reads it) comes from this interpreter's standard library.
SHIPPED = (("adapt", "train"), ("adapt", "val"), ("pretrain", "val"))


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


def _selected(rel: str, domain: str, split: str, packages) -> bool:
    return (domain_of(rel) == domain and split_of(rel) == split
            and (packages is None or top_name(rel).startswith(tuple(packages))))


def source_of(domain: str, split: str, root: str | os.PathLike | None = None) -> Path:
    """Where one split is read from: ``root`` when given (a stdlib directory or a corpus archive),
    else ``ARCHIVE`` for the ``SHIPPED`` splits and ``stdlib_root()`` for pretrain/train."""
    if root is not None:
        return Path(root)
    return ARCHIVE if (domain, split) in SHIPPED else stdlib_root()


@functools.lru_cache(maxsize=4)
def _read_archive(path: str, mtime_ns: int, size: int) -> dict[str, bytes]:
    with tarfile.open(path, "r:*") as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def _archive(path: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file in a corpus archive (read once, then kept)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"lorakit's corpus archive {path} is missing. It is part of the lorakit package: "
            "reinstall lorakit, or rebuild it with `python -m lorakit.lm.corpus build-archive`.") from None
    return _read_archive(str(path), st.st_mtime_ns, st.st_size)


def list_files(domain: str, split: str, root: str | os.PathLike | None = None,
               packages: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Sorted relative paths (POSIX style) of the stdlib files in one domain and split.

    Read from ``source_of(domain, split, root)``. ``packages``: keep only files whose
    ``top_name`` starts with one of these, e.g. ``("email", "smtp")`` for the mail tests of the
    "adapt" domain.
    """
    _check(domain, split)
    source = source_of(domain, split, root)
    if source == ARCHIVE or source.is_file():
        return sorted(rel for rel in _archive(source) if _selected(rel, domain, split, packages))
    found = []
    for dirpath, dirnames, filenames in os.walk(source):
        rel_dir = Path(dirpath).relative_to(source)
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS
                             or (d == TEST_ROOT and rel_dir == Path(".") and domain == "adapt"))
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if _selected(rel, domain, split, packages):
                found.append(rel)
    return sorted(found)


def existing_files(domain: str, split: str, root: str | os.PathLike | None = None,
                   packages: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """``list_files``, but a FileNotFoundError that says where it looked when there are none."""
    files = list_files(domain, split, root, packages)
    if not files:
        raise FileNotFoundError(f"no {domain}/{split} files (packages={packages}) "
                                f"in {source_of(domain, split, root)}")
    return files


def read_bytes(relpath: str, root: str | os.PathLike | None = None) -> bytes:
    """The bytes of one file of the corpus, read from where its split is read (``source_of``)."""
    domain = domain_of(relpath)
    source = source_of(domain, split_of(relpath), root) if domain else (
        Path(root) if root is not None else stdlib_root())
    if source == ARCHIVE or source.is_file():
        members = _archive(source)
        if relpath not in members:
            raise FileNotFoundError(f"{relpath} is not in {source}")
        return members[relpath]
    return (source / relpath).read_bytes()


def read_text(relpath: str, root: str | os.PathLike | None = None) -> str:
    """``read_bytes`` decoded as ``Path.read_text(encoding="utf-8", errors="replace")`` would
    (universal newlines: ``\\r\\n`` and a lone ``\\r`` become ``\\n``)."""
    return io.TextIOWrapper(io.BytesIO(read_bytes(relpath, root)), encoding="utf-8",
                            errors="replace").read()


def load_text(domain: str, split: str, max_bytes: int | None = None,
              root: str | os.PathLike | None = None,
              packages: tuple[str, ...] | list[str] | None = None) -> str:
    """The files of one domain and split, concatenated in sorted order (two newlines between).

    ``max_bytes`` cuts the UTF-8 text after that many bytes (whole files first, then the tail).
    """
    files = existing_files(domain, split, root, packages)
    parts, size = [], 0
    for rel in files:
        text = read_text(rel, root)
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
    h, n_bytes = hashlib.sha256(), 0
    files = list_files(domain, split, root)
    for rel in files:
        data = read_bytes(rel, root)
        h.update(rel.encode() + b"\0" + data)
        n_bytes += len(data)
    return {"files": len(files), "bytes": n_bytes, "sha256": h.hexdigest()}


def shipped_fingerprints() -> dict[str, dict]:
    """The fingerprints the shipped TinyLM's card records ("domain/split" -> fingerprint): the
    data it and every saved experiment were made from."""
    card = json.loads((ASSETS / "tinylm.json").read_text(encoding="utf-8"))
    return card["data"]["fingerprints"]


# --- the shipped archive ----------------------------------------------------------------------

def build_archive(out: str | os.PathLike = ARCHIVE, root: str | os.PathLike | None = None) -> dict:
    """Write the ``SHIPPED`` splits of the stdlib at ``root`` (default: this interpreter's) to
    ``out``, an .tar.xz of their files under their relative paths, and return their fingerprints.

    Reproducible: sorted names, no times, owners or permissions of the machine, so the same files
    give the same tar stream (and, with the same liblzma, the same bytes).
    """
    root = Path(root) if root is not None else stdlib_root()
    out = Path(out)
    names = sorted(rel for d, s in SHIPPED for rel in existing_files(d, s, root))
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=9 | lzma.PRESET_EXTREME,
                      format=tarfile.USTAR_FORMAT) as tf:
        for rel in names:
            data = (root / rel).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return {f"{d}/{s}": fingerprint(d, s, out) for d, s in SHIPPED}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lorakit.lm.corpus",
        description="Rebuild lorakit/lm/assets/corpus.tar.xz, the corpus splits that ship with "
                    "lorakit, from a Python standard library (see lorakit/lm/assets/corpus-README.md).")
    sub = ap.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-archive", help="write the shipped splits of a stdlib to an archive")
    build.add_argument("--root", type=Path, default=None,
                       help="the stdlib directory (default: this interpreter's)")
    build.add_argument("--out", type=Path, default=ARCHIVE, help="default: %(default)s")
    build.add_argument("--force", action="store_true",
                       help="write --out even when the files are not the ones tinylm.json records")
    args = ap.parse_args(argv)
    new = args.out.with_name(args.out.name + ".new")
    try:
        fps = build_archive(new, args.root)
    except FileNotFoundError as e:
        print(f"{e}. Rebuilding needs a standard library with its test/ package (CPython 3.11.7 "
              "from python.org, pyenv or conda has it).", file=sys.stderr)
        return 1
    expected = shipped_fingerprints()
    same = True
    for key, fp in fps.items():
        ok = fp == expected.get(key)
        same &= ok
        print(f"{key:15s} {fp['files']:4d} files {fp['bytes']:>9,} bytes  sha256 {fp['sha256'][:16]}  "
              + ("= tinylm.json" if ok else "DIFFERS from tinylm.json"))
    if not (same or args.force):
        new.unlink()
        print(f"not written: these are not the files the shipped TinyLM and the saved experiments "
              f"were made from (CPython 3.11.7's), so {args.out} is left as it was. --force writes "
              "them anyway; the notebooks' numbers would then change.")
        return 1
    os.replace(new, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0 if same else 1


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


if __name__ == "__main__":
    raise SystemExit(main())
