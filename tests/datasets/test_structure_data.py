"""lorakit.datasets: AST depth of code aligned with the byte tokenizer; periodic series."""
import ast

import pytest
import torch

from lorakit.datasets import (
    PeriodicRegression,
    SeasonalComponent,
    ast_depths,
    depth_types,
    get_batch_with_depths,
    line_starts,
    load_tokens_with_depths,
    periodic_series,
    seasonal,
)
from lorakit.lm import corpus

SRC = '''class A:
    def f(self, x):
        # comment
        return g(x + 1)
'''


def _depth_str(src, line):
    data = src.encode()
    d = ast_depths(src)
    start = line_starts(data)[line]
    end = data.index(b"\n", start)
    return "".join(str(int(v)) for v in d[start:end])


def test_line_starts_use_pythons_newlines():
    assert line_starts(b"a\nb\r\nc\rd") == [0, 2, 5, 7]
    assert line_starts(b"a\x0cb\n") == [0, 4]                  # a form feed is not a newline
    assert line_starts(b"") == [0]


def test_depths_of_a_small_example():
    assert _depth_str(SRC, 0) == "11111111"                    # class A: (ClassDef, depth 1)
    assert _depth_str(SRC, 1) == "1111" + "222222" + "3333" + "22" + "3" + "22"
    assert _depth_str(SRC, 2) == "2" * len("        # comment")   # inside f, in no statement
    line = _depth_str(SRC, 3)
    #        "        return g(x + 1)"
    assert line[:8] == "22222222" and line[8:15] == "3333333"  # indentation, 'return '
    assert line[15] == "5" and line[16] == "4"                 # g (Name in Call), '('
    assert line[17:22] == "65556" and line[22] == "4"          # x + 1 (BinOp, Names), ')'
    assert len(ast_depths(SRC)) == len(SRC.encode())


def test_depth_is_per_utf8_byte_like_the_tokenizer():
    src = "x = 'é' + y\n"
    d, data = ast_depths(src), src.encode()
    assert len(d) == len(corpus.encode(src)) == len(data) == len(src) + 1
    i = data.index("é".encode())
    assert d[i] == d[i + 1] == d[i - 1] == 3                    # both bytes of é in the Constant
    assert d[data.index(b"y")] == 3 and d[data.index(b"+") ] == 2


def test_every_name_node_spans_exactly_its_bytes_in_stdlib_files():
    """The alignment, checked on real code: the bytes a Name covers spell its id."""
    count = 0
    for rel in corpus.list_files("adapt", "val")[:4]:
        text = corpus.read_text(rel)
        data, starts = text.encode(), line_starts(text.encode())
        depths = ast_depths(text)
        for n in ast.walk(ast.parse(text)):
            if not isinstance(n, ast.Name):
                continue
            s = starts[n.lineno - 1] + n.col_offset
            e = starts[n.end_lineno - 1] + n.end_col_offset
            assert data[s:e].decode() == n.id
            assert (depths[s:e] == depths[s]).all() and depths[s] >= 2   # a leaf: one depth
            count += 1
    assert count > 200


def test_syntax_errors():
    with pytest.raises(SyntaxError):
        ast_depths("def f(:\n")
    assert ast_depths("def f(:\n", on_error="zeros").tolist() == [0] * 8
    with pytest.raises(ValueError):
        ast_depths("x", on_error="ignore")


def test_depth_types_clamp():
    assert depth_types(torch.tensor([0, 3, 15, 40]), 16).tolist() == [0, 3, 15, 15]
    with pytest.raises(ValueError):
        depth_types(torch.tensor([1]), 0)


