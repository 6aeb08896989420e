"""lorakit.experiments.structure: notebook 07's experiments, at smoke-test size."""
import json

import pytest
import torch

from lorakit import HyLoRADAv2Linear
from lorakit.experiments import RESULTS, load_results
from lorakit.experiments import structure as S


@pytest.fixture(scope="module")
def data():
    return S.code_data(train_bytes=8_000, val_bytes=4_000)


def test_models_start_at_the_pretrained_function_with_the_same_A(data):
    tokens, depths = data["train"]
    x, d = tokens[None, :64], depths[None, :64]
    models = {m: S.code_model(m, seed=1) for m in S.CODE_METHODS}
    with torch.no_grad():
        outs = [lm(x, d) for lm in models.values()]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])
    As = [[p for n, p in lm.named_parameters() if n.endswith("lora_A")] for lm in models.values()]
    assert all(torch.equal(a, b) for a, b in zip(As[0], As[2], strict=True))
    assert models["v2, AST depth"].encoder.num_structure_types == S.NUM_TYPES
    assert models["v2, positions only"].encoder.structure_embeddings is None


def test_the_prior_reaches_every_v2_layer(data):
    lm = S.code_model("v2, AST depth", seed=0)
    tokens, depths = data["train"]
    x, d = tokens[None, :32], depths[None, :32]
    with torch.no_grad():
        for m in lm.modules():
            if isinstance(m, HyLoRADAv2Linear):
                m.lora_B.normal_(std=0.05)
                m.scale_from_structure.weight.normal_()
        y_prior = lm(x, d)
        y_none = lm.model(x)                          # no structure_prior block: v1
    assert not torch.allclose(y_prior, y_none)
    f = S.position_factors(lm, x[0], d[0])
    assert len(f) == 16 and all(v.shape == (32,) for v in f.values())


def test_run_code_and_factor_stats(data):
    out = S.run_code(seeds=(0,), steps=2, batch_size=2, context=32, eval_windows=2, data=data,
                     keep_models=True)
    assert set(out["methods"]) == set(S.CODE_METHODS)
    ast = out["methods"]["v2, AST depth"]
    assert "minus_v1" in ast and len(ast["runs"][0]["factors"]) == 16
    stats = next(iter(ast["runs"][0]["factors"].values()))
    assert 0.5 < stats["min"] <= stats["mean"] <= stats["max"] < 1.5
    assert len(stats["by_depth"]) == S.NUM_TYPES
    assert isinstance(out["models"]["v1"], S.StructuredLM)


def test_temporal_finds_the_period_from_a_close_start():
    task = S.temporal_task(windows=4, test_windows=2)
    r = S.fit_temporal(task, 24.0 * 0.97, steps=150)
    assert r["found"] and r["test_over_floor"] < 2
    v1 = S.fit_temporal(task, None, steps=150)
    assert v1["period"] is None and v1["test_over_floor"] > 3


def test_quick_command_writes_nothing_by_default(tmp_path, capsys):
    before = sorted(RESULTS.glob("*.json"))
    out = S.main(["--quick", "--skip-code"])
    assert sorted(RESULTS.glob("*.json")) == before
    assert out["temporal"]["rows"] and "code" not in out
    S.main(["--quick", "--skip-code", "--out", str(tmp_path / "s.json")])
    assert json.loads((tmp_path / "s.json").read_text())["temporal"]["true_period"] == 24.0


def test_saved_results_have_what_the_notebook_reads():
    full = load_results("structure")
    assert {"date", "machine", "seeds", "temporal", "code"} <= set(full)
    methods = full["code"]["methods"]
    assert set(methods) == set(S.CODE_METHODS)
    assert all("factors" in r for r in methods["v2, AST depth"]["runs"])
    for row in full["temporal"]["rows"]:
        assert {"method", "offset", "train_cycles", "test_over_floor", "seeds"} <= set(row)
