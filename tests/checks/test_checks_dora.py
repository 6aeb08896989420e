"""Notebook 05's DoRA checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept. lorakit's DoRALinear passes every
check except the one that forbids borrowing it.
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
from lorakit.checks import CheckFailure, _probe, dora
from lorakit.layers import DoRALinear as Reference

# hostile_* samples attack the grading pipeline; tests/grading/test_pipeline.py grades them.
SAMPLES = [s for s in load_samples(Path(__file__).parents[2] / "autograde/samples/05_dora")
           if not s.name.startswith("hostile_")]
ALL = list(dora.CHECKS) + ["not reference"]


def compile_sample(sample):
    ns = {"torch": torch, "nn": nn}
    exec(compile(sample.cells["dora_linear"], f"<{sample.name}:dora_linear>", "exec"), ns)
    return ns["DoRALinear"]


def verdicts(cls):
    return with_borrowing_check(dora.report(cls, verbose=False), dora.check_not_reference, cls)


pytestmark = pytest.mark.usefixtures("short_time_limit")  # tests/conftest.py


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


# --- mutants of a correct layer: each new check catches its bug, and only its cell fails -------

class Correct(nn.Module):
    """The notebook's solution."""

    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())

    def weight(self):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A     # (out, in)
        return V, V.norm(dim=1).detach()

    def forward(self, x):
        V, n = self.weight()
        y = (x @ V.T) * (self.magnitude / n)
        return y if self.base_layer.bias is None else y + self.base_layer.bias


class EvalSkipsAdapter(Correct):
    def forward(self, x):
        return super().forward(x) if self.training else self.base_layer(x)


class EvalNoGrad(Correct):
    def forward(self, x):
        if self.training:
            return super().forward(x)
        with torch.no_grad():
            return super().forward(x)


class NormCachedOnFirstCall(Correct):
    def weight(self):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        if getattr(self, "_n", None) is None:
            self._n = V.norm(dim=1).detach()
        return V, self._n


class WeightCachedInEval(Correct):
    """Caches the merged weight on the first eval() call, until a train() call."""
    def forward(self, x):
        if self.training:
            self._merged = None
            return super().forward(x)
        if getattr(self, "_merged", None) is None:
            V, n = self.weight()
            self._merged = (self.magnitude / n)[:, None] * V
        y = x @ self._merged.T
        return y if self.base_layer.bias is None else y + self.base_layer.bias


class InputDetached(Correct):
    def forward(self, x):
        return super().forward(x.detach())


class BasePathNoGrad(Correct):
    """PEFT's form, base(x) + (m/n − 1) W x + (m/n) s B A x, with base(x) under no_grad."""
    def forward(self, x):
        V, n = self.weight()
        c = self.magnitude / n
        with torch.no_grad():
            base = x @ self.base_layer.weight.T
        y = base + (c - 1) * (x @ self.base_layer.weight.T) \
            + c * (self.scaling * (x @ self.lora_A.T) @ self.lora_B.T)
        return y if self.base_layer.bias is None else y + self.base_layer.bias


class _ScaleWrongGrad(torch.autograd.Function):
    """c ⊙ h with a backward that sends twice the gradient to c."""
    @staticmethod
    def forward(ctx, h, c):
        ctx.save_for_backward(h, c)
        return h * c

    @staticmethod
    def backward(ctx, g):
        h, c = ctx.saved_tensors
        return g * c, 2 * (g * h).reshape(-1, h.shape[-1]).sum(0)


class MagnitudeBackwardWrong(Correct):
    def forward(self, x):
        V, n = self.weight()
        y = _ScaleWrongGrad.apply(x @ V.T, self.magnitude / n)
        return y if self.base_layer.bias is None else y + self.base_layer.bias


class Only2D(Correct):
    def forward(self, x):
        V, n = self.weight()
        y = torch.mm(x, V.T) * (self.magnitude / n)
        return y if self.base_layer.bias is None else y + self.base_layer.bias


