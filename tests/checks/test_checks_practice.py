"""Notebook 02's checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept.
"""
import copy
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

import lorakit
from autograde.submissions import load_sample, load_samples
from lorakit.checks import CheckFailure, lora, practice
from lorakit.lm import tinylm
from lorakit.tuning import (
    adapter_modules,
    find_target_modules,
    inject_adapters,
    mark_only_adapters_trainable,
    trainable_report,
)

SAMPLES = load_samples(Path(__file__).parents[2] / "autograde/samples/02_lora_in_practice")
ALL = ["count"] + list(practice.LAYER_CHECKS) + ["not reference"]


def compile_sample(sample):
    # what the notebook's setup cell defines
    ns = {"torch": torch, "nn": nn, "lorakit": lorakit, "copy": copy, "tinylm": tinylm,
          "inject_adapters": inject_adapters, "find_target_modules": find_target_modules,
          "mark_only_adapters_trainable": mark_only_adapters_trainable,
          "trainable_report": trainable_report, "adapter_modules": adapter_modules}
    for grade_id in ("count_lora_params", "fixed_lora_linear"):
        if grade_id in sample.cells:
            exec(compile(sample.cells[grade_id], f"<{sample.name}:{grade_id}>", "exec"), ns)
    return ns.get("FixedLoRALinear"), ns.get("count_lora_params")


def verdicts(cls, count_fn):
    return with_borrowing_check(practice.report(cls, count_fn, verbose=False),
                                lora.check_not_reference, cls)


pytestmark = pytest.mark.usefixtures("short_time_limit")  # tests/conftest.py


def test_samples_cover_both_exercises():
    assert sum(s.expect == "full" for s in SAMPLES) >= 3
    assert sum(bool(s.fails) for s in SAMPLES) >= 4
    for s in SAMPLES:
        assert {"count_lora_params", "fixed_lora_linear"} <= set(s.cells), s.name


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_verdicts(sample):
    results = verdicts(*compile_sample(sample))
    assert_verdicts_match_header(sample, results, ALL)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.fails],
                         ids=lambda s: s.name)
def test_failure_messages_teach(sample):
    assert_messages_teach(verdicts(*compile_sample(sample)))


def test_reference_count_agrees_with_injection():
    """The checks' expected counts are what lorakit's inject_adapters really trains when it is
    given the matching nn.Linear layers (it refuses a list that also names another module)."""
    models = practice.probe_models()
    for model_name, targets, rank in practice.COUNT_CASES:
        model = copy.deepcopy(models[model_name])
        want = practice.reference_count(model, targets, rank)
        names = practice._linear_matches(model, targets)
        try:
            inject_adapters(model, lorakit.LoRALinear, target_modules=targets, rank=rank)
        except ValueError:
            if names:   # something else matched too: inject exactly the Linear layers
                inject_adapters(model, lorakit.LoRALinear, target_modules=names, rank=rank)
            else:
                assert want == 0, (model_name, targets)
                continue
        assert sorted(adapter_modules(model)) == sorted(names), (model_name, targets)
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
    blind = load_sample(Path(__file__).parents[2] / "autograde/independent/02_lora_in_practice"
                        / "bug_count_exception_zero.py")
    assert "exception caught and 0 returned" in verdicts(*compile_sample(blind))["count"]
    last = load_sample(Path(__file__).parents[2] / "autograde/independent/02_lora_in_practice"
                       / "bug_count_last_component.py")
    assert "last part of each module's name" in verdicts(*compile_sample(last))["count"]


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


# --- a matrix of buggy variants: count_lora_params ----------------------------------------------

def count_right(model, targets, rank):
    return sum(rank * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets))


def count_per_target(model, targets, rank):
    return sum(rank * (m.in_features + m.out_features) for t in targets
               for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and (n == t or n.endswith("." + t)))


def count_embeddings_too(model, targets, rank):
    return sum(rank * sum(m.weight.shape) for n, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Embedding))
               and any(n == t or n.endswith("." + t) for t in targets))


def count_swallows(model, targets, rank):
    try:
        return sum(rank * (m.in_features + m.out_features) for n, m in model.named_modules()
                   if any(n == t or n.endswith("." + t) for t in targets))
    except AttributeError:
        return 0


COUNT_VARIANTS = {  # name: (function, None if correct, else words of the diagnosis)
    "correct": (count_right, None),
    "a layer counted once per matching target": (count_per_target, "once per target"),
    "a matching nn.Embedding counted": (count_embeddings_too, "nn.Embedding"),
    "an exception swallowed into 0": (count_swallows, "exception caught and 0 returned"),
}


@pytest.mark.parametrize("name", list(COUNT_VARIANTS))
def test_count_variants(name):
    fn, words = COUNT_VARIANTS[name]
    if words is None:
        practice.check_count_params(fn)
        return
    with pytest.raises(CheckFailure) as e:
        practice.check_count_params(fn)
    assert words in str(e.value) and e.value.key == "practice.count", str(e.value)


