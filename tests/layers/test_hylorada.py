"""HyLoRADA v1/v2 against their definition, the structure encoders, LoRA+ groups, and the
parameter counts of seed 003 (lorakit.layers.hylorada, lorakit.conditioning.encoders, lorakit.tuning.loraplus,
lorakit.notebook.analysis.adapter_param_count)."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import LAYER_CASES, TEST_SIZES
from torch import nn

from lorakit import (
    BilinearLoRALinear,
    DoRALinear,
    HyLoRADALinear,
    HyLoRADAv2Linear,
    LoRALinear,
    MergeStateError,
    RSSBilinearLoRA,
    StructureEncoder,
    TemporalStructureEncoder,
)
from lorakit.conditioning.encoders import relative_position_bucket
from lorakit.notebook.analysis import METHODS, adapter_param_count, model_param_count
from lorakit.tuning.loraplus import GROUPS, loraplus_param_groups

IN, OUT, R, K = 24, 10, 4, 6       # K: structure_dim in the small tests


def make(v2=False, bias=True, dtype=torch.float32, seed=0, moved=True, dropout=0.0):
    """A layer with random non-zero B, and (moved=True) m, gate and blend away from their inits."""
    torch.manual_seed(seed)
    base = nn.Linear(IN, OUT, bias=bias).to(dtype)
    if v2:
        layer = HyLoRADAv2Linear(base, rank=R, alpha=8, structure_dim=K, dropout=dropout)
    else:
        layer = HyLoRADALinear(base, rank=R, alpha=8, dropout=dropout)
    if moved:
        with torch.no_grad():
            layer.lora_B.normal_(std=0.3)
            layer.magnitude.mul_(torch.linspace(0.5, 1.5, OUT, dtype=dtype))
            layer.magnitude_gate.fill_(0.7)
            layer.residual_weight.fill_(-0.4)
            if v2:
                layer.scale_from_structure.weight.normal_()
    return layer


def definition(layer, x, prior=None):
    """Seed 003's formula, float64, building the (out, in) matrices the layer never builds."""
    def d(t):
        return t.detach().double()

    W, s = d(layer.base_layer.weight), layer.scaling
    b = 0 if layer.base_layer.bias is None else d(layer.base_layer.bias)
    BA = s * d(layer.lora_B) @ d(layer.lora_A)
    n = (W + BA).norm(dim=1)                                    # per row of W + sBA
    gate, beta = torch.sigmoid(d(layer.magnitude_gate)), torch.sigmoid(d(layer.residual_weight))
    m_eff = d(layer.magnitude) * gate + d(layer.magnitude_init) * (1 - gate)
    x = x.double()
    update = x @ BA.T
    if prior is not None:                                       # per-position factor, update only
        update = update * (0.5 + torch.sigmoid(prior.double() @ d(layer.scale_from_structure.weight).T))
    z = x @ W.T + update
    dora = (m_eff / n) * z + b
    lora = z + b
    return (1 - beta) * dora + beta * lora


def grads(layer):
    return {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}


# --- init --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_identity_at_init(bias):
    torch.manual_seed(0)
    x = torch.randn(2, 5, IN)
    for layer in (HyLoRADALinear(nn.Linear(IN, OUT, bias=bias), rank=R),
                  HyLoRADAv2Linear(nn.Linear(IN, OUT, bias=bias), rank=R, structure_dim=K)):
        base = layer.base_layer(x)
        torch.testing.assert_close(layer(x), base, rtol=1e-6, atol=1e-6)
        norms = layer.base_layer.weight.norm(dim=1)
        torch.testing.assert_close(layer.magnitude, norms)     # not ones (the seed's bug)
        assert torch.equal(layer.magnitude_init, layer.magnitude.detach())
        assert not layer.magnitude_init.requires_grad
        if isinstance(layer, HyLoRADAv2Linear):
            prior = torch.randn(2, 5, K) * 10
            torch.testing.assert_close(layer(x, prior), base, rtol=1e-6, atol=1e-6)


