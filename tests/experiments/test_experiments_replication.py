"""The replication command of notebook 06: equal budgets, a causal structure prior, a quick run."""
import torch

from lorakit.experiments import load_results, replication
from lorakit.layers import HyLoRADAv2Linear
from lorakit.lm import corpus
from lorakit.tuning import adapter_modules


def n_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_budgets_are_equal():
    counts = {m: n_trainable(replication.build(m, seed=0)) for m in replication.METHODS}
    # per block: q, o 128 -> 128 and k, v 128 -> 64; 4 blocks
    assert counts["DoRA"] == 4 * (8 * 896 + 384) == 30_208
    assert counts["LoRA"] == counts["LoRA + LoRA+"] == counts["LoRA, lr × 10"] == counts["DoRA"]
    assert counts["HyLoRADA"] == counts["DoRA"] + 16 * 2
    assert counts["HyLoRADA v2 (indent prior)"] == counts["HyLoRADA"] + 16 * replication.STRUCTURE_DIM
    assert max(counts.values()) / min(counts.values()) < 1.02


def test_builds_are_seeded_and_start_at_the_pretrained_model():
    a, b = replication.build("HyLoRADA", seed=3), replication.build("HyLoRADA", seed=3)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    x = corpus.load_tokens("adapt", "val")[:65][None, :64]
    from lorakit.lm.tinylm import load_pretrained
    with torch.no_grad():
        assert torch.allclose(a(x), load_pretrained()(x), atol=1e-5)


def test_indent_depth_by_hand():
    text = "def f():\n    x = 1\n        y\nz\n"
    depth = replication.indent_depth(corpus.encode(text)).tolist()
    want = []
    for line in text.splitlines(keepends=True):
        lead = len(line) - len(line.lstrip(" "))
        want += [min(i + 1, lead) // 4 for i in range(len(line))]
    assert depth == want
    assert depth[text.index("x")] == 1 and depth[text.index("y")] == 2 and depth[text.index("z")] == 0


def test_indent_depth_never_looks_ahead():
    tokens = corpus.load_tokens("adapt", "val")[:5000]
    full = replication.indent_depth(tokens)
    for cut in (1, 7, 123, 1000, 2501, 4999):
        assert torch.equal(replication.indent_depth(tokens[:cut]), full[:cut]), cut


def test_the_prior_reaches_every_v2_layer():
    model = replication.build("HyLoRADA v2 (indent prior)", seed=0)
    layers = [m for m in adapter_modules(model).values() if isinstance(m, HyLoRADAv2Linear)]
    assert len(layers) == 16
    with torch.no_grad():
        for layer in layers:
            layer.lora_B.normal_()
            layer.scale_from_structure.weight.normal_()
    x = corpus.load_tokens("adapt", "val")[:33][None, :32]
    prior = replication.one_hot_prior(replication.indent_depth(x[0])[None])
    with torch.no_grad():
        plain = model(x)
        with replication._prior_context(prior):
            conditioned = model(x)
    assert not torch.allclose(plain, conditioned)


def test_quick_run_writes_nothing_and_reports_every_field(tmp_path):
    result = replication.main(["--quick", "--quiet", "--methods", "LoRA", "HyLoRADA"])
    assert [r["method"] for r in result["rows"]] == ["LoRA", "HyLoRADA"]
    for row in result["rows"]:
        assert row["trainable"] > 0 and row["val_ppl"]["mean"] > 1 and row["ms_per_step"] > 0
    assert 0 < result["rows"][1]["blend_mean"] < 1 and 0 < result["rows"][1]["gate_mean"] < 1


def test_saved_results_are_complete():
    saved = load_results("replication")
    assert len(saved["seeds"]) >= 3 and saved["machine"] and saved["date"] and saved["config"]
    assert [r["method"] for r in saved["rows"]] == list(replication.METHODS)
    for row in saved["rows"]:
        assert len(row["val_ppl"]["values"]) == len(saved["seeds"])
