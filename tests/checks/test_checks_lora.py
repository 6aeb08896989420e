"""Notebook 01's checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept.
"""
from pathlib import Path

import pytest
import torch
from check_matrix import (
    assert_messages_teach,
    assert_rng_untouched,
    assert_verdicts_match_header,
    with_borrowing_check,
)
from torch import nn

from autograde.submissions import load_samples
from lorakit.checks import CheckFailure, lora
from lorakit.layers import LoRALinear as Reference

# hostile_* samples attack the grading pipeline (kill the kernel, loop forever at top level,
# delete or edit test cells): tests/grading/test_pipeline.py grades them; they must not run in-process.
SAMPLES = [s for s in load_samples(Path(__file__).parents[2] / "autograde/samples/01_lora_linear")
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


pytestmark = pytest.mark.usefixtures("short_time_limit")  # tests/conftest.py


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_verdicts(sample):
    cls, merge_fn = compile_sample(sample)
    results = verdicts(cls, merge_fn)
    assert_verdicts_match_header(sample, results, ALL)


def test_reference_layer_passes_all_but_the_borrowing_check():
    merge = Reference.to_linear
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
            warnings.warn("this API is deprecated", DeprecationWarning, stacklevel=2)
            return super().forward(x)

    Warns.__module__ = "student"  # only the borrowing check cares where it comes from
    lora.check_shapes(Warns)
    out, err = capsys.readouterr()
    assert "DeprecationWarning: this API is deprecated" in out and out.count("deprecated") == 1
    assert err == ""


# --- behaviour a user relies on beyond one forward call: a matrix of buggy variants -----------

class Student(nn.Module):
    """A correct layer written like a student's (not lorakit's)."""

    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.1)
        self.B = nn.Parameter(torch.zeros(base_layer.out_features, rank))

    def forward(self, x):
        return self.base_layer(x) + self.scaling * (x @ self.A.T) @ self.B.T


def new_layer_merge(layer):
    with torch.no_grad():
        merged = nn.Linear(layer.base_layer.in_features, layer.base_layer.out_features,
                           bias=layer.base_layer.bias is not None)
        merged.weight.copy_(layer.base_layer.weight + layer.scaling * layer.B @ layer.A)
        if merged.bias is not None:
            merged.bias.copy_(layer.base_layer.bias)
    return merged


def in_place_merge(layer):
    with torch.no_grad():
        layer.base_layer.weight += layer.scaling * layer.B @ layer.A
    return layer.base_layer


class EvalSkipsAdapter(Student):
    def forward(self, x):
        return super().forward(x) if self.training else self.base_layer(x)


class EvalMergedCache(Student):
    """Builds the merged weight on the first eval-mode call and reuses it until a train call."""
    _W = None

    def forward(self, x):
        if self.training:
            self._W = None
            return super().forward(x)
        if self._W is None:
            self._W = (self.base_layer.weight + self.scaling * self.B @ self.A).detach()
        return nn.functional.linear(x, self._W, self.base_layer.bias)


class InputCache(Student):
    """Reuses A x when it is called again with the same input tensor."""
    _last = (None, None)

    def forward(self, x):
        if self._last[0] is not x:
            self._last = (x, x @ self.A.T)
        return self.base_layer(x) + self.scaling * self._last[1] @ self.B.T


class Only2D(Student):
    def forward(self, x):
        return self.base_layer(x) + self.scaling * torch.mm(torch.mm(x, self.A.T), self.B.T)


class FloorScaling(Student):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__(base_layer, rank, alpha)
        self.scaling = alpha // rank                       # 0 whenever alpha < rank


def merge_writes_base_returns_copy(layer):
    import copy
    with torch.no_grad():
        layer.base_layer.weight += layer.scaling * layer.B @ layer.A
    return copy.deepcopy(layer.base_layer)


def merge_in_place_and_off(layer):
    merged = in_place_merge(layer)
    with torch.no_grad():
        layer.B.zero_()           # the layer knows it is merged: its adapter is off
    return merged


def merge_in_place_halves_B(layer):
    merged = in_place_merge(layer)
    with torch.no_grad():
        layer.B.mul_(0.5)
    return merged