def test_init_values_of_gate_and_blend():
    layer = HyLoRADALinear(nn.Linear(IN, OUT), rank=R)
    assert layer.gate().item() == pytest.approx(0.5)
    assert layer.blend().item() == pytest.approx(1 / (1 + math.exp(-0.1)))   # σ(0.1) ≈ 0.525
    assert layer.blend().item() == pytest.approx(0.525, abs=1e-3)
    custom = HyLoRADALinear(nn.Linear(IN, OUT), rank=R, gate_init=-1.0,
                            residual_init=math.log(0.1 / 0.9))
    assert custom.blend().item() == pytest.approx(0.1)
    assert custom.gate().item() == pytest.approx(1 / (1 + math.e))
    custom.reset_parameters()                                   # back to the chosen inits
    assert custom.blend().item() == pytest.approx(0.1)


def test_A_has_orthonormal_rows():
    torch.manual_seed(1)
    layer = HyLoRADALinear(nn.Linear(IN, OUT), rank=R)
    A = layer.lora_A.detach()
    torch.testing.assert_close(A @ A.T, torch.eye(R), rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(layer.lora_B) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        HyLoRADALinear(nn.Linear(IN, OUT), rank=OUT + 1)
    with pytest.raises(TypeError, match="nn.Linear"):
        HyLoRADALinear(nn.Conv1d(IN, OUT, 1), rank=R)
    with pytest.raises(ValueError, match="gate_init"):
        HyLoRADALinear(nn.Linear(IN, OUT), rank=R, gate_init=float("nan"))
    with pytest.raises(ValueError, match="structure_dim"):
        HyLoRADAv2Linear(nn.Linear(IN, OUT), rank=R, structure_dim=0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 24\)"):
        make()(torch.randn(3, OUT))


# --- forward -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_definition(bias):
    x = torch.randn(2, 5, IN)
    layer = make(bias=bias)
    torch.testing.assert_close(layer(x).double(), definition(layer, x), rtol=1e-5, atol=1e-5)
    v2 = make(v2=True, bias=bias)
    prior = torch.randn(2, 5, K)
    torch.testing.assert_close(v2(x, prior).double(), definition(v2, x, prior), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v2(x).double(), definition(v2, x), rtol=1e-5, atol=1e-5)


def test_forward_with_dropout_follows_dora_rule():
    layer = make(v2=True, dropout=0.3)
    x, prior = torch.randn(4, 3, IN), torch.randn(4, 3, K)
    layer.train()
    torch.manual_seed(5)
    y = layer(x, prior)
    torch.manual_seed(5)
    xd = F.dropout(x, 0.3, training=True)
    c = layer.scale().detach()
    f = layer.position_factor(prior).detach()
    W = layer.base_layer.weight
    want = layer.base_layer(x) + (c - 1) * (xd @ W.T) + c * f * layer.scaling * (xd @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(y, want.detach(), rtol=1e-5, atol=1e-5)
    layer.eval()                                                # eval: no dropout, the definition
    torch.testing.assert_close(layer(x, prior).double(), definition(layer, x, prior), rtol=1e-5, atol=1e-5)


def test_v2_without_prior_equals_v1_with_the_same_weights():
    v1, v2 = make(seed=3), make(v2=True, seed=3)
    v2.load_state_dict(v1.state_dict(), strict=False)
    x = torch.randn(2, 7, IN)
    assert torch.equal(v2(x), v1(x))
    assert v2.scale_from_structure.weight.abs().sum() > 0       # w plays no part without a prior


def test_position_factor_scales_the_update_term_only():
    layer = make(v2=True)
    x, prior = torch.randn(1, 4, IN), torch.randn(1, 4, K) * 3
    with torch.no_grad():
        f = layer.position_factor(prior)                         # (1, 4, 1), in (0.5, 1.5)
        c = layer.scale()
        W, b = layer.base_layer.weight, layer.base_layer.bias
        update = layer.scaling * x @ (layer.lora_B @ layer.lora_A).T
        want = c * (x @ W.T + f * update) + b                    # not c·f·(Wx + update)
        torch.testing.assert_close(layer(x, prior), want, rtol=1e-5, atol=1e-5)
        assert ((f > 0.5) & (f < 1.5)).all() and f.std() > 0.05
        # per position: changing the prior at token 2 changes token 2's output only
        p2 = prior.clone()
        p2[0, 2] += 5
        diff = (layer(x, p2) - layer(x, prior)).abs().amax(dim=-1)[0]
        assert diff[2] > 1e-3 and diff[[0, 1, 3]].max() == 0
        # the row norm is per row of the weight: the same whatever the prior
        n_before = layer.weight_norm().clone()
        layer(x, p2)
        assert torch.equal(layer.weight_norm(), n_before)
        # with B = 0 the prior has no effect at all (it scales the update, nothing else)
        layer.lora_B.zero_()
        assert torch.equal(layer(x, prior), layer(x))


def test_bad_structure_prior_names_the_expected_shape():
    layer = make(v2=True)
    x = torch.randn(2, 5, IN)
    for bad in (torch.randn(2, 5, K + 1), torch.randn(2, K), torch.randn(1, 5, K)):
        with pytest.raises(ValueError, match=r"\(2, 5, 6\)"):
            layer(x, bad)
    with pytest.raises(TypeError, match="floating"):
        layer(x, torch.ones(2, 5, K, dtype=torch.long))


# --- gradients ---------------------------------------------------------------------------------
def test_gate_has_zero_gradient_until_m_moves():
    torch.manual_seed(0)
    layer = HyLoRADALinear(nn.Linear(IN, OUT), rank=R)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.3)                           # a trained B: gate still stuck
    x = torch.randn(8, IN)
    layer(x).pow(2).sum().backward()
    assert layer.magnitude_gate.grad.item() == 0.0              # ∂m_eff/∂g = σ'(g)(m − m_init) = 0
    assert layer.magnitude.grad.abs().sum() > 0
    assert layer.residual_weight.grad.abs().item() > 0          # the blend does learn
    opt = torch.optim.SGD([layer.magnitude], lr=0.1)
    opt.step()                                                  # one step of m ...
    layer.zero_grad()
    layer(x).pow(2).sum().backward()
    assert layer.magnitude_gate.grad.abs().item() > 0           # ... and g gets a gradient


def test_norm_is_detached_and_blend_gradient():
    layer = make()
    x = torch.randn(5, IN)
    layer(x).sum().backward()
    V = (layer.base_layer.weight + layer.scaling * layer.lora_B @ layer.lora_A).detach()
    n = V.norm(dim=1)
    g, beta = layer.gate().detach(), layer.blend().detach()
    # y = c ⊙ Vx + b with c = (1-β) m_eff/n + β and n constant: dy/dm_i = (1-β) γ (Vx)_i / n_i
    want = ((1 - beta) * g * (x @ V.T) / n).sum(0)
    torch.testing.assert_close(layer.magnitude.grad, want, rtol=1e-5, atol=1e-6)
    m_eff = layer.effective_magnitude().detach()
    want_b = (beta * (1 - beta) * (1 - m_eff / n) * (x @ V.T)).sum()
    torch.testing.assert_close(layer.residual_weight.grad, want_b, rtol=1e-4, atol=1e-6)


def test_forward_and_backward_never_build_out_by_in():
    from lorakit.checks import BigIntermediates
    torch.manual_seed(0)
    for layer, extra in ((HyLoRADALinear(nn.Linear(64, 48), rank=4), ()),
                         (HyLoRADAv2Linear(nn.Linear(64, 48), rank=4, structure_dim=8),
                          (torch.randn(3, 5, 8),))):
        with torch.no_grad():
            layer.lora_B.normal_()
        layer.weight_norm()                                     # fill the ‖W‖² cache
        x = torch.randn(3, 5, 64)
        with BigIntermediates(limit=64 * 48) as probe:
            layer(x, *extra).sum().backward()
        assert probe.seen == []


# --- merging -----------------------------------------------------------------------------------
@pytest.mark.parametrize("v2", [False, True])
def test_merge_unmerge_round_trip(v2):
    layer = make(v2=v2)
    x = torch.randn(2, 4, IN)
    w0, y0 = layer.base_layer.weight.clone(), layer(x)
    torch.testing.assert_close(layer.to_linear()(x), y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.base_layer.weight + layer.delta_weight(),
                               layer.to_linear().weight, rtol=1e-6, atol=1e-6)
    layer.merge()
    torch.testing.assert_close(layer(x), y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.to_linear()(x), y0, rtol=1e-5, atol=1e-5)
    with pytest.raises(MergeStateError, match=f"{type(layer).__name__} is already merged"):
        layer.merge()
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer(x), y0, rtol=1e-5, atol=1e-5)
    with pytest.raises(MergeStateError, match="not merged"):
        layer.unmerge()


