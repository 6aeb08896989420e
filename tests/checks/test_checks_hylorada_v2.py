"""Notebook 07's HyLoRADA v2 checks against independently written submissions.

Submissions may build on the notebook's own v1 class (``HyLoRADAv1Linear``, a locked cell of
solutions/07_hylorada_v2/hylorada_v2.ipynb): it is read from the notebook and defined first, as
in the notebook. Every correct sample must pass every check; every buggy one must fail exactly
the checks its header names, each with a message that names the concept. lorakit's
HyLoRADAv2Linear passes every check except the one that forbids borrowing it.
"""
from pathlib import Path

import nbformat
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
from lorakit.checks import CheckFailure, hylorada_v2
from lorakit.layers import HyLoRADALinear
from lorakit.layers import HyLoRADAv2Linear as Reference

ROOT = Path(__file__).parents[2]
NOTEBOOK = ROOT / "solutions/07_hylorada_v2/hylorada_v2.ipynb"
SAMPLES = [s for s in load_samples(ROOT / "autograde/samples/07_hylorada_v2")
           if not s.name.startswith("hostile_")]
ALL = list(hylorada_v2.CHECKS) + ["not reference"]


def cell(grade_id: str) -> str:
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    (source,) = [c.source for c in nb.cells
                 if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return source


def namespace() -> dict:
    """What the notebook has defined before the answer cell: torch, nn and HyLoRADAv1Linear."""
    ns = {"torch": torch, "nn": nn, "__name__": "submission"}
    exec(compile(cell("hylorada_v1"), "<notebook:hylorada_v1>", "exec"), ns)
    return ns


def compile_source(source: str, name: str):
    ns = namespace()
    exec(compile(source, f"<{name}>", "exec"), ns)
    return ns["HyLoRADAv2Linear"]


def compile_sample(sample):
    return compile_source(sample.cells["hylorada_v2_linear"], f"{sample.name}:hylorada_v2_linear")


def verdicts(cls):
    return with_borrowing_check(hylorada_v2.report(cls, verbose=False),
                                hylorada_v2.check_not_reference, cls)


pytestmark = pytest.mark.usefixtures("short_time_limit")  # tests/conftest.py


def test_there_are_enough_samples():
    kinds = [s.expect for s in SAMPLES]
    assert kinds.count("full") >= 3 and kinds.count("partial") >= 5


# These samples do not validate the prior's shape: they relied on torch to reject a wrong one,
# and torch broadcasts a (1, T, d), (B, 1, d), (T, d) or (d,) prior silently. The contract says
# "a prior whose shape is not x.shape[:-1] + (structure_dim,) raises an error", so they fail
# 'prior shape' too. Their headers (autograde/samples/, another owner) predate that check; this
# says how they grade until each header (or sample) is updated, and then the entry must go.
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_verdicts(sample):
    assert_verdicts_match_header(sample, verdicts(compile_sample(sample)), ALL)


def test_the_notebooks_own_solution_passes_everything():
    cls = compile_source(cell("hylorada_v2_linear"), "notebook:hylorada_v2_linear")
    assert all(msg is None for msg in verdicts(cls).values()), verdicts(cls)


def test_reference_layer_passes_all_but_the_borrowing_check():
    results = hylorada_v2.report(Reference, verbose=False)
    assert all(msg is None for msg in results.values()), results
    with pytest.raises(CheckFailure, match="implement HyLoRADAv2Linear yourself"):
        hylorada_v2.check_not_reference(Reference)


def test_the_notebooks_v1_is_lorakits_v1():
    """The given v1 computes HyLoRADALinear's function with the same weights."""
    V1 = namespace()["HyLoRADAv1Linear"]
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    ours, ref = V1(base, rank=3, alpha=6), HyLoRADALinear(base, rank=3, alpha=6)
    with torch.no_grad():
        for p in ref.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
        for name in ("lora_A", "lora_B", "magnitude", "magnitude_gate", "residual_weight"):
            getattr(ours, name).copy_(getattr(ref, name))
    x = torch.randn(2, 5, 12)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(ours.magnitude_init, ref.magnitude_init)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.fails], ids=lambda s: s.name)
def test_failure_messages_teach(sample):
    assert_messages_teach(verdicts(compile_sample(sample)))


def test_specific_diagnoses():
    samples = {s.name: s for s in SAMPLES}

    def msgs(name):
        return verdicts(compile_sample(samples[name]))

    assert "whole output" in msgs("bug_factor_whole_output")["factor on update"]
    assert "pretrained part W x" in msgs("bug_factor_on_base")["factor on update"]
    assert "per row of the weight" in msgs("bug_norm_per_token")["factor on update"]
    m = msgs("bug_no_offset")
    assert "0.5 offset" in m["factor on update"] and "offset" in m["starts as v1"]
    assert "offset is missing" in m["zero prior"]
    m = msgs("bug_w_bias")
    assert "bias" in m["trainable parameters"] and "bias" in m["zero prior"]
    assert "not zero at init" in msgs("bug_w_random")["starts as v1"]
    assert "mean or norm over positions" in msgs("bug_prior_mean")["per position"]


def test_verdicts_are_deterministic():
    cls = compile_sample(next(s for s in SAMPLES if s.name == "bug_no_offset"))
    assert verdicts(cls) == verdicts(cls)


def test_checks_leave_the_callers_rng_alone():
    assert_rng_untouched(lambda: hylorada_v2.check_factor_on_update(Reference))


