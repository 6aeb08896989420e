"""Notebook 01's checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept.
"""
from pathlib import Path

import pytest
import torch
from torch import nn

from autograde.submissions import load_samples
from check_matrix import (assert_messages_teach, assert_rng_untouched,
                          assert_verdicts_match_header, with_borrowing_check)
from lorakit.checks import CheckFailure, _probe, lora
from lorakit.layers import LoRALinear as Reference

# hostile_* samples attack the grading pipeline (kill the kernel, loop forever at top level,
# delete or edit test cells): tests/test_pipeline.py grades them; they must not run in-process.
SAMPLES = [s for s in load_samples(Path(__file__).parents[1] / "autograde/samples/01_lora_linear")
           if not s.name.startswith("hostile_")]
ALL = list(lora.CHECKS) + ["merge", "not reference"]


def compile_sample(sample):
    ns = {"torch": torch, "nn": nn}
    for grade_id in ("lora_linear", "merge_lora"):
        if grade_id in sample.cells:
            exec(compile(sample.cells[grade_id], f"<{sample.name}:{grade_id}>", "exec"), ns)
    return ns["LoRALinear"], ns.get("merge_lora")


def verdicts(cls, merge_fn):
    results = with_borrowing_check(lora.report(cls, merge_fn, verbose=False),
                                   lora.check_not_reference, cls, merge_fn)
    if merge_fn is None:
        results["merge"] = "The submission defines no merge_lora function."
    return results


@pytest.fixture(autouse=True)
def short_time_limit(monkeypatch):
    monkeypatch.setattr(_probe, "STEP_SECONDS", 3)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_verdicts(sample):
    cls, merge_fn = compile_sample(sample)
    results = verdicts(cls, merge_fn)
    assert_verdicts_match_header(sample, results, ALL)


def test_reference_layer_passes_all_but_the_borrowing_check():
    merge = lambda layer: layer.to_linear()
    results = lora.report(Reference, merge, verbose=False)
    assert all(msg is None for msg in results.values()), results
    with pytest.raises(CheckFailure, match="implement LoRA yourself"):
        lora.check_not_reference(Reference, merge)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.fails], ids=lambda s: s.name)
def test_failure_messages_teach(sample):
    assert_messages_teach(verdicts(*compile_sample(sample)))


def test_verdicts_are_deterministic():
    cls, merge_fn = compile_sample(next(s for s in SAMPLES if s.name == "bug_attempt1"))
    assert verdicts(cls, merge_fn) == verdicts(cls, merge_fn)


def test_checks_leave_the_callers_rng_alone():
    assert_rng_untouched(lambda: lora.check_identity_at_init(Reference))


def test_specific_diagnoses():
    samples = {s.name: s for s in SAMPLES}
    msgs = verdicts(*compile_sample(samples["bug_no_scaling"]))
    assert "scaling alpha/rank is missing" in msgs["scaling"]
    msgs = verdicts(*compile_sample(samples["bug_alpha_scaling"]))
    assert "alpha / rank" in msgs["scaling"]
    msgs = verdicts(*compile_sample(samples["bug_ba_first"]))
    assert "B(Ax)" in msgs["low-rank order"]
    msgs = verdicts(*compile_sample(samples["bug_attempt1"]))
    assert "elementwise" in msgs["shapes"]
    msgs = verdicts(*compile_sample(samples["bug_endless_forward"]))
    assert "endless loop" in msgs["shapes"]


def test_student_warnings_go_to_stdout_not_stderr(capsys):
    import warnings

    class Warns(Reference):
        def forward(self, x):
            warnings.warn("this API is deprecated", DeprecationWarning)
            return super().forward(x)

    Warns.__module__ = "student"  # only the borrowing check cares where it comes from
    lora.check_shapes(Warns)
    out, err = capsys.readouterr()
    assert "DeprecationWarning: this API is deprecated" in out and out.count("deprecated") == 1
    assert err == ""
