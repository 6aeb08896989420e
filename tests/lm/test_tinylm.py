"""The shipped TinyLM and its stdlib corpus: loads offline, right shapes and names, learned something.
(The corpus archive that ships with lorakit: tests/lm/test_corpus.py.)"""
import json
import socket
import zlib

import pytest
import torch
from torch import nn

from lorakit.lm import corpus, tinylm
from lorakit.lm.tinylm import TinyLM, TinyLMConfig, load_pretrained

PEFT_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


@pytest.fixture(autouse=True)
def one_thread():
    """A model this small runs fastest on one thread (and the commands set one): restore after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return load_pretrained()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("TinyLM tried to open a network connection")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_shipped_files_are_small_and_described():
    assert tinylm.WEIGHTS.stat().st_size < 3 * 2**20
    card = tinylm.read_card()
    for key in ("date", "machine", "seeds", "data", "config", "results", "wall_time_s", "command"):
        assert key in card, key
    assert card["command"].startswith("python -m lorakit.lm.pretrain")
    res = card["results"]
    assert res["pretrain_val"]["perplexity"] < res["adapt_val"]["perplexity"] < 256


def test_loads_offline(no_network):
    m = load_pretrained()
    assert not m.training
    assert 300_000 <= m.num_parameters() <= 1_000_000
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_forward_shapes(model):
    cfg = model.config
    x = torch.randint(0, cfg.vocab_size, (3, 17))
    with torch.no_grad():
        assert model(x).shape == (3, 17, cfg.vocab_size)
        assert model(x[:, :1]).shape == (3, 1, cfg.vocab_size)
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, cfg.context + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="batch, time"):
        model(torch.zeros(5, dtype=torch.long))


def test_peft_module_names_are_linear(model):
    named = dict(model.named_modules())
    for short in PEFT_NAMES:
        hits = [n for n in named if n == short or n.endswith("." + short)]
        expected = 1 if short == "lm_head" else model.config.n_layers
        assert len(hits) == expected, short
        assert all(type(named[n]) is nn.Linear and named[n].bias is None for n in hits)


def test_grouped_query_attention_shapes(model):
    cfg, attn = model.config, model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (cfg.d_model, cfg.d_model)
    assert attn.k_proj.weight.shape == (cfg.n_kv_heads * cfg.head_dim, cfg.d_model)
    assert attn.k_proj.out_features < attn.q_proj.out_features


def test_causal(model):
    x = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 256
    with torch.no_grad():
        assert torch.allclose(model(x)[0, :10], model(y)[0, :10], atol=1e-5)
        assert not torch.allclose(model(x)[0, 10:], model(y)[0, 10:], atol=1e-5)


def test_held_out_perplexity_far_below_uniform(model):
    tokens = corpus.load_tokens("pretrain", "val", max_bytes=40_000)
    ppl = tinylm.perplexity(model, tokens, context=128, max_windows=64)
    assert ppl < 0.5 * corpus.VOCAB_SIZE
    assert ppl < 10, f"the shipped model should know Python well: held-out ppl {ppl:.2f}"
    adapt = corpus.load_tokens("adapt", "val", max_bytes=40_000)
    assert tinylm.perplexity(model, adapt, context=128, max_windows=64) > ppl  # a domain shift


def test_generate_is_seeded(model):
    a = tinylm.generate(model, "def ", max_new_tokens=20, seed=1)
    assert a == tinylm.generate(model, "def ", max_new_tokens=20, seed=1)
    assert isinstance(a, str) and len(a) > 0


def test_save_and_reload_roundtrip(tmp_path):
    from safetensors.torch import save_file
    cfg = TinyLMConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64, context=16)
    m = TinyLM(cfg)
    save_file({k: v.half().contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.safetensors"))
    (tmp_path / "c.json").write_text(json.dumps({"config": tinylm.config_dict(cfg)}))
    m2 = load_pretrained(weights=tmp_path / "w.safetensors", card=tmp_path / "c.json")
    x = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        assert torch.allclose(m.half().float()(x), m2(x), atol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="n_kv_heads"):
        TinyLMConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="divisible"):
        TinyLMConfig(d_model=130, n_heads=4)


# --- corpus ------------------------------------------------------------------------------------

def test_domains_are_disjoint_and_deterministic():
    seen = {}
    for d in corpus.DOMAINS:
        for s in corpus.SPLITS:
            files = corpus.list_files(d, s)
            assert files == sorted(files) and files, (d, s)
            assert files == corpus.list_files(d, s)
            for f in files:
                assert f not in seen, f"{f} in both {seen[f]} and {(d, s)}"
                seen[f] = (d, s)
    assert len(seen) > 300


def test_split_is_by_name_not_content():
    assert corpus.domain_of("typing.py") == "pretrain"
    assert corpus.domain_of("asyncio/tasks.py") == "pretrain"
    assert corpus.domain_of("test/test_email/test_utils.py") == "adapt"
    assert corpus.domain_of("test/test_json/test_decode.py") == "adapt"
    assert corpus.domain_of("test/test_httplib.py") == "adapt"
    assert corpus.domain_of("test/test_urllib2.py") == "adapt"
    # the library code the adapt-domain tests exercise is held out of pretraining
    for held_out in ("email/utils.py", "json/__init__.py", "smtplib.py", "xml/dom/minidom.py"):
        assert corpus.domain_of(held_out) is None, held_out
    # other tests, nested test suites, IDLE, data-like files: in no domain
    for other in ("test/test_typing.py", "test/support/__init__.py", "unittest/test/test_case.py",
                  "test/test_email/data/msg.py.txt", "idlelib/editor.py", "this.py"):
        assert corpus.domain_of(other) is None, other
    assert corpus.split_of("typing.py") == ("val" if zlib.crc32(b"typing.py") % 5 == 0 else "train")
    assert corpus.top_name("test/test_email/test_utils.py") == "email"
    assert corpus.top_name("test/test_httplib.py") == "httplib"
    assert corpus.top_name("asyncio/tasks.py") == "asyncio" and corpus.top_name("typing.py") == "typing"


def test_split_on_a_fake_stdlib(tmp_path):
    """The split needs only file names: a different Python's stdlib splits the same way."""
    for rel in ["typing.py", "email/utils.py", "json/decoder.py", "asyncio/tasks.py",
                "test/test_email/test_utils.py", "test/test_json/test_decode.py",
                "test/test_httplib.py", "test/test_typing.py", "test/test_email/data/x.txt",
                "unittest/test/test_x.py", "site-packages/foo.py", "idlelib/x.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\nx = 1\n")
    found = {d: sorted(f for s in corpus.SPLITS for f in corpus.list_files(d, s, tmp_path))
             for d in corpus.DOMAINS}
    assert found == {"pretrain": ["asyncio/tasks.py", "typing.py"],
                     "adapt": ["test/test_email/test_utils.py", "test/test_httplib.py",
                               "test/test_json/test_decode.py"]}
    split = corpus.split_of("test/test_email/test_utils.py")
    text = corpus.load_text("adapt", split, root=tmp_path, packages=("email",))
    assert "# test/test_email/test_utils.py" in text and "json" not in text and "httplib" not in text


