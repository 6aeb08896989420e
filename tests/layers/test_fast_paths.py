"""The layers' fast paths (one addmm into the base output, in place when that is safe) compute
exactly what the plain formulas compute, in every situation where the shortcut could leak:
forward hooks on the base, autocast, non-contiguous and 1-D inputs, inference mode, and
gradients (gradcheck in float64).
"""
import pytest
import torch
from conftest import CASES, LAYER_NAMES, trained
from torch import nn

from lorakit import BilinearLoRALinear, DoRALinear, LoRALinear, RSSBilinearLoRA

IN, OUT, R = 10, 7, 3


def _make(name, dtype=torch.float32):
    torch.manual_seed(0)
    return trained(CASES[name].build(nn.Linear(IN, OUT, dtype=dtype), R, 6.0))


def _extra(name, x):
    """The inputs after x: p for the conditioned layers, the prior for v2."""
    return CASES[name].extra(x, torch.Generator().manual_seed(3))


def reference(layer, x, *extra):
    """The layer's equation written out plainly (no in-place ops, no addmm)."""
    W, b = layer.base_layer.weight, layer.base_layer.bias
    A, B, s = layer.lora_A, layer.lora_B, layer.scaling
    h = x @ A.T                                                    # (..., r)
    if isinstance(layer, BilinearLoRALinear):
        p = extra[0]
        mid = (1,) * (x.dim() - 2)
        z = h * layer.gate(p).reshape(p.shape[0], *mid, R)
        if isinstance(layer, RSSBilinearLoRA):
            z = z + layer.shift(p).reshape(p.shape[0], *mid, R)
        return x @ W.T + b + s * z @ B.T
    if isinstance(layer, DoRALinear):
        if extra:
            h = h * layer.position_factor(extra[0])
        return layer.scale().to(x.dtype) * (x @ W.T + s * h @ B.T) + b
    return x @ W.T + b + s * h @ B.T


NAMES = LAYER_NAMES


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(2, 3, IN), (2, IN), (2, 2, 2, IN)])
def test_matches_the_plain_formula(name, shape):
    layer = _make(name)
    x = torch.randn(*shape)
    extra = _extra(name, x)
    torch.testing.assert_close(layer(x, *extra), reference(layer, x, *extra))


@pytest.mark.parametrize("name", ["lora", "dora", "hylorada"])
def test_one_dimensional_and_non_contiguous_inputs(name):
    layer = _make(name)
    x1 = torch.randn(IN)
    assert layer(x1).shape == (OUT,)
    torch.testing.assert_close(layer(x1), reference(layer, x1))
    xt = torch.randn(IN, 4, 2).permute(2, 1, 0)                    # (2, 4, IN), strided
    assert not xt.is_contiguous()
    torch.testing.assert_close(layer(xt), reference(layer, xt))


@pytest.mark.parametrize("name", ["lora", "bilinear", "rss"])
def test_forward_hook_on_the_base_sees_the_plain_base_output(name):
    """A hook that keeps the base's output must not see the adapter's update added to it."""
    layer = _make(name)
    x = torch.randn(2, 3, IN)
    extra = _extra(name, x)
    kept = []
    handle = layer.base_layer.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        y = layer(x, *extra)
    finally:
        handle.remove()
    torch.testing.assert_close(y, reference(layer, x, *extra))
    torch.testing.assert_close(kept[0].reshape(2, 3, OUT), layer.base_layer(x))


