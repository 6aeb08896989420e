"""Notebook 06's HyLoRADA checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept. lorakit's HyLoRADALinear passes every
check except the one that forbids borrowing it.
"""
from pathlib import Path

import pytest
import torch
from check_matrix import assert_messages_teach, assert_verdicts_match_header, with_borrowing_check
from torch import nn

from autograde.submissions import load_samples
from lorakit.checks import CheckFailure, hylorada
from lorakit.layers import HyLoRADALinear as Reference

# hostile_* samples attack the grading pipeline; tests/grading/test_pipeline.py grades them.
SAMPLES = [s for s in load_samples(Path(__file__).parents[2] / "autograde/samples/06_hylorada")
           if not s.name.startswith("hostile_")]
ALL = list(hylorada.CHECKS) + ["not reference"]


def compile_sample(sample):
    ns = {"torch": torch, "nn": nn}
    exec(compile(sample.cells["hylorada_linear"], f"<{sample.name}:hylorada_linear>", "exec"), ns)
    return ns["HyLoRADALinear"]


def verdicts(cls):
    return with_borrowing_check(hylorada.report(cls, verbose=False), hylorada.check_not_reference, cls)


pytestmark = pytest.mark.usefixtures("short_time_limit")  # tests/conftest.py


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


# --- mutants of a correct layer: each new check catches its bug, and only its cell fails -------

class Correct(nn.Module):
    """The notebook's solution."""

    def __init__(self, base_layer, rank=8, alpha=16, gain=1.0):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(nn.init.orthogonal_(torch.empty(rank, base_layer.in_features),
                                                       gain=gain))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        rows = base_layer.weight.detach().norm(dim=1)
        self.magnitude = nn.Parameter(rows.clone())
        self.register_buffer("magnitude_init", rows.clone())
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0))
        self.residual_weight = nn.Parameter(torch.tensor(0.1))

    def norm(self, V):
        return V.norm(dim=1).detach()

    def forward(self, x):
        W, b = self.base_layer.weight, self.base_layer.bias
        V = W + self.scaling * self.lora_B @ self.lora_A
        gate, beta = torch.sigmoid(self.magnitude_gate), torch.sigmoid(self.residual_weight)
        m_eff = gate * self.magnitude + (1 - gate) * self.magnitude_init
        z = x @ V.T
        y = (1 - beta) * (m_eff / self.norm(V)) * z + beta * z
        return y if b is None else y + b


class OrthogonalRescaled(Correct):
    """Orthogonal rows of norm 0.58, as Kaiming's: orthogonal, but not orthonormal."""
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__(base_layer, rank, alpha, gain=0.58)


class EvalLoRAOnly(Correct):
    def forward(self, x):
        if self.training:
            return super().forward(x)
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        y = x @ V.T
        return y if self.base_layer.bias is None else y + self.base_layer.bias


class NormCachedOnFirstCall(Correct):
    def norm(self, V):
        if getattr(self, "_n", None) is None:
            self._n = V.norm(dim=1).detach()
        return self._n


class InputDetached(Correct):
    def forward(self, x):
        return super().forward(x.detach())


class Only2D(Correct):
    def forward(self, x):
        if x.dim() != 2:
            raise ValueError("x must be (N, in_features)")
        return super().forward(x)


MUTANTS = {   # class: (the cells it fails, the concept key of the first failure)
    OrthogonalRescaled: ({"orthogonal init"}, "hylorada.orthogonal_init"),
    EvalLoRAOnly: ({"forward"}, "hylorada.eval_mode"),
    NormCachedOnFirstCall: ({"forward"}, "hylorada.stale_state"),
    InputDetached: ({"gradients"}, "hylorada.input_gradient"),
    Only2D: ({"shapes"}, "hylorada.forward_crash"),
}


def test_the_correct_layer_passes_everything():
    assert all(msg is None for msg in verdicts(Correct).values()), verdicts(Correct)


@pytest.mark.parametrize("cls", list(MUTANTS), ids=lambda c: c.__name__)
def test_mutant_verdicts(cls):
    cells, concept_key = MUTANTS[cls]
    results = verdicts(cls)
    assert {name for name, msg in results.items() if msg} == cells, results
    with pytest.raises(CheckFailure) as info:
        hylorada.CHECKS[sorted(cells)[0]](cls)
    assert info.value.key == concept_key, str(info.value)
    assert_messages_teach(results)


def test_a_rescaled_orthogonal_A_is_named():
    """The contract's orthonormal rows: A Aᵀ = I, not only orthogonal rows."""
    with pytest.raises(CheckFailure) as info:
        hylorada.check_orthogonal_init(OrthogonalRescaled)
    assert "A Aᵀ = I" in str(info.value) and "do not have norm 1" in str(info.value)
    assert "0.58" in str(info.value)