def test_tokenizer_roundtrip():
    text = "def f(x):\n    return x  # é ✓\n"
    ids = corpus.encode(text)
    assert ids.dtype == torch.long and int(ids.max()) < corpus.VOCAB_SIZE
    assert corpus.decode(ids) == text
    assert corpus.encode("").numel() == 0


def test_batches():
    tokens = torch.arange(1000)
    g = torch.Generator().manual_seed(0)
    x, y = corpus.get_batch(tokens, 4, 16, g)
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y, x + 1)
    windows = list(corpus.eval_batches(tokens, 100, batch_size=4))
    spread = list(corpus.eval_batches(tokens, 100, max_windows=3))[0][0]
    assert [int(w[0]) for w in spread] == [0, 400, 800]
    assert sum(len(x) for x, _ in windows) == 9
    assert torch.equal(windows[0][0][1], torch.arange(100, 200))
    with pytest.raises(ValueError):
        corpus.get_batch(torch.arange(5), 2, 16)


# --- fine-tuning, the sweeps' saved results, the commands ------------------------------------

@pytest.mark.slow
def test_lora_finetune_learns_the_new_domain():
    from lorakit.lm.finetune import ATTENTION, lora_model, train_lm
    m = lora_model(ATTENTION, rank=4, alpha=8, seed=0)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    val = corpus.load_tokens("adapt", "val")
    before = tinylm.perplexity(m, val, 128, max_windows=16)
    frozen = {n: p.clone() for n, p in m.named_parameters() if not p.requires_grad}
    train_lm(m, corpus.load_tokens("adapt", "train"), steps=15, lr=1e-2, seed=0)
    assert tinylm.perplexity(m, val, 128, max_windows=16) < before
    assert all(torch.equal(p, frozen[n]) for n, p in m.named_parameters() if n in frozen)