# --- a matrix of buggy variants: FixedLoRALinear's dropout and rank -----------------------------

class Fixed(nn.Module):
    """A correct FixedLoRALinear written like a student's; ``_drop`` is where dropout goes."""

    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError("rank must be at least 1")
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.p = dropout
        self.A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.1)
        self.B = nn.Parameter(torch.zeros(base_layer.out_features, rank))

    def _drop(self, t):
        return nn.functional.dropout(t, self.p, self.training)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * (self._drop(x) @ self.A.T) @ self.B.T


class DropAfterA(Fixed):
    def forward(self, x):
        return self.base_layer(x) + self.scaling * self._drop(x @ self.A.T) @ self.B.T


class DropAfterB(Fixed):
    def forward(self, x):
        return self.base_layer(x) + self._drop(self.scaling * (x @ self.A.T) @ self.B.T)


class DropOutput(Fixed):
    def forward(self, x):
        return self._drop(super().forward(x) if not self.training else
                          self.base_layer(x) + self.scaling * (x @ self.A.T) @ self.B.T)


class DropNoRescale(Fixed):
    def _drop(self, t):
        if not self.training or self.p == 0:
            return t
        return t * (torch.rand_like(t) >= self.p)


class DropKeepsP(Fixed):
    """Keeps a share p (drops 1 - p), though it rescales by 1/(1 - p)."""
    def _drop(self, t):
        if not self.training or self.p == 0:
            return t
        return t * (torch.rand_like(t) < self.p) / (1 - self.p)


class DropRows(Fixed):
    def _drop(self, t):
        if not self.training or self.p == 0:
            return t
        return t * (torch.rand_like(t[..., :1]) >= self.p) / (1 - self.p)


class DropInEval(Fixed):
    def _drop(self, t):
        return nn.functional.dropout(t, self.p, True)


class DropBaseInput(Fixed):
    def forward(self, x):
        x = self._drop(x)
        return self.base_layer(x) + self.scaling * (x @ self.A.T) @ self.B.T


class WrongScaling(Fixed):   # a formula bug: costs the formula's points, not the dropout's
    def forward(self, x):
        return self.base_layer(x) + (self._drop(x) @ self.A.T) @ self.B.T


class RankOneRefused(Fixed):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        if rank <= 1:
            raise ValueError("rank must be above 1")
        super().__init__(base_layer, rank, alpha, dropout)


class AssertRank(Fixed):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        assert rank > 0, "rank must be positive"
        super().__init__(base_layer, rank, alpha, dropout)


LAYER_VARIANTS = {  # name: (class, {failing check: key}, words a message uses)
    "correct, F.dropout on the adapter's input": (Fixed, {}, ""),
    "dropout after A, on the rank features": (DropAfterA, {"dropout": "practice.dropout_place"},
                                              "after A"),
    "dropout after B, on the update": (DropAfterB, {"dropout": "practice.dropout_place"},
                                       "after B"),
    "dropout on the whole output": (DropOutput, {"dropout": "practice.dropout_base"},
                                    "base layer"),
    "dropout without the 1/(1 - p) rescale": (DropNoRescale, {"dropout": "practice.dropout_rescale"},
                                              "not rescaled"),
    "dropout keeps a share p": (DropKeepsP, {"dropout": "practice.dropout_rate"}, "share dropped"),
    "dropout of whole rows": (DropRows, {"dropout": "practice.dropout_place"}, "whole rows"),
    "dropout left on in eval mode": (DropInEval, {"dropout": "practice.dropout_eval"},
                                     "self.training"),
    "dropout on the base's input too": (DropBaseInput, {"dropout": "practice.dropout_base"},
                                        "clean x"),
    "scaling missing: not a dropout bug": (WrongScaling, {"scaling": "lora.scaling"}, "scaling"),
    "rank 1 refused": (RankOneRefused, {"rank validation": "practice.rank_validation"},
                       "smallest valid rank"),
    "assert instead of ValueError": (AssertRank, {"rank validation": "practice.rank_validation"},
                                     "python -O"),
}


@pytest.mark.parametrize("name", list(LAYER_VARIANTS))
def test_layer_variants(name):
    cls, want, words = LAYER_VARIANTS[name]
    failures = {}
    for check_name, check in practice.LAYER_CHECKS.items():
        try:
            check(cls)
        except CheckFailure as e:
            failures[check_name] = e
    assert {n: e.key for n, e in failures.items()} == want, {n: str(e) for n, e in failures.items()}
    assert not failures or any(words in str(e) for e in failures.values()), failures


def test_dropout_check_reads_its_stated_tolerance():
    """The drop rate is judged with a fixed seed against p ± DROP_RATE_TOL: nn.Dropout's share
    for that seed lies well inside."""
    assert 0 < practice.DROP_RATE_TOL <= 0.1 and 0 < practice.DROPOUT < 0.5
    practice.check_dropout(Fixed)
