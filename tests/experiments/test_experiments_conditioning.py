"""lorakit.experiments.conditioning: the plain LoRA / bilinear / RSS / output-space FiLM runner."""
import pytest
import torch
from torch import nn

from lorakit.datasets.plant import OperatingSystem
from lorakit.experiments import conditioning as exp


@pytest.fixture(scope="module")
def small():
    return exp.run_conditioning(OperatingSystem(), exp.METHODS, rank=4, seeds=(0, 1), steps=150,
                                lr=3e-2, progress=False)


def test_rows_and_parameter_counts(small):
    rows = {r["method"]: r for r in small["rows"]}
    assert list(rows) == list(exp.METHODS)
    i, o, d, r = 16, 12, 2, 4
    assert rows["LoRA"]["trainable"] == r * (i + o)
    assert rows["bilinear"]["trainable"] == r * (i + o + d)
    assert rows["RSS"]["trainable"] == r * (i + o + 2 * d)
    assert rows["output-space FiLM"]["trainable"] == r * (i + o) + 2 * o * d
    for row in rows.values():
        assert len(row["error train"]["values"]) == 2


def test_ranks_follow_the_structure(small):
    rows = {r["method"]: r for r in small["rows"]}
    for m in ("LoRA", "bilinear", "bilinear, 1 + Cp", "RSS", "RSS, 1 + Cp"):
        assert rows[m]["rank across conditions"] <= 4, m    # stays in col(B)
    assert rows["output-space FiLM"]["rank across conditions"] > 4
    assert small["truth"] == {"rank per condition": 3, "rank across conditions": 4}


def test_conditioning_helps_on_a_condition_dependent_plant(small):
    err = {r["method"]: r["error interpolate"]["mean"] for r in small["rows"]}
    assert err["LoRA"] > 0.9              # nothing to learn on average
    assert err["RSS"] < 0.2 and err["output-space FiLM"] < 0.2
    assert all(v < 1.05 for v in err.values())


def test_deterministic(small):
    again = exp.run_conditioning(OperatingSystem(), exp.METHODS, rank=4, seeds=(0, 1), steps=150,
                                 lr=3e-2, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds per run"} for r in rows]  # noqa: E731
    assert strip(again["rows"]) == strip(small["rows"])


def test_update_maps_read_off_the_affine_update():
    base = nn.Linear(5, 3)
    layer = exp.OutputFiLMLoRA(base, cond_dim=2, rank=2)
    with torch.no_grad():
        for q in (layer.lora_B, layer.film_H):
            q.normal_()
    conds = torch.randn(4, 2)
    dW, db = exp.update_maps(layer, conds, base)
    x = torch.randn(6, 5)
    for k, q in enumerate(conds):
        want = layer(x, q.expand(6, -1)) - base(x)
        assert torch.allclose(x @ dW[k].T + db[k], want, atol=1e-5)


def test_output_film_starts_at_the_base():
    base = nn.Linear(5, 3)
    layer = exp.OutputFiLMLoRA(base, cond_dim=2, rank=2)
    x, p = torch.randn(4, 5), torch.randn(4, 2)
    assert torch.equal(layer(x, p), base(x))


@pytest.mark.parametrize("bad", [torch.zeros(4, 3), torch.zeros(3, 2), torch.zeros(2)])
def test_output_film_rejects_a_bad_p(bad):
    layer = exp.OutputFiLMLoRA(nn.Linear(5, 3), cond_dim=2, rank=2)
    with pytest.raises(ValueError, match="p must have"):
        layer(torch.randn(4, 5), bad)


def test_format_table(small):
    text = exp.format_table(small)
    assert text.count("\n") == 2 + len(exp.METHODS)
    assert "output-space FiLM" in text and "±" in text


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown methods"):
        exp.run_conditioning(methods=["DoRA"], progress=False)
    with pytest.raises(ValueError, match="seeds"):
        exp.run_conditioning(seeds=(), progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        exp.train(nn.Linear(2, 2), None, None, None, 1, 0.1, optimizer="lbfgs")


def test_lr_sweep_rows():
    rows = exp.lr_sweep(methods=("LoRA",), lrs=(1e-2,), seeds=(0,), steps=5, progress=False)
    assert rows[0]["method"] == "LoRA" and len(rows[0]["final"]) == 1