def merge_needs_bias(layer):
    with torch.no_grad():
        merged = nn.Linear(layer.base_layer.in_features, layer.base_layer.out_features)
        merged.weight.copy_(layer.base_layer.weight + layer.scaling * layer.B @ layer.A)
        merged.bias.copy_(layer.base_layer.bias.clone())
    return merged


def merge_random_bias(layer):
    with torch.no_grad():
        merged = nn.Linear(layer.base_layer.in_features, layer.base_layer.out_features)
        merged.weight.copy_(layer.base_layer.weight + layer.scaling * layer.B @ layer.A)
        if layer.base_layer.bias is not None:
            merged.bias.copy_(layer.base_layer.bias)
    return merged


VARIANTS = {  # name: (class, merge, {failing check: its concept key}, words a message uses)
    "correct, new merged layer": (Student, new_layer_merge, {}, ""),
    "correct, in-place merge": (Student, in_place_merge, {}, ""),
    "correct, in-place merge that switches the adapter off": (Student, merge_in_place_and_off, {}, ""),
    "adapter skipped in eval mode": (EvalSkipsAdapter, new_layer_merge,
                                     {"update": "lora.eval_mode"}, "adapter is skipped"),
    "merged weight cached in eval mode": (EvalMergedCache, new_layer_merge,
                                          {"update": "lora.stale_state"}, "new values"),
    "A x cached for a repeated input": (InputCache, new_layer_merge,
                                        {"update": "lora.stale_state",
                                         "gradients": "lora.gradients"}, "new values"),
    "scaling by integer division: B's missing gradient explained": (
        FloorScaling, new_layer_merge,
        {"scaling": "lora.scaling_attribute", "gradients": "lora.init_gradient"},
        "integer division"),
    "forward for 2-D x only: charged once": (Only2D, new_layer_merge,
                                             {"shapes": "lora.shapes"}, "2-D matrices only"),
    "merge writes into base_layer, returns a copy": (
        Student, merge_writes_base_returns_copy, {"merge": "lora.merge_leaves_layer"},
        "counts the update twice"),
    "in-place merge that also changes the adapter": (
        Student, merge_in_place_halves_B, {"merge": "lora.merge_leaves_layer"}, "['B']"),
    "merge crashes on a bias-free base": (Student, merge_needs_bias,
                                          {"merge": "lora.merge_crash"}, "has no bias"),
    "merge gives a bias-free base a random bias": (Student, merge_random_bias,
                                                   {"merge": "lora.merge_function"},
                                                   "random init"),
}


def _run_all(cls, merge_fn):
    checks = dict(lora.CHECKS, merge=lambda c: lora.check_merge(c, merge_fn))
    out = {}
    for name, check in checks.items():
        try:
            check(cls)
        except CheckFailure as e:
            out[name] = e
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_behaviour_variants(name):
    cls, merge_fn, want, words = VARIANTS[name]
    failures = _run_all(cls, merge_fn)
    assert {n: e.key for n, e in failures.items()} == want, {n: str(e) for n, e in failures.items()}
    assert not failures or any(words in str(e) for e in failures.values()), failures


def test_every_failure_of_the_samples_has_a_concept_key():
    for sample in SAMPLES:
        cls, merge_fn = compile_sample(sample)
        for name, e in _run_all(cls, merge_fn or new_layer_merge).items():
            assert e.key and e.key.startswith("lora."), (sample.name, name, e.key, str(e))


def test_new_checks_leave_the_callers_rng_alone():
    assert_rng_untouched(lambda: (lora.check_update(Student), lora.check_gradients(Student),
                                  lora.check_merge(Student, in_place_merge)))


def test_a_crash_unrelated_to_shapes_gets_no_shape_hint():
    class Typo(Student):
        def forward(self, x):
            return self.base_layer(x) + self.scalling * (x @ self.A.T) @ self.B.T

    with pytest.raises(CheckFailure) as e:
        lora.check_shapes(Typo)
    assert "AttributeError" in str(e.value) and "matrix products" not in str(e.value)
    assert e.value.key == "lora.shapes"