class RowsMixedND(Correct):
    """Flattens N-D input and restores it in the wrong order: right shape, wrong rows."""
    def forward(self, x):
        if x.dim() <= 2:
            return super().forward(x)
        y = super().forward(x.reshape(-1, x.shape[-1]))
        return y.reshape(*reversed(x.shape[:-1]), -1).transpose(0, x.dim() - 2).reshape(
            *x.shape[:-1], -1)


MUTANTS = {   # class: (the cells it fails, the concept key of the first failure)
    EvalSkipsAdapter: ({"forward"}, "dora.eval_mode"),
    EvalNoGrad: ({"forward"}, "dora.eval_mode"),
    NormCachedOnFirstCall: ({"forward"}, "dora.stale_state"),
    WeightCachedInEval: ({"forward"}, "dora.stale_state"),
    InputDetached: ({"gradients"}, "dora.input_gradient"),
    BasePathNoGrad: ({"gradients"}, "dora.input_gradient"),
    MagnitudeBackwardWrong: ({"gradients"}, "dora.gradcheck"),
    Only2D: ({"shapes"}, "dora.forward_crash"),
    RowsMixedND: ({"shapes"}, "dora.shapes"),
}


def test_the_correct_layer_passes_everything(capsys):
    assert all(msg is None for msg in verdicts(Correct).values()), verdicts(Correct)
    assert "float64" not in capsys.readouterr().out     # it runs in float64: gradcheck, no note


@pytest.mark.parametrize("cls", list(MUTANTS), ids=lambda c: c.__name__)
def test_mutant_verdicts(cls):
    cells, concept_key = MUTANTS[cls]
    results = verdicts(cls)
    assert {name for name, msg in results.items() if msg} == cells, results
    first = sorted(cells)[0]
    with pytest.raises(CheckFailure) as info:
        dora.CHECKS[first](cls)
    assert info.value.key == concept_key, str(info.value)
    assert_messages_teach(results)


def test_stale_state_messages_say_what_was_observed():
    with pytest.raises(CheckFailure) as info:
        dora.check_training_steps(NormCachedOnFirstCall)
    assert "freshly built layer holding the same parameter values" in str(info.value)
    assert "computed once" in str(info.value)
    with pytest.raises(CheckFailure) as info:
        dora.check_training_steps(WeightCachedInEval)
    assert "eval() mode" in str(info.value) and "returned exactly what it returned" in str(info.value)


def test_eval_mode_messages_name_the_mistake():
    with pytest.raises(CheckFailure, match="skips the adapter"):
        dora.check_train_eval(EvalSkipsAdapter)
    with pytest.raises(CheckFailure, match="carries no gradient"):
        dora.check_train_eval(EvalNoGrad)


def test_float64_is_not_required(capsys):
    """lorakit's layer computes its norms in float32: the gradients are then checked in float32,
    with a note, and pass."""
    dora.check_gradcheck(Reference)
    assert "does not run in float64" in capsys.readouterr().out


def test_every_failure_carries_a_dora_key():
    for sample in SAMPLES:
        cls = compile_sample(sample)
        for name, check in dora.CHECKS.items():
            try:
                check(cls)
            except CheckFailure as e:
                assert e.key and e.key.startswith("dora."), (sample.name, name, e.key)


def test_a_norm_over_the_columns_is_named_at_init():
    """Written blind (autograde/independent/05_dora): m starts right, forward divides by
    V.norm(dim=0): the identity check says which axis."""
    import math

    import torch.nn.functional as F

    from autograde.submissions import load_sample
    sample = load_sample(Path(__file__).parents[2] / "autograde/independent/05_dora"
                         / "bug_norm_wrong_axis.py")
    ns = {"torch": torch, "nn": nn, "F": F, "math": math}
    exec(compile(sample.cells["dora_linear"], sample.name, "exec"), ns)
    with pytest.raises(CheckFailure, match="over the columns"):
        dora.check_identity_at_init(ns["DoRALinear"])