def test_merged_v2_refuses_a_structure_prior():
    layer = make(v2=True)
    x, prior = torch.randn(2, 4, IN), torch.randn(2, 4, K)
    y_prior, y_plain = layer(x, prior), layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), y_plain, rtol=1e-5, atol=1e-5)
    with pytest.raises(MergeStateError, match="unmerge"):
        layer(x, prior)
    layer.unmerge()
    torch.testing.assert_close(layer(x, prior), y_prior, rtol=1e-5, atol=1e-5)


def test_merge_refuses_nan_and_leaves_the_weight():
    layer = make()
    with torch.no_grad():
        layer.magnitude[0] = float("inf")
    w0 = layer.base_layer.weight.clone()
    with pytest.raises(MergeStateError, match="NaN or Inf"):
        layer.merge()
    assert torch.equal(layer.base_layer.weight, w0) and not layer.merged


def test_save_load_and_merge_and_unload_in_a_model(tmp_path):
    from lorakit.tuning import (
        inject_adapters,
        load_adapter,
        mark_only_adapters_trainable,
        merge_and_unload,
        save_adapter,
    )

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(IN, 16), nn.ReLU(), nn.Linear(16, OUT))

    m = model()
    inject_adapters(m, HyLoRADAv2Linear, ["0", "2"], rank=R, structure_dim=K, residual_init=-1.0)
    mark_only_adapters_trainable(m)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, IN)
    y = m(x)
    save_adapter(m, tmp_path / "a")
    fresh = model()
    load_adapter(fresh, tmp_path / "a")
    assert fresh[0].residual_init == -1.0
    torch.testing.assert_close(fresh(x), y)
    torch.testing.assert_close(merge_and_unload(fresh)(x), y, rtol=1e-5, atol=1e-5)


