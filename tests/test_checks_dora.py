"""Notebook 05's DoRA checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept. lorakit's DoRALinear passes every
check except the one that forbids borrowing it.
"""
from pathlib import Path

import pytest
import torch
from torch import nn

from autograde.submissions import load_samples
from check_matrix import (assert_messages_teach, assert_rng_untouched,
                          assert_verdicts_match_header, with_borrowing_check)
from lorakit.checks import CheckFailure, _probe, dora
from lorakit.layers import DoRALinear as Reference

# hostile_* samples attack the grading pipeline; tests/test_pipeline.py grades them.
SAMPLES = [s for s in load_samples(Path(__file__).parents[1] / "autograde/samples/05_dora")
           if not s.name.startswith("hostile_")]
ALL = list(dora.CHECKS) + ["not reference"]


def compile_sample(sample):
    ns = {"torch": torch, "nn": nn}
    exec(compile(sample.cells["dora_linear"], f"<{sample.name}:dora_linear>", "exec"), ns)
    return ns["DoRALinear"]


def verdicts(cls):
    return with_borrowing_check(dora.report(cls, verbose=False), dora.check_not_reference, cls)


@pytest.fixture(autouse=True)
def short_time_limit(monkeypatch):
    monkeypatch.setattr(_probe, "STEP_SECONDS", 3)


def test_there_are_enough_samples():
    kinds = [s.expect for s in SAMPLES]
    assert kinds.count("full") >= 4 and kinds.count("partial") >= 6


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_verdicts(sample):
    results = verdicts(compile_sample(sample))
    assert_verdicts_match_header(sample, results, ALL)


def test_reference_layer_passes_all_but_the_borrowing_check():
    results = dora.report(Reference, verbose=False)
    assert all(msg is None for msg in results.values()), results
    with pytest.raises(CheckFailure, match="implement DoRA yourself"):
        dora.check_not_reference(Reference)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.fails], ids=lambda s: s.name)
def test_failure_messages_teach(sample):
    assert_messages_teach(verdicts(compile_sample(sample)))


def test_verdicts_are_deterministic():
    cls = compile_sample(next(s for s in SAMPLES if s.name == "bug_norm_dim0"))
    assert verdicts(cls) == verdicts(cls)


def test_checks_leave_the_callers_rng_alone():
    assert_rng_untouched(lambda: [check(Reference) for check in dora.CHECKS.values()])


def message(sample_name, check):
    """The failure message of one check on one sample."""
    cls = compile_sample(next(s for s in SAMPLES if s.name == sample_name))
    with pytest.raises(CheckFailure) as info:
        dora.CHECKS[check](cls)
    return str(info.value)


@pytest.mark.parametrize("sample_name, check, words", [
    ("bug_magnitude_ones", "magnitude init", "seed 003"),
    ("bug_magnitude_ones", "identity at init", "starts at ones"),
    ("bug_norm_dim0", "magnitude init", "dim=1"),
    ("bug_norm_dim0", "forward", "*columns*"),
    ("bug_norm_dim0_crash", "shapes", "W.norm(dim=0)"),
    ("bug_norm_dim0_crash", "frozen", "W.norm(dim=0)"),
    ("bug_norm_not_detached", "norm detached", "un-detached"),
    ("bug_bias_inside", "bias", "scales the bias too"),
    ("bug_no_scaling", "scaling", "scaling alpha/rank is missing"),
    ("bug_random_b", "identity at init", "B is not zero"),
    ("bug_magnitude_buffer", "frozen", "buffer"),
    ("bug_magnitude_buffer", "gradients", "trainable"),
    ("bug_stale_norm", "forward", "‖W‖_row"),
])
def test_specific_diagnoses(sample_name, check, words):
    assert words in message(sample_name, check)


def _square_column_norm_layer():
    """The dim=0 mistake made consistently on a square layer: it runs, and it is the identity at init."""
    class ColumnDoRA(nn.Module):
        def __init__(self, base_layer, rank=8, alpha=16):
            super().__init__()
            self.base_layer = base_layer.requires_grad_(False)
            self.scaling = alpha / rank
            self.lora_A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.1)
            self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
            self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=0))

        def forward(self, x):
            V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
            return (x @ V.T) * (self.magnitude / V.norm(dim=0).detach()) + self.base_layer.bias
    return ColumnDoRA


def test_square_column_norm_is_caught_by_the_magnitude_check():
    cls = _square_column_norm_layer()
    layer = cls(nn.Linear(16, 16), rank=4)
    x = torch.randn(3, 16)
    torch.testing.assert_close(layer(x), layer.base_layer(x))   # silently "right" at init
    with pytest.raises(CheckFailure, match="column"):
        dora.check_magnitude_init(cls)


def test_tolerances_separate_detached_from_full_gradients():
    """The gradient difference the 'norm detached' check relies on is far above its tolerance."""
    layer, parts = dora._prepared(Reference, bias=False, seed=13)
    x, g = _probe.randn(2, 3, dora.IN, seed=14), _probe.randn(2, 3, dora.OUT, seed=15)
    grads = []
    for detach in (True, False):
        A = parts.A().double().requires_grad_()
        dora.definition(parts.base.weight.detach(), None, A, parts.B(), parts.m(), 1.0, x,
                        detach=detach).mul(g).sum().backward()
        grads.append(A.grad)
    rel = (grads[0] - grads[1]).norm() / grads[0].norm()
    assert rel > 1e-2