def test_load_tokens_with_depths_matches_the_corpus():
    tokens, depths, info = load_tokens_with_depths("adapt", "val", max_bytes=60_000)
    assert torch.equal(tokens, corpus.load_tokens("adapt", "val", max_bytes=60_000))
    assert depths.shape == tokens.shape and depths.dtype == torch.long
    assert info["files"] >= 1 and info["unparsed"] == [] and info["bytes"] == len(tokens)
    assert depths.max() > 5 and (depths >= 0).all()
    # the blank line between two files has depth 0
    first = corpus.read_bytes(corpus.list_files("adapt", "val")[0])
    if len(first) + 2 < len(tokens):
        assert depths[len(first):len(first) + 2].tolist() == [0, 0]


def test_batches_align_tokens_and_depths():
    tokens, depths, _ = load_tokens_with_depths("adapt", "val", max_bytes=20_000)
    x, y, d = get_batch_with_depths(tokens, depths, 4, 32, torch.Generator().manual_seed(3))
    x2, y2 = corpus.get_batch(tokens, 4, 32, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2) and torch.equal(y, y2) and d.shape == x.shape
    starts = torch.randint(0, len(tokens) - 32, (4,), generator=torch.Generator().manual_seed(3))
    for row, s in zip(d, starts, strict=True):
        assert torch.equal(row, depths[s:s + 32])
    with pytest.raises(ValueError, match="align"):
        get_batch_with_depths(tokens, depths[:-1], 4, 32)


def test_seasonal_is_periodic_and_precise_far_from_zero():
    comps = [SeasonalComponent(24.0, 1.0), SeasonalComponent(168.0, 0.5, phase=1.0)]
    t = torch.arange(0, 500, 0.5, dtype=torch.float64)
    s = seasonal(t, comps)
    torch.testing.assert_close(seasonal(t + 168.0, comps), s)
    assert s.abs().max() <= 1.5 + 1e-12
    far = 24.0 * 7 * 10_000_000                                 # 1.68e9, e.g. seconds since 1970
    torch.testing.assert_close(seasonal(t + far, comps), s, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        SeasonalComponent(0.0)


def test_periodic_series_is_seeded():
    t = torch.arange(100.0)
    comps = [SeasonalComponent(24.0)]
    a, b = periodic_series(t, comps, noise=0.1, seed=1), periodic_series(t, comps, noise=0.1, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, periodic_series(t, comps, noise=0.1, seed=2))
    torch.testing.assert_close(periodic_series(t, comps, level=2.0), 2.0 + seasonal(t, comps))


def test_periodic_regression_task():
    task = PeriodicRegression(windows=6, length=48, test_windows=2, noise=0.0, seed=0)
    assert task.x.shape == (6, 48, 8) and task.y.shape == (6, 48, 6) and task.f.shape == (6, 48)
    assert task.train["x"].shape[0] == 4 and task.test["t"].min() > task.train["t"].max()
    assert 0.59 < task.f.min() and task.f.max() < 1.41                 # inside v2's (0.5, 1.5)
    with torch.no_grad():
        want = task.base(task.x) + task.f[..., None].float() * (task.x @ task.delta.T)
    torch.testing.assert_close(task.y, want)
    assert torch.linalg.matrix_rank(task.delta) == 2
    assert not any(p.requires_grad for p in task.base.parameters())
    assert task.mse_of_constant_factor() > 1e-3 > task.noise_floor()
    with pytest.raises(ValueError):
        PeriodicRegression(windows=4, test_windows=4)


def test_a_python_without_its_test_package_still_has_the_data(tmp_path, monkeypatch):
    """Debian/Ubuntu ship the stdlib's test/ separately: the adapt domain ships with lorakit."""
    want = load_tokens_with_depths("adapt", "val", max_bytes=50_000)
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "__init__.py").write_text("x = 1\n")
    monkeypatch.setattr(corpus, "stdlib_root", lambda: tmp_path)   # a stdlib without test/
    got = load_tokens_with_depths("adapt", "val", max_bytes=50_000)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and got[2] == want[2]
    with pytest.raises(FileNotFoundError, match="no adapt/val files"):  # an explicit root is read
        load_tokens_with_depths("adapt", "val", root=tmp_path)
