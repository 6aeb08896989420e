"""lorakit.LoRALinear: the equation, the merge protocol, bad input, dtype/device following."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lorakit import LoRALinear, MergeStateError
from lorakit.checks import lora as checks


def make(in_f=12, out_f=7, rank=3, alpha=6.0, bias=True, seed=0, random_b=True):
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(in_f, out_f, bias=bias), rank=rank, alpha=alpha)
    if random_b:
        with torch.no_grad():
            layer.lora_B.normal_()
    return layer


def reference(layer, x):
    W, b = layer.base_layer.weight, layer.base_layer.bias
    y = x @ W.T + (b if b is not None else 0)
    return y + (layer.alpha / layer.rank) * x @ (layer.lora_B @ layer.lora_A).T


@pytest.mark.parametrize("check", list(checks.CHECKS.values()), ids=list(checks.CHECKS))
def test_reference_passes_the_notebook_checks(check):
    check(LoRALinear)


def test_merge_check_passes_with_to_linear():
    checks.check_merge(LoRALinear, lambda layer: layer.to_linear())


@settings(max_examples=40, deadline=None)
@given(in_f=st.integers(1, 20), out_f=st.integers(1, 20), data=st.data(),
       lead=st.lists(st.integers(1, 4), min_size=0, max_size=3), bias=st.booleans())
def test_forward_matches_equation_for_any_shape(in_f, out_f, data, lead, bias):
    rank = data.draw(st.integers(1, min(in_f, out_f)))
    layer = make(in_f, out_f, rank, alpha=2.0, bias=bias)
    x = torch.randn(*lead, in_f)
    y = layer(x)
    assert y.shape == (*lead, out_f)
    torch.testing.assert_close(y, reference(layer, x))


@settings(max_examples=25, deadline=None)
@given(in_f=st.integers(1, 16), out_f=st.integers(1, 16), data=st.data())
def test_merge_unmerge_round_trip(in_f, out_f, data):
    rank = data.draw(st.integers(1, min(in_f, out_f)))
    layer = make(in_f, out_f, rank)
    x = torch.randn(3, in_f)
    w0, y0 = layer.base_layer.weight.clone(), layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), y0)      # forward does not count the update twice
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer(x), y0)


def test_identity_at_init_and_counts():
    layer = make(random_b=False)
    x = torch.randn(4, 12)
    torch.testing.assert_close(layer(x), layer.base_layer(x), rtol=0, atol=0)
    assert sum(p.numel() for p in layer.parameters() if p.requires_grad) == 3 * (12 + 7)
    assert not any(p.requires_grad for p in layer.base_layer.parameters())
    assert layer.lora_A.abs().sum() > 0


def test_to_linear_leaves_layer_alone_and_has_no_history():
    layer = make()
    x = torch.randn(2, 5, 12)
    w0 = layer.base_layer.weight.clone()
    lin = layer.to_linear()
    assert type(lin) is nn.Linear and lin.weight.grad_fn is None
    torch.testing.assert_close(lin(x), layer(x))
    assert torch.equal(layer.base_layer.weight, w0)


def test_merge_twice_and_unmerge_unmerged_fail():
    layer = make()
    with pytest.raises(MergeStateError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(MergeStateError, match="already merged"):
        layer.merge()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_merge_refuses_non_finite_and_leaves_weight(bad):
    layer = make()
    with torch.no_grad():
        layer.lora_B[0, 0] = bad
    w0 = layer.base_layer.weight.clone()
    with pytest.raises(MergeStateError, match="NaN or Inf"):
        layer.merge()
    assert torch.equal(layer.base_layer.weight, w0) and not layer.merged


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(rank=0), ValueError, "between 1 and"),
    (dict(rank=-2), ValueError, "between 1 and"),
    (dict(rank=8), ValueError, r"min\(in_features, out_features\) = 7"),
    (dict(rank=2.0), TypeError, "rank must be an int"),
    (dict(rank=True), TypeError, "rank must be an int"),
    (dict(alpha=0), ValueError, "alpha must be a finite number > 0"),
    (dict(alpha=float("nan")), ValueError, "alpha"),
    (dict(alpha="1"), TypeError, "alpha must be a real number"),
    (dict(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    (dict(dropout=-0.1), ValueError, "dropout"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        LoRALinear(nn.Linear(12, 7), **kwargs)


def test_base_must_be_linear():
    with pytest.raises(TypeError, match="nn.Linear, got Conv1d"):
        LoRALinear(nn.Conv1d(3, 4, 1))


@pytest.mark.parametrize("x", [torch.randn(3, 11), torch.randn(11), torch.tensor(1.0)])
def test_bad_input_shape(x):
    layer = make()
    with pytest.raises(ValueError, match=r"\(\.\.\., 12\)"):
        layer(x)


def test_dropout_only_on_adapter_input_and_only_in_training():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(12, 7), rank=3, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(8, 12)
    layer.eval()
    torch.testing.assert_close(layer(x), reference(layer, x))
    layer.train()
    y = layer(x)
    assert not torch.allclose(y, reference(layer, x))
    # the base path never sees dropout: with B = 0 the output is the base output
    with torch.no_grad():
        layer.lora_B.zero_()
    torch.testing.assert_close(layer(x), layer.base_layer(x))


def test_gradients_reach_adapters_not_base():
    layer = make()
    layer(torch.randn(4, 12)).sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None
    assert layer.base_layer.weight.grad is None and layer.base_layer.bias.grad is None


def test_gradcheck_float64():
    layer = make().double()
    x = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, A, B: _functional(layer, x, A, B),
                                    (x, layer.lora_A, layer.lora_B))


def _functional(layer, x, A, B):
    return torch.func.functional_call(layer, {"lora_A": A, "lora_B": B}, (x,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_follows_base_dtype(dtype):
    base = nn.Linear(12, 7).to(dtype)
    layer = LoRALinear(base, rank=3)
    assert layer.lora_A.dtype == dtype and layer.lora_B.dtype == dtype
    if dtype != torch.float16:  # fp16 matmul on CPU is not supported by every torch build
        assert layer(torch.randn(2, 12, dtype=dtype)).dtype == dtype


def test_merge_round_trip_bf16_within_tolerance():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(64, 32).to(torch.bfloat16), rank=4)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.01)
    w0 = layer.base_layer.weight.clone()
    layer.merge()
    layer.unmerge()
    # bf16 keeps 8 bits of mantissa: one round trip moves a weight by at most a couple of ulps
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=2 * 2 ** -8, atol=1e-3)


def test_state_dict_round_trip():
    a, b = make(seed=1), make(seed=2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 12)
    assert torch.equal(a(x), b(x))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    layer = make()
    x = torch.randn(4, 12)
    y = layer(x)
    layer_cuda = layer.cuda()
    assert layer_cuda.lora_A.is_cuda
    torch.testing.assert_close(layer_cuda(x.cuda()).cpu(), y, rtol=1e-4, atol=1e-5)


def test_scaling_is_alpha_over_rank():
    assert math.isclose(make(rank=3, alpha=6.0).scaling, 2.0)
