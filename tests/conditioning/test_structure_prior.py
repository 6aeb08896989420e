"""Handing one structure prior to every HyLoRADA v2 layer of a model: lorakit.conditioning.structure_prior."""
import threading

import pytest
import torch
from torch import nn

from lorakit import HyLoRADAv2Linear, MergeStateError, StructureEncoder
from lorakit.conditioning import condition, current_condition, current_structure_prior, structure_prior
from lorakit.tuning import inject_adapters, mark_only_adapters_trainable

K = 6


def v2(seed=0, in_f=8, out_f=5):
    torch.manual_seed(seed)
    layer = HyLoRADAv2Linear(nn.Linear(in_f, out_f), rank=2, structure_dim=K)
    with torch.no_grad():
        for p in layer.parameters():
            if p.requires_grad:
                p.normal_()
    return layer


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(8, 12)
        self.down = nn.Linear(12, 8)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def test_context_prior_equals_the_explicit_prior():
    layer, x, prior = v2(), torch.randn(2, 5, 8), torch.randn(2, 5, K)
    with structure_prior(prior):
        y = layer(x)
    assert torch.equal(y, layer(x, prior))
    assert not torch.allclose(y, layer(x))                      # the prior does something


def test_outside_any_block_no_prior_means_v1():
    layer, x = v2(), torch.randn(2, 5, 8)
    assert current_structure_prior() is None
    with torch.no_grad():
        want = layer._forward(x, None)
    assert torch.equal(layer(x), want)


def test_explicit_prior_wins_and_blocks_nest_and_reset():
    layer, x = v2(), torch.randn(2, 5, 8)
    outer, inner, explicit = (torch.randn(2, 5, K) for _ in range(3))
    with structure_prior(outer):
        assert torch.equal(layer(x, explicit), layer.forward(x, explicit))
        with structure_prior(inner):
            assert current_structure_prior() is inner
            assert torch.equal(layer(x), layer(x, inner))
        with structure_prior(None):                             # hides the outer prior
            assert torch.equal(layer(x), layer._forward(x, None))
        assert current_structure_prior() is outer
    assert current_structure_prior() is None
    with pytest.raises(RuntimeError):
        with structure_prior(outer):
            raise RuntimeError("boom")
    assert current_structure_prior() is None                   # reset also on an exception


def test_independent_of_the_condition_context():
    p = torch.randn(3)
    with condition(p):
        assert current_structure_prior() is None
        with structure_prior(torch.randn(1, 1, K)) as prior:
            assert current_condition() is p and current_structure_prior() is prior
    assert current_condition() is None


def test_bad_arguments_and_shapes_fail_loudly():
    with pytest.raises(TypeError, match="torch.Tensor"):
        with structure_prior([[0.0] * K]):
            pass
    layer = v2()
    with structure_prior(torch.randn(2, 4, K)):                 # T = 4, but x has T = 5
        with pytest.raises(ValueError, match=r"\(2, 5, 6\)"):
            layer(torch.randn(2, 5, 8))


def test_a_model_hands_the_prior_to_every_v2_layer_and_gradients_reach_the_encoder():
    torch.manual_seed(0)
    model = Tiny()
    inject_adapters(model, HyLoRADAv2Linear, target_modules=["up", "down"], rank=2,
                    structure_dim=K)
    mark_only_adapters_trainable(model)
    enc = StructureEncoder(structure_dim=K, encoding_dim=4, num_structure_types=3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.3)
    x = torch.randn(2, 5, 8)
    positions = StructureEncoder.get_position_tensor(2, 5)
    types = torch.randint(0, 3, (2, 5))
    prior = enc(positions, types)
    with structure_prior(prior):
        y = model(x)
    # the same as calling both layers explicitly with the prior
    h = torch.relu(model.up(x, prior))
    torch.testing.assert_close(y, model.down(h, prior))
    assert not torch.allclose(y, model(x))
    y.pow(2).sum().backward()
    for layer in (model.up, model.down):
        assert layer.scale_from_structure.weight.grad.abs().sum() > 0
    assert enc.proj.weight.grad.abs().sum() > 0
    assert enc.structure_embeddings.weight.grad.abs().sum() > 0


def test_a_merged_layer_refuses_a_prior_from_the_context_too():
    layer, x = v2(), torch.randn(2, 5, 8)
    layer.merge()
    layer(x)                                                    # no prior: the merged function
    with structure_prior(torch.randn(2, 5, K)):
        with pytest.raises(MergeStateError, match="unmerge"):
            layer(x)


def test_threads_do_not_see_each_others_prior():
    seen = {}
    ready, done = threading.Event(), threading.Event()

    def worker():
        ready.wait()
        seen["thread"] = current_structure_prior()
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    with structure_prior(torch.randn(1, 1, K)):
        ready.set()
        done.wait(5)
    t.join()
    assert seen["thread"] is None
