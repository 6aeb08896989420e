"""lorakit.DoRALinear against the definition and against PEFT's DoRA."""
import pytest
import torch
from torch import nn

from lorakit import DoRALinear, MergeStateError

IN, OUT, R = 24, 10, 4


def make(bias=True, dtype=torch.float32, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    layer = DoRALinear(nn.Linear(IN, OUT, bias=bias).to(dtype), rank=R, alpha=8, dropout=dropout)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.3)
        layer.magnitude.mul_(torch.linspace(0.5, 1.5, OUT, dtype=dtype))
    return layer


def definition(layer, x):
    """Straight from the paper: build V = W + s·BA, normalise rows, rescale by m."""
    W, b = layer.base_layer.weight.double(), layer.base_layer.bias
    V = W + layer.scaling * (layer.lora_B @ layer.lora_A).double()
    W_adapted = layer.magnitude.double()[:, None] * V / V.norm(dim=1, keepdim=True)
    y = x.double() @ W_adapted.T
    return y if b is None else y + b.double()


@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_definition(bias):
    layer = make(bias)
    x = torch.randn(2, 5, IN)
    torch.testing.assert_close(layer(x).double(), definition(layer, x), rtol=1e-5, atol=1e-5)


def test_identity_at_init():
    torch.manual_seed(0)
    layer = DoRALinear(nn.Linear(IN, OUT), rank=R)
    x = torch.randn(7, IN)
    torch.testing.assert_close(layer(x), layer.base_layer(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.magnitude, layer.base_layer.weight.norm(dim=1))
    n_trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert n_trainable == R * (IN + OUT) + OUT


def test_norm_is_detached_and_rowwise():
    layer = make()
    W = layer.base_layer.weight
    V = W + layer.scaling * layer.lora_B @ layer.lora_A
    torch.testing.assert_close(layer.weight_norm(), V.norm(dim=1).detach())   # rows, not columns
    assert not layer.weight_norm().requires_grad
    # gradient of m: with n constant, dy/dm_i = (V x)_i / n_i
    x = torch.randn(3, IN)
    layer(x).sum().backward()
    want = ((x @ V.T) / V.norm(dim=1)).sum(0)
    torch.testing.assert_close(layer.magnitude.grad, want.detach())


def test_zero_row_does_not_produce_nan():
    torch.manual_seed(0)
    base = nn.Linear(IN, OUT)
    with torch.no_grad():
        base.weight[3] = 0
    layer = DoRALinear(base, rank=R)
    assert torch.isfinite(layer(torch.randn(4, IN))).all()


def test_merge_unmerge_round_trip_and_protocol():
    layer = make()
    x = torch.randn(4, IN)
    w0, y0 = layer.base_layer.weight.clone(), layer(x)
    lin = layer.to_linear()
    torch.testing.assert_close(lin(x), y0, rtol=1e-5, atol=1e-5)
    layer.merge()
    torch.testing.assert_close(layer(x), y0, rtol=1e-5, atol=1e-5)
    with pytest.raises(MergeStateError, match="already merged"):
        layer.merge()
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=1e-5, atol=1e-6)
    with pytest.raises(MergeStateError, match="not merged"):
        layer.unmerge()


def test_merge_refuses_nan():
    layer = make()
    with torch.no_grad():
        layer.magnitude[0] = float("nan")
    w0 = layer.base_layer.weight.clone()
    with pytest.raises(MergeStateError, match="NaN or Inf"):
        layer.merge()
    assert torch.equal(layer.base_layer.weight, w0)


def test_bf16_ratio_in_float32():
    layer = make(dtype=torch.bfloat16)
    x = torch.randn(3, IN, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), definition(layer, x), rtol=3e-2, atol=3e-2)


def test_forward_never_builds_out_by_in():
    from lorakit.checks import BigIntermediates
    torch.manual_seed(0)
    layer = DoRALinear(nn.Linear(64, 48), rank=4)
    layer.weight_norm()  # fill the ‖W‖² cache (recomputed only when W changes)
    x = torch.randn(3, 64)
    with BigIntermediates(limit=64 * 48) as probe:
        layer(x).sum().backward()
    assert probe.seen == []


def test_cache_follows_weight_changes():
    layer = make()
    n0 = layer.weight_norm().clone()
    with torch.no_grad():
        layer.base_layer.weight.mul_(2)
    merged = layer.base_layer.weight + layer.scaling * layer.lora_B @ layer.lora_A
    torch.testing.assert_close(layer.weight_norm(), merged.norm(dim=1))
    assert not torch.allclose(n0, layer.weight_norm())


def _peft_pair(dropout=0.0, bias=True):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(IN, OUT, bias=bias))
    ours = DoRALinear(nn.Linear(IN, OUT, bias=bias), rank=R, alpha=8, dropout=dropout)
    ours.base_layer.load_state_dict(model.proj.state_dict())
    cfg = peft.LoraConfig(r=R, lora_alpha=8, lora_dropout=dropout, target_modules=["proj"], use_dora=True)
    pm = peft.get_peft_model(model, cfg)
    layer = pm.base_model.model.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(std=0.3)
        ours.lora_A.copy_(layer.lora_A["default"].weight)
        ours.lora_B.copy_(layer.lora_B["default"].weight)
        layer.lora_magnitude_vector["default"].weight.mul_(1.1)
        ours.magnitude.copy_(layer.lora_magnitude_vector["default"].weight)
    return ours, layer


@pytest.mark.parametrize("bias", [True, False])
def test_same_outputs_and_gradients_as_peft(bias):
    ours, theirs = _peft_pair(bias=bias)
    x = torch.randn(2, 6, IN, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y1, y2 = ours(x), theirs(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.lora_A.grad, theirs.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.lora_B.grad, theirs.lora_B["default"].weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.magnitude.grad, theirs.lora_magnitude_vector["default"].weight.grad,
                               rtol=1e-4, atol=1e-6)


def test_same_outputs_as_peft_with_dropout_in_training():
    ours, theirs = _peft_pair(dropout=0.3)
    ours.train(), theirs.train()
    x = torch.randn(4, IN)
    torch.manual_seed(5)
    y1 = ours(x)
    torch.manual_seed(5)
    y2 = theirs(x)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-6)


def test_merge_matches_peft_merge():
    ours, theirs = _peft_pair()
    x = torch.randn(3, IN)
    ours.merge()
    theirs.merge()
    torch.testing.assert_close(ours.base_layer.weight, theirs.base_layer.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    layer = make()
    x = torch.randn(4, IN)
    y = layer(x)
    torch.testing.assert_close(layer.cuda()(x.cuda()).cpu(), y, rtol=1e-4, atol=1e-5)
