"""Notebook 06's HyLoRADA checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept. lorakit's HyLoRADALinear passes every
check except the one that forbids borrowing it.
"""
from pathlib import Path

import pytest
import torch
from torch import nn

from autograde.submissions import load_samples
from check_matrix import (assert_messages_teach, assert_verdicts_match_header,
                          with_borrowing_check)
from lorakit.checks import CheckFailure, _probe, hylorada
from lorakit.layers import HyLoRADALinear as Reference

# hostile_* samples attack the grading pipeline; tests/test_pipeline.py grades them.
SAMPLES = [s for s in load_samples(Path(__file__).parents[1] / "autograde/samples/06_hylorada")
           if not s.name.startswith("hostile_")]
ALL = list(hylorada.CHECKS) + ["not reference"]


def compile_sample(sample):
    ns = {"torch": torch, "nn": nn}
    exec(compile(sample.cells["hylorada_linear"], f"<{sample.name}:hylorada_linear>", "exec"), ns)
    return ns["HyLoRADALinear"]


def verdicts(cls):
    return with_borrowing_check(hylorada.report(cls, verbose=False), hylorada.check_not_reference, cls)


@pytest.fixture(autouse=True)
def short_time_limit(monkeypatch):
    monkeypatch.setattr(_probe, "STEP_SECONDS", 3)


def test_there_are_enough_samples():
    kinds = [s.expect for s in SAMPLES]
    assert kinds.count("full") >= 3 and kinds.count("partial") >= 5


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_verdicts(sample):
    results = verdicts(compile_sample(sample))
    assert_verdicts_match_header(sample, results, ALL)


def test_reference_layer_passes_all_but_the_borrowing_check():
    results = hylorada.report(Reference, verbose=False)
    assert all(msg is None for msg in results.values()), results
    with pytest.raises(CheckFailure, match="implement HyLoRADA yourself"):
        hylorada.check_not_reference(Reference)


def test_reference_with_other_logit_inits_passes():
    """The initial logits are free: β = 0.1 (logit −2.197) or a gate starting at 0.9 pass too."""
    for kw in ({"residual_init": -2.197}, {"gate_init": 2.2, "residual_init": -1.0}):
        cls = type("Ref", (Reference,), {"__init__": lambda self, base, rank=8, alpha=16, kw=kw:
                                         Reference.__init__(self, base, rank, alpha, **kw)})
        results = hylorada.report(cls, verbose=False)
        assert all(msg is None for msg in results.values()), (kw, results)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.fails], ids=lambda s: s.name)
def test_failure_messages_teach(sample):
    assert_messages_teach(verdicts(compile_sample(sample)))


def test_seed_bugs_get_their_own_diagnosis():
    by_name = {s.name: s for s in SAMPLES}
    expect = {
        "bug_magnitude_ones": ("identity at init", "starts at ones"),
        "bug_blend_no_sigmoid": ("forward", "σ(0.1) ≈ 0.525"),
        "bug_kaiming_init": ("orthogonal init", "orthogonal"),
        "bug_norm_not_detached": ("norm detached", "un-detached norm"),
        "bug_blend_on_bias": ("bias", "missing from one of the two paths"),
        "bug_gate_on_m_init": ("forward", "wrong magnitude"),
        "bug_stale_norm": ("forward", "computed once at init"),
        "bug_m_init_trainable": ("frozen", "buffer"),
    }
    for name, (check, phrase) in expect.items():
        msg = verdicts(compile_sample(by_name[name]))[check]
        assert msg and phrase in msg, (name, msg)


def test_roles_are_found_by_behaviour_not_by_order():
    """A layer that declares the blend logit before the gate logit passes (see the sample)."""
    sample = next(s for s in SAMPLES if s.name == "correct_transposed_einsum")
    cls = compile_sample(sample)
    names = [n for n, _ in hylorada.find_scalars(cls(nn.Linear(24, 10), rank=3, alpha=6))]
    assert names == ["blend_logit", "gate_logit"]
    hylorada.check_forward(cls)


def test_verdicts_are_deterministic():
    cls = compile_sample(next(s for s in SAMPLES if s.name == "bug_magnitude_ones"))
    assert verdicts(cls) == verdicts(cls)