# --- parameter counts --------------------------------------------------------------------------
def n_trainable(layer):
    return sum(p.numel() for p in layer.parameters() if p.requires_grad)


def test_parameter_counts_reproduce_seed_003():
    assert n_trainable(HyLoRADALinear(nn.Linear(896, 896), rank=8)) == 15_234
    assert 8 * 1792 + 896 + 2 == 15_234
    assert n_trainable(HyLoRADALinear(nn.Linear(768, 768), rank=8)) == 13_058
    assert n_trainable(HyLoRADAv2Linear(nn.Linear(768, 768), rank=8, structure_dim=32)) == 13_090
    assert adapter_param_count("hylorada", 896, 896, 8) == 15_234
    assert adapter_param_count("hylorada", 768, 768, 8) == 13_058
    assert adapter_param_count("hylorada_v2", 768, 768, 8, structure_dim=32) == 13_090
    assert adapter_param_count("hylorada_v2", 768, 768, 8) == 13_090      # default 32


@pytest.mark.parametrize("case", LAYER_CASES, ids=str)
def test_adapter_param_count_matches_the_layers(case):
    """Every family's declared count (ADAPTER.trainable_params) equals its built layer's."""
    d_in, d_out, r = 20, 13, 3
    layer = case.build(nn.Linear(d_in, d_out), r, 1.0)
    sizes = {k: TEST_SIZES[k] for k in case.spec.sizes}
    assert adapter_param_count(case.name, d_in, d_out, r, **sizes) == n_trainable(layer)