def test_a_missing_w_is_named():
    cls = compile_source('''
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)

    def forward(self, x, structure_prior=None):
        return super().forward(x)
''', "no_w")
    with pytest.raises(CheckFailure, match="No trainable projection w"):
        hylorada_v2.check_w_init(cls)
    with pytest.raises(CheckFailure, match="That is v1's count"):
        hylorada_v2.check_trainable(cls)


# --- mutants of the notebook's solution: each new check catches its bug, and only its cell fails

def correct():
    return compile_source(cell("hylorada_v2_linear"), "notebook:hylorada_v2_linear")


def mutant(name: str, body: str):
    """A subclass of the notebook's solution with ``body`` as its class body."""
    ns = namespace()
    ns["Correct"] = correct()
    exec(compile(f"class {name}(Correct):\n{body}", f"<{name}>", "exec"), ns)
    return ns[name]


LETS_THROUGH = {  # a prior shape that broadcasts: the mutant validates every other wrong shape
    "lets_1TD": (1, hylorada_v2.T, hylorada_v2.SD), "lets_B1D": (hylorada_v2.BATCH, 1, hylorada_v2.SD),
    "lets_TD": (hylorada_v2.T, hylorada_v2.SD), "lets_D": (hylorada_v2.SD,)}

VALIDATES_ALL_BUT = """
    def forward(self, x, structure_prior=None):
        if structure_prior is not None and tuple(structure_prior.shape) != {shape}:
            return super().forward(x, structure_prior)
        if structure_prior is None:
            return super().forward(x)
        f = 0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))   # broadcasts
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
"""

MUTANT_BODIES = {   # name: (class body, the cells it fails, the concept key of the first failure)
    **{name: (VALIDATES_ALL_BUT.format(shape=shape), {"prior shape"}, "hylorada_v2.prior_shape")
       for name, shape in LETS_THROUGH.items()},
    "prior_detached": ("""
    def forward(self, x, structure_prior=None):
        return super().forward(x, None if structure_prior is None else structure_prior.detach())
""", {"gradients"}, "hylorada_v2.input_gradient"),
    "norm_cached_on_first_call": ("""
    def row_scale(self):
        if getattr(self, "_n", None) is None:
            V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
            self._n = V.norm(dim=1).detach()
        gate, beta = torch.sigmoid(self.magnitude_gate), torch.sigmoid(self.residual_weight)
        m_eff = self.magnitude_init + gate * (self.magnitude - self.magnitude_init)
        return 1 + (1 - beta) * (m_eff / self._n - 1)
""", {"factor on update"}, "hylorada_v2.stale_state"),
    "eval_ignores_prior": ("""
    def forward(self, x, structure_prior=None):
        return super().forward(x, structure_prior if self.training else None)
""", {"factor on update"}, "hylorada_v2.eval_mode"),
    "prior_remembered": ("""
    def forward(self, x, structure_prior=None):
        last = getattr(self, "_last", None)
        if structure_prior is None and last is not None and last.shape[:-1] == x.shape[:-1]:
            structure_prior = last
        if structure_prior is not None:
            self._last = structure_prior.detach()
        return super().forward(x, structure_prior)
""", {"factor on update"}, "hylorada_v2.stale_state"),
}


@pytest.mark.parametrize("name", list(MUTANT_BODIES))
def test_mutant_verdicts(name):
    body, cells, concept_key = MUTANT_BODIES[name]
    cls = mutant(name, body)
    results = verdicts(cls)
    assert {n for n, msg in results.items() if msg} == cells, results
    with pytest.raises(CheckFailure) as info:
        hylorada_v2.CHECKS[sorted(cells)[0]](cls)
    assert info.value.key == concept_key, str(info.value)
    assert_messages_teach(results)


@pytest.mark.parametrize("name", list(LETS_THROUGH))
def test_the_prior_shape_message_names_the_shape_accepted(name):
    with pytest.raises(CheckFailure) as info:
        hylorada_v2.check_prior_shape(mutant(name, VALIDATES_ALL_BUT.format(shape=LETS_THROUGH[name])))
    assert f"{LETS_THROUGH[name]} (returned" in str(info.value)


def test_a_bug_of_the_no_prior_path_alone_is_charged_once():
    """Without a prior it forgets v1's row factor; with one it is right."""
    cls = mutant("NoPriorPlainLoRA", """
    def forward(self, x, structure_prior=None):
        if structure_prior is None:
            y = x @ self.base_layer.weight.T + self.update(x)
            return y if self.base_layer.bias is None else y + self.base_layer.bias
        return super().forward(x, structure_prior)
""")
    failed = {n for n, msg in verdicts(cls).items() if msg}
    assert failed == {"no prior is v1"}


def test_the_gradcheck_includes_the_prior():
    """A hand-written backward that gets the prior's gradient wrong fails 'gradients' only."""
    cls = mutant("HalfPriorGradient", """
    def forward(self, x, structure_prior=None):
        if structure_prior is None:
            return super().forward(x)
        halved = structure_prior / 2 + (structure_prior / 2).detach()   # same value, half the gradient
        return super().forward(x, halved)
""")
    results = verdicts(cls)
    assert {n for n, msg in results.items() if msg} == {"gradients"}, results
    assert "structure_prior" in results["gradients"] and "numerical derivative" in results["gradients"]
