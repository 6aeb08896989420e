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
from conftest import CASES, LAYER_CASES, trained
from torch import nn

import lorakit

dynamo = pytest.importorskip("torch._dynamo")

IN, OUT, R = 16, 12, 4

# every registered family (tests/conftest.py), plus the variants whose traced code differs:
# name -> (case, extra init kwargs, whether the forward gets its condition or prior)
LAYERS = {case.name: (case, {}, True) for case in LAYER_CASES}
LAYERS["bilinear_one_plus_gate"] = (CASES["bilinear"], {"gate": "one_plus"}, True)
LAYERS["hylorada_v2_no_prior"] = (CASES["hylorada_v2"], {}, False)


def _inputs(name):
    case, _, conditioned = LAYERS[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, IN, generator=g)
    return (x, *case.extra(x, g)) if conditioned else (x,)


def _make(name):
    case, kwargs, _ = LAYERS[name]
    torch.manual_seed(0)
    return trained(case.build(nn.Linear(IN, OUT), R, 8.0, **kwargs), std=0.5)


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
    layer = _make("bilinear")
    x, p = _inputs("bilinear")
    compiled = torch.compile(layer, backend="eager")
    with lorakit.condition(p):
        torch.testing.assert_close(compiled(x), layer(x, p))


def test_v2_reads_the_structure_prior_context_when_compiled():
    from lorakit.conditioning import structure_prior
    dynamo.reset()
    layer = _make("hylorada_v2")
    x, prior = _inputs("hylorada_v2")
    compiled = torch.compile(layer, backend="eager")
    torch.testing.assert_close(compiled(x), layer(x, None))         # outside: v1
    with structure_prior(prior):                                    # inside: the block's prior
        torch.testing.assert_close(compiled(x), layer(x, prior))
    torch.testing.assert_close(compiled(x), layer(x, None))


@pytest.mark.parametrize("name", ["dora", "hylorada"])
def test_compiled_norm_follows_weight_changes(name):
    """The ‖W‖² cache is skipped while compiling: an in-place change of W is always seen."""
    dynamo.reset()
    layer = _make(name)
    x = _inputs(name)[0]
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