def test_every_family_has_a_count():
    assert list(METHODS) == [case.name for case in LAYER_CASES]


def test_adapter_param_count_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        adapter_param_count("lorax", 8, 8, 2)
    with pytest.raises(ValueError, match="cond_dim"):
        adapter_param_count("rss", 8, 8, 2)
    with pytest.raises(ValueError, match="cond_dim"):
        adapter_param_count("lora", 8, 8, 2, cond_dim=3)
    with pytest.raises(ValueError, match="structure_dim"):
        adapter_param_count("hylorada", 8, 8, 2, structure_dim=3)
    with pytest.raises(ValueError, match="rank"):
        adapter_param_count("dora", 8, 4, 5)
    with pytest.raises(ValueError, match="pair"):
        model_param_count([(8, 8, 8)], "lora", 2)


def test_qwen2_5_0_5b_model_wide_counts():
    """Seed 003's "~1.46M" assumes square k/v; Qwen2.5-0.5B's GQA k/v are 896 -> 128."""
    blocks = 24
    qkvo = [(896, 896), (896, 128), (896, 128), (896, 896)] * blocks
    assert model_param_count(qkvo, "hylorada", 8) == 1_130_688               # the table's "1.1M"
    assert blocks * (2 * 15_234 + 2 * (8 * 1024 + 128 + 2)) == 1_130_688
    assert model_param_count([(896, 896)] * 4 * blocks, "hylorada", 8) == 1_462_464   # "~1.46M"
    assert model_param_count(qkvo, "dora", 8) == 1_130_496                   # DoRA "1.1M"
    assert model_param_count([(896, 896), (896, 128)] * blocks, "lora", 8) == 540_672  # "540K", q,v only
    assert model_param_count(qkvo, "lora", 8) == 1_081_344                   # LoRA at equal targets


# --- structure encoders ------------------------------------------------------------------------
def test_relative_position_bucket():
    d = torch.arange(-2000, 2001)
    b = relative_position_bucket(d, num_buckets=64, max_distance=512)
    assert b.min() == 0 and b.max() == 128 and b[2000] == 64               # d = 0 at the centre
    pos = b[2000:]
    assert (pos[1:] >= pos[:-1]).all()                                     # monotone in |d|
    assert torch.equal(pos[:32], torch.arange(64, 96))                     # exact near 0
    assert torch.equal(64 - (b[:2001].flip(0) - 64), pos)                  # mirror for d < 0
    assert (pos[512:] == 128).all() and len(set(pos.tolist())) == 65


def test_structure_encoder_shapes_and_types():
    torch.manual_seed(0)
    enc = StructureEncoder(structure_dim=K, encoding_dim=8, num_buckets=16, max_distance=64,
                           num_structure_types=5)
    pos = enc.get_position_tensor(2, 7)
    assert pos.shape == (2, 7) and pos.dtype == torch.long
    types = torch.randint(0, 5, (2, 7))
    assert enc(pos).shape == (2, 7, K)
    assert enc(pos, types).shape == (2, 7, K)
    assert not torch.allclose(enc(pos, types), enc(pos))
    assert enc(pos - 3).shape == (2, 7, K)                                 # negative offsets
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        enc(pos, types + 5)
    with pytest.raises(TypeError, match="integer"):
        enc(pos.float())
    with pytest.raises(ValueError, match="num_structure_types"):
        StructureEncoder(structure_dim=K, encoding_dim=8)(pos, types)
    with pytest.raises(ValueError, match="even"):
        StructureEncoder(encoding_dim=7)


