"""Notebook 02's checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept.
"""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import lorakit
from autograde.submissions import load_samples
from check_matrix import (assert_messages_teach, assert_rng_untouched,
                          assert_verdicts_match_header, with_borrowing_check)
from lorakit.checks import _probe, lora, practice
from lorakit.model import inject_adapters, mark_only_adapters_trainable, trainable_report

SAMPLES = load_samples(Path(__file__).parents[1] / "autograde/samples/02_lora_in_practice")
ALL = ["count"] + list(practice.LAYER_CHECKS) + ["not reference"]


def compile_sample(sample):
    ns = {"torch": torch, "nn": nn, "lorakit": lorakit}
    for grade_id in ("count_lora_params", "fixed_lora_linear"):
        if grade_id in sample.cells:
            exec(compile(sample.cells[grade_id], f"<{sample.name}:{grade_id}>", "exec"), ns)
    return ns.get("FixedLoRALinear"), ns.get("count_lora_params")


def verdicts(cls, count_fn):
    return with_borrowing_check(practice.report(cls, count_fn, verbose=False),
                                lora.check_not_reference, cls)


@pytest.fixture(autouse=True)
def short_time_limit(monkeypatch):
    monkeypatch.setattr(_probe, "STEP_SECONDS", 3)


def test_samples_cover_both_exercises():
    assert sum(s.expect == "full" for s in SAMPLES) >= 3
    assert sum(bool(s.fails) for s in SAMPLES) >= 4
    for s in SAMPLES:
        assert {"count_lora_params", "fixed_lora_linear"} <= set(s.cells), s.name


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_verdicts(sample):
    results = verdicts(*compile_sample(sample))
    assert_verdicts_match_header(sample, results, ALL)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.fails], ids=lambda s: s.name)
def test_failure_messages_teach(sample):
    assert_messages_teach(verdicts(*compile_sample(sample)))


def test_reference_count_agrees_with_injection():
    """The checks' expected counts are what lorakit's inject_adapters really trains."""
    models = practice.probe_models()
    for model_name, targets, rank in practice.COUNT_CASES:
        model = copy.deepcopy(models[model_name])
        want = practice.reference_count(model, targets, rank)
        try:
            inject_adapters(model, lorakit.LoRALinear, target_modules=targets, rank=rank)
        except ValueError:
            assert want == 0, (model_name, targets)
            continue
        mark_only_adapters_trainable(model)
        assert trainable_report(model)["trainable"] == want, (model_name, targets, rank)


def test_count_cases_tell_the_classic_mistakes_apart():
    """Each wrong formula differs from the truth in at least one case."""
    models = practice.probe_models()
    square = substring = 0
    for model_name, targets, rank in practice.COUNT_CASES:
        model = models[model_name]
        true = practice.reference_count(model, targets, rank)
        lin = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        square += true != sum(2 * rank * m.in_features for n, m in lin if practice._matches(n, targets))
        substring += true != sum(rank * (m.in_features + m.out_features)
                                 for n, m in lin if any(t in n for t in targets))
    assert square and substring


def test_specific_diagnoses():
    samples = {s.name: s for s in SAMPLES}
    msgs = verdicts(*compile_sample(samples["bug_square_formula"]))
    assert "square" in msgs["count"]
    msgs = verdicts(*compile_sample(samples["bug_substring_match"]))
    assert "contains" in msgs["count"]
    msgs = verdicts(*compile_sample(samples["bug_rank_zero_zeros"]))
    assert "ValueError" in msgs["rank validation"] and "zeros_like" in msgs["rank validation"]
    msgs = verdicts(*compile_sample(samples["bug_dropout_everywhere"]))
    assert "base layer" in msgs["dropout"]
    msgs = verdicts(*compile_sample(samples["bug_both_zero"]))
    assert "B must receive a gradient" in msgs["gradients"]


def test_reference_layer_passes_the_layer_checks():
    class Ref(lorakit.LoRALinear):
        def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
            super().__init__(base_layer, rank=rank, alpha=alpha, dropout=dropout)
    results = practice.report(Ref, None, verbose=False)
    assert all(msg is None for msg in results.values()), results


def test_checks_leave_the_callers_rng_alone():
    cls, count_fn = compile_sample(next(s for s in SAMPLES if s.name == "correct_named_modules"))
    assert_rng_untouched(lambda: (practice.check_dropout(cls),
                                  practice.check_count_params(count_fn)))