def test_saved_sweeps_are_complete():
    from lorakit.checks.practice import reference_count
    from lorakit.experiments import load_results
    from lorakit.experiments.sweeps import plan
    from lorakit.tuning import find_target_modules

    res = load_results("sweeps")
    for key in ("command", "date", "machine", "seeds", "settings", "baseline", "experiments"):
        assert key in res, key
    assert res["command"].startswith("python -m lorakit.experiments.sweeps")
    n_seeds = len(res["seeds"])
    assert n_seeds >= 3, "the saved sweeps report a spread over at least three seeds"
    shapes = TinyLM(TinyLMConfig(context=16))
    for name, configs in plan().items():
        rows = res["experiments"][name]
        assert [r["label"] for r in rows] == [c["label"] for c in configs], name
        for row in rows:
            for metric in ("adapt_val_ppl", "pretrain_val_ppl", "final_train_loss"):
                stat = row[metric]
                assert len(stat["values"]) == n_seeds
                assert stat["min"] <= stat["mean"] <= stat["max"] and stat["std"] >= 0
            targets = row["targets"]
            names = (find_target_modules(shapes, targets) if isinstance(targets, str)
                     else list(targets))
            assert row["trainable"] == reference_count(shapes, names, row["rank"])
            assert row["adapt_val_ppl"]["mean"] < res["baseline"]["adapt_val_ppl"]


@pytest.mark.slow
def test_sweeps_command_quick(tmp_path):
    from lorakit.experiments import sweeps
    out = tmp_path / "s.json"
    res = sweeps.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert set(res["experiments"]) == {"targets", "rank", "alpha"}


@pytest.mark.slow
def test_pretrain_command_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from lorakit.lm import pretrain
    cards = [pretrain.main(["--steps", "3", "--batch-size", "2", "--context", "32",
                            "--eval-windows", "2", "--out", str(tmp_path / d)]) for d in "ab"]
    wa, wb = (load_file(str(tmp_path / d / "tinylm.safetensors")) for d in "ab")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    card = tinylm.read_card(tmp_path / "a" / "tinylm.json")
    assert card["command"] == "python -m lorakit.lm.pretrain --steps 3 --batch-size 2 --context 32 --eval-windows 2"
    assert card["seeds"] and card["data"]["fingerprints"]["pretrain/train"]["files"] > 100
    assert cards[0]["results"] == cards[1]["results"]
    m = load_pretrained(weights=tmp_path / "a" / "tinylm.safetensors", card=tmp_path / "a" / "tinylm.json")
    assert m.config.context == 32


def test_a_root_without_the_split_says_where_it_looked(tmp_path):
    (tmp_path / "typing.py").write_text("x = 1\n")
    with pytest.raises(FileNotFoundError, match=f"no adapt/train files .* in {tmp_path}"):
        corpus.load_text("adapt", "train", root=tmp_path)