def test_temporal_encoder_shapes_periods_and_precision():
    enc = TemporalStructureEncoder(structure_dim=K, num_periods=3, init_periods=(24.0, 168.0, 7.0))
    assert enc.periods().tolist() == [24.0, 168.0, 7.0]                    # exact at init
    t = torch.rand(2, 9, dtype=torch.float64) * 100
    assert enc(t).shape == (2, 9, K)
    one = TemporalStructureEncoder(structure_dim=K, num_periods=1, init_periods=(24.0,))
    torch.testing.assert_close(one(t), one(t + 24 * 1000), rtol=1e-4, atol=1e-5)  # periodic
    with pytest.raises(ValueError, match="init_periods"):
        TemporalStructureEncoder(num_periods=2, init_periods=(1.0, -2.0))
    default = TemporalStructureEncoder(num_periods=4)
    assert torch.all(default.periods()[1:] > default.periods()[:-1])


def test_temporal_encoder_keeps_precision_of_large_timestamps():
    one = TemporalStructureEncoder(structure_dim=K, num_periods=1, init_periods=(24.0,))
    origin = 24.0 * 70_000_000                                 # ~1.7e9, a multiple of the period
    far = torch.tensor([[origin + 6.0, origin + 7.5]], dtype=torch.float64)
    near = torch.tensor([[6.0, 7.5]], dtype=torch.float64)
    torch.testing.assert_close(one(far), one(near), rtol=1e-5, atol=1e-6)


def test_gradient_flows_from_v2_through_the_encoders():
    torch.manual_seed(0)
    layer = make(v2=True)
    x = torch.randn(2, 5, IN)
    for enc, inputs in ((StructureEncoder(structure_dim=K, encoding_dim=8, num_structure_types=3),
                         (StructureEncoder.get_position_tensor(2, 5), torch.randint(0, 3, (2, 5)))),
                        (TemporalStructureEncoder(structure_dim=K, num_periods=2),
                         (torch.rand(2, 5) * 10,))):
        layer.zero_grad()
        with torch.no_grad():
            layer.scale_from_structure.weight.zero_()           # w at its init
        layer(x, enc(*inputs)).pow(2).sum().backward()
        assert layer.scale_from_structure.weight.grad.abs().sum() > 0   # w learns from step 1
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in enc.parameters())
        with torch.no_grad():
            layer.scale_from_structure.weight.normal_()          # once w has moved ...
        layer(x, enc(*inputs)).pow(2).sum().backward()
        for name, p in enc.named_parameters():                   # ... every encoder part learns
            if name != "structure_embeddings.weight" or inputs[1:]:
                assert p.grad is not None and p.grad.abs().sum() > 0, name


# --- LoRA+ groups ------------------------------------------------------------------------------
class Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lora = LoRALinear(nn.Linear(8, 6), rank=2)
        self.dora = DoRALinear(nn.Linear(8, 6), rank=2)
        self.hy = HyLoRADALinear(nn.Linear(8, 6), rank=2)
        self.hy2 = HyLoRADAv2Linear(nn.Linear(8, 6), rank=2, structure_dim=4)
        self.bil = BilinearLoRALinear(nn.Linear(8, 6), cond_dim=3, rank=2)
        self.rss = RSSBilinearLoRA(nn.Linear(8, 6), cond_dim=3, rank=2)
        self.enc = StructureEncoder(structure_dim=4, encoding_dim=4, num_structure_types=2)
        self.tenc = TemporalStructureEncoder(structure_dim=4, num_periods=2)
        self.head = nn.Linear(6, 2)
        self.head.weight.requires_grad_(False)                  # frozen: left out
        self.scale = nn.Parameter(torch.ones(()))               # unknown: "other"
        self.rss.base_layer.bias.requires_grad_(True)           # an unfrozen bias


