"""The corpus that ships with lorakit (lorakit/lm/assets/corpus.tar.xz): the same data on every
Python, without the standard library's test/ package, and rebuilt exactly by its command."""
import lzma
import tarfile

import pytest
import torch

from lorakit.datasets import load_tokens_with_depths
from lorakit.lm import corpus, pretrain


def _this_stdlib_is_the_shipped_one():
    shipped = corpus.shipped_fingerprints()
    root = corpus.stdlib_root()
    return all(corpus.fingerprint(d, s, root) == shipped[f"{d}/{s}"] for d, s in corpus.SHIPPED)


@pytest.fixture
def no_stdlib(tmp_path, monkeypatch):
    """A standard library with no test/ package and none of the shipped files in it."""
    root = tmp_path / "stdlib"
    (root / "email").mkdir(parents=True)
    (root / "typing.py").write_text("x = 1\n")
    (root / "email" / "utils.py").write_text("y = 2\n")
    monkeypatch.setattr(corpus, "stdlib_root", lambda: root)
    return root


def test_the_shipped_splits_are_the_ones_tinylm_json_records():
    shipped = corpus.shipped_fingerprints()
    assert {f"{d}/{s}" for d in corpus.DOMAINS for s in corpus.SPLITS} == set(shipped)
    for d, s in corpus.SHIPPED:
        assert corpus.source_of(d, s) == corpus.ARCHIVE
        assert corpus.fingerprint(d, s) == shipped[f"{d}/{s}"], (d, s)
    assert corpus.source_of("pretrain", "train") == corpus.stdlib_root()
    with tarfile.open(corpus.ARCHIVE) as tf:
        names = [m.name for m in tf]
    assert names == sorted(names) and len(names) == sum(shipped[f"{d}/{s}"]["files"]
                                                       for d, s in corpus.SHIPPED)
    assert corpus.ARCHIVE.stat().st_size < 1 << 20


def test_the_archive_ships_with_its_licence_and_provenance():
    licence = corpus.ARCHIVE_LICENSE.read_text(encoding="utf-8")
    assert "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in licence
    readme = corpus.ARCHIVE_README.read_text(encoding="utf-8")
    assert "CPython 3.11.7" in readme and "build-archive" in readme


def test_the_notebooks_data_need_no_test_package(no_stdlib):
    """On a Python whose stdlib lacks test/ (Debian's, Ubuntu's), every shipped split loads."""
    shipped = corpus.shipped_fingerprints()
    for d, s in corpus.SHIPPED:
        assert corpus.fingerprint(d, s) == shipped[f"{d}/{s}"], (d, s)
    text = corpus.load_text("adapt", "train", packages=("email",))
    assert "self.assertEqual" in text
    tokens = corpus.load_tokens("adapt", "val", max_bytes=30_000)
    assert len(tokens) == 30_000
    t2, depths, info = load_tokens_with_depths("adapt", "val", max_bytes=30_000)
    assert torch.equal(t2, tokens) and depths.shape == tokens.shape and info["unparsed"] == []
    # pretrain/train alone is read from the interpreter's stdlib (here the fake one)
    assert corpus.split_of("typing.py") == "train"
    assert corpus.list_files("pretrain", "train") == ["typing.py"]


def test_retraining_says_when_its_data_differ(no_stdlib):
    same, message = pretrain.data_check()
    assert not same and "differs from the data the shipped TinyLM was trained on" in message


def test_a_missing_archive_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "ARCHIVE", tmp_path / "gone.tar.xz")
    with pytest.raises(FileNotFoundError, match="build-archive"):
        corpus.load_text("adapt", "val")


def test_an_archive_reads_like_the_directory_it_was_built_from(tmp_path):
    """Names, bytes, text (universal newlines, bad UTF-8 replaced) and the split rules."""
    root = tmp_path / "stdlib"
    files = {"test/test_email/test_a.py": b"a = 1\r\nb = 2\rc = '\xff'\n",
             "test/test_json/test_b.py": "d = 'é'\n".encode(),
             "test/test_http_c.py": b"e = 5\n", "test/test_typing.py": b"no = 1\n",
             "typing.py": b"x = 1\n", "asyncio/tasks.py": b"y = 2\n", "argparse.py": b"z = 3\n",
             "shutil.py": b"w = 4\n", "email/utils.py": b"held_out = 1\n"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    out = tmp_path / "c.tar.xz"
    prints = corpus.build_archive(out, root)
    with tarfile.open(out) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf}
    want = {rel: data for rel, data in files.items()
            if corpus.domain_of(rel) is not None
            and (corpus.domain_of(rel), corpus.split_of(rel)) in corpus.SHIPPED}
    assert members == want
    for d, s in corpus.SHIPPED:
        assert prints[f"{d}/{s}"] == corpus.fingerprint(d, s, root) == corpus.fingerprint(d, s, out)
        for pk in (None, ("email",)):
            try:
                expected = corpus.load_text(d, s, root=root, packages=pk)
            except FileNotFoundError:
                with pytest.raises(FileNotFoundError):
                    corpus.load_text(d, s, root=out, packages=pk)
                continue
            assert corpus.load_text(d, s, root=out, packages=pk) == expected
    for rel in want:
        assert corpus.read_text(rel, out) == (root / rel).read_text(encoding="utf-8",
                                                                    errors="replace")
    assert corpus.list_files("pretrain", "train", out) == []
    # the command will not replace an archive with other files than tinylm.json's, unless forced
    kept = tmp_path / "kept.tar.xz"
    kept.write_bytes(b"old")
    assert corpus.main(["build-archive", "--root", str(root), "--out", str(kept)]) == 1
    assert kept.read_bytes() == b"old"
    assert corpus.main(["build-archive", "--root", str(root), "--out", str(kept), "--force"]) == 1
    assert lzma.decompress(kept.read_bytes()) == lzma.decompress(out.read_bytes())


@pytest.mark.slow
def test_rebuilding_from_the_shipped_python_gives_the_shipped_archive(tmp_path):
    """`python -m lorakit.lm.corpus build-archive` on CPython 3.11.7: the same files, the same tar."""
    if not _this_stdlib_is_the_shipped_one():
        pytest.skip("this Python's stdlib is not CPython 3.11.7's with its test/ package")
    out = tmp_path / "corpus.tar.xz"
    assert corpus.main(["build-archive", "--out", str(out)]) == 0
    shipped = corpus.shipped_fingerprints()
    for d, s in corpus.SHIPPED:
        assert corpus.fingerprint(d, s, out) == shipped[f"{d}/{s}"]
    assert lzma.decompress(out.read_bytes()) == lzma.decompress(corpus.ARCHIVE.read_bytes())


def test_the_shipped_text_equals_the_stdlibs_where_it_has_them():
    """Byte-identical to reading CPython 3.11.7's files (checked where this Python is that one)."""
    if not _this_stdlib_is_the_shipped_one():
        pytest.skip("this Python's stdlib is not CPython 3.11.7's with its test/ package")
    root = corpus.stdlib_root()
    for d, s in corpus.SHIPPED:
        assert corpus.load_text(d, s) == corpus.load_text(d, s, root=root)
        for rel in corpus.list_files(d, s):
            assert corpus.read_bytes(rel) == (root / rel).read_bytes()
    mail = ("email", "smtp")
    assert (corpus.load_text("adapt", "val", max_bytes=50_001, packages=mail)
            == corpus.load_text("adapt", "val", root=root, max_bytes=50_001, packages=mail))