@pytest.mark.parametrize("name", NAMES)
def test_autocast_bf16_on_cpu(name):
    layer = _make(name)
    x = torch.randn(2, 3, IN)
    extra = _extra(name, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x, *extra)
        y.float().sum().backward()
    assert y.dtype == torch.bfloat16, "under autocast the output dtype is nn.Linear's: bf16"
    torch.testing.assert_close(y.float(), reference(layer, x, *extra), rtol=5e-2, atol=5e-2)
    assert all(p.grad is not None for p in layer.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", NAMES)
def test_inference_mode_and_no_grad(name):
    layer = _make(name)
    x = torch.randn(2, 3, IN)
    extra = _extra(name, x)
    want = reference(layer, x, *extra).detach()
    with torch.inference_mode():
        torch.testing.assert_close(layer(x, *extra), want)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, *extra), want)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_the_plain_formula(name):
    layer = _make(name)
    x = torch.randn(2, 3, IN, requires_grad=True)
    extra = _extra(name, x)
    g = torch.randn(2, 3, OUT)
    params = [p for p in layer.parameters() if p.requires_grad]
    got = torch.autograd.grad(layer(x, *extra), [x, *params], g)
    want = torch.autograd.grad(reference(layer, x, *extra), [x, *params], g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lora", "bilinear", "rss"])   # DoRA's norms are float32
def test_gradcheck_float64(name):
    layer = _make(name, dtype=torch.float64)
    x = torch.randn(2, 3, IN, dtype=torch.float64, requires_grad=True)
    extra = _extra(name, x)
    assert torch.autograd.gradcheck(lambda x: layer(x, *extra), (x,))


def _grad_fn_names(y):
    names, stack = set(), [y.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and type(fn).__name__ not in names:
            names.add(type(fn).__name__)
            stack.extend(f for f, _ in fn.next_functions)
    return names


def test_lora_takes_the_fused_path_only_when_it_may():
    layer = _make("lora")
    x = torch.randn(2, 3, IN, requires_grad=True)
    assert any("LoRALinearFunction" in n for n in _grad_fn_names(layer(x)))
    # a pre-hook that changes the input: the base module must be called, and its change seen
    handle = layer.base_layer.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    try:
        y = layer(x)
        assert not any("LoRALinearFunction" in n for n in _grad_fn_names(y))
        # base(2x) = 2 x Wᵀ + b: the layer's output gains one more x Wᵀ
        torch.testing.assert_close(y, reference(layer, x) + x @ layer.base_layer.weight.T)
    finally:
        handle.remove()
    dropped = LoRALinear(nn.Linear(IN, OUT), R, 6.0, dropout=0.5)
    assert not any("LoRALinearFunction" in n for n in _grad_fn_names(dropped.train()(x)))
    assert any("LoRALinearFunction" in n for n in _grad_fn_names(dropped.eval()(x)))


def test_lora_double_backward_float64():
    layer = _make("lora", dtype=torch.float64)
    x = torch.randn(2, 3, IN, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: layer(x), (x,))


def test_lora_under_torch_func_grad():
    layer = _make("lora")
    x = torch.randn(2, 3, IN)
    params = dict(layer.named_parameters())

    def loss(ps):
        return torch.func.functional_call(layer, ps, (x,)).square().sum()

    grads = torch.func.grad(loss)({k: v.detach() for k, v in params.items()})
    layer(x).square().sum().backward()
    for k in ("lora_A", "lora_B"):
        torch.testing.assert_close(grads[k], params[k].grad)


def test_lora_with_a_trainable_base_gets_every_gradient():
    layer = _make("lora")
    layer.base_layer.requires_grad_(True)
    x = torch.randn(2, 3, IN, requires_grad=True)
    params = [x, layer.base_layer.weight, layer.base_layer.bias, layer.lora_A, layer.lora_B]
    g = torch.randn(2, 3, OUT)
    got = torch.autograd.grad(layer(x), params, g)
    want = torch.autograd.grad(reference(layer, x), params, g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["dora", "hylorada", "hylorada_v2"])
def test_dora_family_takes_the_fused_path_only_when_it_may(name):
    layer = _make(name)
    x = torch.randn(2, 3, IN, requires_grad=True)
    extra = _extra(name, x)
    assert any("DoRALinearFunction" in n for n in _grad_fn_names(layer(x, *extra)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not any("DoRALinearFunction" in n for n in _grad_fn_names(layer(x, *extra)))
    layer.dropout_p, layer.dropout = 0.5, nn.Dropout(0.5)
    assert not any("DoRALinearFunction" in n for n in _grad_fn_names(layer.train()(x, *extra)))
    assert any("DoRALinearFunction" in n for n in _grad_fn_names(layer.eval()(x, *extra)))


@pytest.mark.parametrize("name", ["dora", "hylorada_v2"])
def test_dora_family_with_a_trainable_base_and_second_order(name):
    layer = _make(name)
    layer.base_layer.requires_grad_(True)
    x = torch.randn(2, 3, IN, requires_grad=True)
    extra = _extra(name, x)
    params = [x] + [p for p in layer.parameters() if p.requires_grad]
    g = torch.randn(2, 3, OUT)
    got = torch.autograd.grad(layer(x, *extra), params, g, create_graph=True)
    want = torch.autograd.grad(reference(layer, x, *extra), params, g, create_graph=True)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # second order: d/dx of the squared gradient of A, through both backward passes
    i = next(k for k, p in enumerate(params) if p is layer.lora_A)
    d2_got, = torch.autograd.grad(got[i].square().sum(), x)
    d2_want, = torch.autograd.grad(want[i].square().sum(), x)
    torch.testing.assert_close(d2_got, d2_want, rtol=1e-4, atol=1e-5)


def test_column_sums_accumulate_in_float32():
    from lorakit.layers.fused import _column_sums
    t = torch.randn(37, 5)
    torch.testing.assert_close(_column_sums(t), t.sum(0))
    big = torch.full((4096, 3), 1.0, dtype=torch.bfloat16)    # 4096 ones: bf16 sums stall at 256
    assert _column_sums(big).float().tolist() == [4096.0] * 3