EXPECTED = {
    "lora.lora_A": "lora_A", "dora.lora_A": "lora_A", "hy.lora_A": "lora_A", "hy2.lora_A": "lora_A",
    "bil.lora_A": "lora_A", "rss.lora_A": "lora_A",
    "lora.lora_B": "lora_B", "dora.lora_B": "lora_B", "hy.lora_B": "lora_B", "hy2.lora_B": "lora_B",
    "bil.lora_B": "lora_B", "rss.lora_B": "lora_B",
    "dora.magnitude": "magnitude", "hy.magnitude": "magnitude", "hy2.magnitude": "magnitude",
    "hy.magnitude_gate": "gates", "hy.residual_weight": "gates", "hy2.magnitude_gate": "gates",
    "hy2.residual_weight": "gates", "enc.gate": "gates", "tenc.gate": "gates",
    "bil.lora_C": "condition", "rss.lora_C": "condition", "rss.lora_S": "condition",
    "hy2.scale_from_structure.weight": "structure", "enc.bucket_embeddings.weight": "structure",
    "enc.structure_embeddings.weight": "structure", "enc.proj.weight": "structure",
    "tenc.proj.weight": "structure",
    "enc.freq_scale": "structure_scales", "tenc.period_log_ratio": "structure_scales",
    "rss.base_layer.bias": "bias", "head.bias": "bias",
    "scale": "other",
}


def test_loraplus_groups_put_every_parameter_in_its_group():
    model = Zoo()
    groups = loraplus_param_groups(model, lr=1e-3, ratio=16, weight_decay=0.01)
    got = {n: g["name"] for g in groups for n in g["param_names"]}
    assert got == EXPECTED                                      # each trainable param exactly once
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(got) == trainable and sum(len(g["params"]) for g in groups) == len(trainable)
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == list(GROUPS)
    assert by_name["lora_B"]["lr"] == pytest.approx(16e-3)
    assert all(g["lr"] == 1e-3 for g in groups if g["name"] != "lora_B")
    assert {g["name"] for g in groups if g["weight_decay"] == 0} == {
        "magnitude", "gates", "structure_scales", "bias"}
    params = dict(model.named_parameters())
    for g in groups:
        assert all(p is params[n] for n, p in zip(g["param_names"], g["params"], strict=True))
    opt = torch.optim.AdamW(groups)
    assert [g["name"] for g in opt.param_groups] == list(GROUPS)
    x = torch.randn(3, 8)
    loss = model.hy(x).sum() + model.hy2(x).sum() + model.lora(x).sum()
    loss.backward()
    before = model.hy.lora_A.detach().clone()
    opt.step()
    assert not torch.equal(model.hy.lora_A, before)


def test_loraplus_groups_errors_and_defaults():
    layer = HyLoRADALinear(nn.Linear(8, 6), rank=2)
    groups = loraplus_param_groups(layer, lr=1e-4)
    assert [g["name"] for g in groups] == ["lora_A", "lora_B", "magnitude", "gates"]
    assert groups[1]["lr"] == pytest.approx(16e-4) and groups[0]["weight_decay"] == 0
    with pytest.raises(ValueError, match="lr"):
        loraplus_param_groups(layer, lr=0)
    with pytest.raises(ValueError, match="ratio"):
        loraplus_param_groups(layer, lr=1e-4, ratio=-1)
    layer.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        loraplus_param_groups(layer, lr=1e-4)


# --- dtype / device ----------------------------------------------------------------------------
def test_bf16_follows_the_definition():
    layer = make(v2=True, dtype=torch.bfloat16)
    x, prior = torch.randn(3, IN, dtype=torch.bfloat16), torch.randn(3, K)
    y = layer(x, prior)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), definition(layer, x, prior), rtol=3e-2, atol=3e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    layer, enc = make(v2=True), StructureEncoder(structure_dim=K, encoding_dim=8)
    x, pos = torch.randn(2, 5, IN), StructureEncoder.get_position_tensor(2, 5)
    y = layer(x, enc(pos))
    layer, enc = layer.cuda(), enc.cuda()
    y_cuda = layer(x.cuda(), enc(pos.cuda()))
    torch.testing.assert_close(y_cuda.cpu(), y, rtol=1e-4, atol=1e-5)
    layer.merge()
    torch.testing.assert_close(layer(x.cuda()).cpu(), make(v2=True)(x), rtol=1e-4, atol=1e-5)
    t = TemporalStructureEncoder(structure_dim=K).cuda()
    assert t(torch.rand(2, 5, device="cuda")).device.type == "cuda"
