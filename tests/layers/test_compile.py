"""torch.compile traces every lorakit layer's forward as ONE graph (no graph breaks).

``fullgraph=True`` makes dynamo raise at the first graph break, so a call that returns proves
the whole forward is one graph. Inputs (x, and p or the structure prior where a layer takes
one) are passed explicitly. The "aot_eager" backend also traces the backward through
AOTAutograd, without inductor's C++ compile; one inductor test (slow) runs where a C++ compiler
is present. Tiny shapes: this file checks tracing, never speed.
"""
import shutil

import pytest
import torch
from torch import nn

import lorakit
from lorakit import (
    BilinearLoRALinear,
    DoRALinear,
    HyLoRADALinear,
    HyLoRADAv2Linear,
    LoRALinear,
    RSSBilinearLoRA,
)

dynamo = pytest.importorskip("torch._dynamo")

IN, OUT, R, D_P, D_S = 16, 12, 4, 5, 7


def _random_b(layer):
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.5)
    return layer


LAYERS = {
    "lora": lambda: LoRALinear(nn.Linear(IN, OUT), R, 8.0),
    "dora": lambda: DoRALinear(nn.Linear(IN, OUT), R, 8.0),
    "bilinear_linear_gate": lambda: BilinearLoRALinear(nn.Linear(IN, OUT), D_P, R, 8.0),
    "bilinear_one_plus_gate": lambda: BilinearLoRALinear(nn.Linear(IN, OUT), D_P, R, 8.0,
                                                         gate="one_plus"),
    "rss": lambda: RSSBilinearLoRA(nn.Linear(IN, OUT), D_P, R, 8.0),
    "hylorada": lambda: HyLoRADALinear(nn.Linear(IN, OUT), R, 8.0),
    "hylorada_v2_no_prior": lambda: HyLoRADAv2Linear(nn.Linear(IN, OUT), R, 8.0, structure_dim=D_S),
    "hylorada_v2_prior": lambda: HyLoRADAv2Linear(nn.Linear(IN, OUT), R, 8.0, structure_dim=D_S),
}


def _inputs(name):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, IN, generator=g)
    if name.startswith(("bilinear", "rss")):
        return x, torch.randn(2, D_P, generator=g)
    if name == "hylorada_v2_prior":
        return x, torch.randn(2, 3, D_S, generator=g)
    return (x,)


def _make(name):
    torch.manual_seed(0)
    layer = _random_b(LAYERS[name]())
    if name == "hylorada_v2_prior":
        with torch.no_grad():
            layer.scale_from_structure.weight.normal_()
    return layer


def _grads(layer, args, fn):
    args = [a.clone().requires_grad_(True) for a in args]
    y = fn(*args)
    y.backward(torch.ones_like(y))
    grads = [a.grad for a in args] + [p.grad for p in layer.parameters() if p.requires_grad]
    layer.zero_grad(set_to_none=True)
    return y.detach(), grads


@pytest.mark.parametrize("name", list(LAYERS))
def test_forward_is_one_graph(name):
    """fullgraph=True: dynamo raises at the first graph break (explain() can miss some)."""
    dynamo.reset()
    layer, args = _make(name), _inputs(name)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(*args), layer(*args), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_fullgraph_aot_eager_matches_eager(name):
    dynamo.reset()
    layer, args = _make(name), _inputs(name)
    y_ref, g_ref = _grads(layer, args, layer)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    y, g = _grads(layer, args, compiled)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_conditioned_layer_reads_the_context_when_p_is_omitted():
    """Not the explicit path, but it must still be right compiled (a graph break is allowed)."""
    dynamo.reset()
    layer = _make("bilinear_linear_gate")
    x, p = _inputs("bilinear_linear_gate")
    compiled = torch.compile(layer, backend="eager")
    with lorakit.condition(p):
        torch.testing.assert_close(compiled(x), layer(x, p))


def test_v2_reads_the_structure_prior_context_when_compiled():
    from lorakit.conditioning import structure_prior
    dynamo.reset()
    layer = _make("hylorada_v2_prior")
    x, prior = _inputs("hylorada_v2_prior")
    compiled = torch.compile(layer, backend="eager")
    torch.testing.assert_close(compiled(x), layer(x, None))         # outside: v1
    with structure_prior(prior):                                    # inside: the block's prior
        torch.testing.assert_close(compiled(x), layer(x, prior))
    torch.testing.assert_close(compiled(x), layer(x, None))


@pytest.mark.parametrize("cls", [DoRALinear, HyLoRADALinear])
def test_compiled_norm_follows_weight_changes(cls):
    """The ‖W‖² cache is skipped while compiling: an in-place change of W is always seen."""
    dynamo.reset()
    torch.manual_seed(0)
    layer = _random_b(cls(nn.Linear(IN, OUT), R, 8.0))
    x = _inputs("dora")[0]
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    compiled(x)
    with torch.no_grad():
        layer.base_layer.weight.mul_(2.0)
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-6)


def _has_cxx():
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


@pytest.mark.slow
@pytest.mark.skipif(not _has_cxx(), reason="inductor's CPU backend needs a C++ compiler")
def test_inductor_dora_matches_eager():
    dynamo.reset()
    layer, args = _make("dora"), _inputs("dora")
    y_ref, g_ref = _grads(layer, args, layer)
    compiled = torch.compile(layer, fullgraph=True)
    y, g = _grads(layer, args, compiled)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
