"""Notebooks 03 and 04's checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept. lorakit's reference layers pass every
check except the one that forbids borrowing them.
"""
from pathlib import Path

import pytest
import torch
from torch import nn

from autograde.submissions import load_samples
from check_matrix import (assert_messages_teach, assert_rng_untouched,
                          assert_verdicts_match_header, with_borrowing_check)
from lorakit.checks import CheckFailure, _conditioned, _probe, bilinear, rss

SAMPLES_DIR = Path(__file__).parents[1] / "autograde/samples"
NOTEBOOKS = {
    # folder: (checks module, class name, grade id of the layer cell)
    "03_bilinear_conditioning": (bilinear, "BilinearLoRALinear", "bilinear_lora"),
    "04_rank_space_shift": (rss, "RSSBilinearLoRA", "rss_lora"),
}
CASES = [(folder, s) for folder in NOTEBOOKS for s in load_samples(SAMPLES_DIR / folder)]


def compile_sample(folder, sample):
    _, cls_name, layer_id = NOTEBOOKS[folder]
    ns = {"torch": torch, "nn": nn}
    for grade_id in (layer_id, "merge_conditioned"):
        if grade_id in sample.cells:
            exec(compile(sample.cells[grade_id], f"<{sample.name}:{grade_id}>", "exec"), ns)
    return ns[cls_name], ns.get("merge_conditioned")


def verdicts(folder, cls, merge_fn):
    checks = NOTEBOOKS[folder][0]
    results = with_borrowing_check(checks.report(cls, merge_fn, verbose=False),
                                   checks.check_not_reference, cls, merge_fn)
    if merge_fn is None:
        results["merge"] = "The submission defines no merge_conditioned function."
    return results


@pytest.fixture(autouse=True)
def short_time_limit(monkeypatch):
    monkeypatch.setattr(_probe, "STEP_SECONDS", 10)


def test_each_notebook_has_enough_samples():
    for folder in NOTEBOOKS:
        samples = load_samples(SAMPLES_DIR / folder)
        assert sum(s.expect == "full" for s in samples) >= 4, folder
        assert sum(s.expect == "partial" for s in samples) >= 6, folder


@pytest.mark.parametrize("folder,sample", CASES, ids=lambda c: getattr(c, "name", c))
def test_sample_verdicts(folder, sample):
    cls, merge_fn = compile_sample(folder, sample)
    results = verdicts(folder, cls, merge_fn)
    known = set(NOTEBOOKS[folder][0].CHECKS) | {"merge", "not reference"}
    assert_verdicts_match_header(sample, results, known)


@pytest.mark.parametrize("folder,sample", [c for c in CASES if c[1].fails],
                         ids=lambda c: getattr(c, "name", c))
def test_failure_messages_teach(folder, sample):
    assert_messages_teach(verdicts(folder, *compile_sample(folder, sample)))


def _reference(name):
    layers = pytest.importorskip("lorakit.layers.bilinear")  # skipped until the layers exist
    return getattr(layers, name)


@pytest.mark.parametrize("folder", list(NOTEBOOKS))
def test_reference_layer_passes_all_but_the_borrowing_check(folder):
    checks, cls_name, _ = NOTEBOOKS[folder]
    ref = _reference(cls_name)
    merge = lambda layer, p: layer.to_linear(p)  # noqa: E731
    results = checks.report(ref, merge, verbose=False)
    assert all(msg is None for msg in results.values()), results
    with pytest.raises(CheckFailure, match="yourself"):
        checks.check_not_reference(ref, merge)


@pytest.mark.parametrize("folder", list(NOTEBOOKS))
def test_the_one_plus_gate_is_a_different_layer(folder):
    """gate='one_plus' (1 + Cp) is a correct layer of another kind: it fails exactly the checks
    about the pure bilinear form, with a message that names 1 + C p."""
    checks, cls_name, _ = NOTEBOOKS[folder]
    ref = _reference(cls_name)

    class OnePlus(ref):
        def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
            super().__init__(base_layer, cond_dim, rank, alpha, gate="one_plus")

    results = checks.report(OnePlus, lambda layer, p: layer.to_linear(p), verbose=False)
    form = "bilinear" if checks is bilinear else "rank-space shift"
    failed = {n for n, m in results.items() if m}
    assert failed == {"off at p = 0", form, "update", "gradient gating"}, results
    assert "1 + C p" in results["update"]


def test_verdicts_are_deterministic():
    folder = "03_bilinear_conditioning"
    sample = next(s for _, s in CASES if s.name == "bug_one_plus")
    cls, merge_fn = compile_sample(folder, sample)
    assert verdicts(folder, cls, merge_fn) == verdicts(folder, cls, merge_fn)


def test_checks_leave_the_callers_rng_alone():
    folder = "04_rank_space_shift"
    cls, _ = compile_sample(folder, next(s for f, s in CASES
                                         if f == folder and s.name == "correct_parameters"))
    assert_rng_untouched(lambda: (rss.check_update(cls), rss.check_identity_at_init(cls)))


def test_gate_and_shift_are_told_apart_in_any_order():
    """C and S share a shape: whichever is declared first, or fused in one projection, the
    checks find which is which by behaviour."""
    folder = "04_rank_space_shift"
    cls, _ = compile_sample(folder, next(s for f, s in CASES
                                         if f == folder and s.name == "correct_fused_film"))
    layer = _conditioned.make_layer(cls, _conditioned.RSS)
    f = _conditioned.find_cond_factors(layer, _conditioned.RSS)
    W = layer.film.weight.detach()
    assert torch.equal(f.S.value, W[:_conditioned.RANK]) and torch.equal(f.C.value, W[_conditioned.RANK:])


def test_specific_diagnoses():
    def msgs(folder, name):
        sample = next(s for f, s in CASES if f == folder and s.name == name)
        return verdicts(folder, *compile_sample(folder, sample))

    m = msgs("03_bilinear_conditioning", "bug_output_gate")
    assert "output-space FiLM" in m["column space"]
    m = msgs("03_bilinear_conditioning", "bug_bare_broadcast")
    assert "last two" in m["per-sample conditioning"]
    m = msgs("03_bilinear_conditioning", "bug_merge_no_gate")
    assert "diag(C p)" in m["merge"]
    m = msgs("03_bilinear_conditioning", "bug_no_scaling")
    assert "alpha/rank" in m["scaling"]
    m = msgs("03_bilinear_conditioning", "bug_detached_gate")
    assert "gradcheck" in m["gradient gating"]
    m = msgs("04_rank_space_shift", "bug_merge_needs_bias")
    assert "no bias" in m["merge"]
    m = msgs("04_rank_space_shift", "bug_merge_drops_shift")
    assert "conditional bias" in m["merge"]
    m = msgs("04_rank_space_shift", "bug_shift_gated")
    assert "square" in m["rank-space shift"]
    m = msgs("04_rank_space_shift", "bug_shift_unscaled")
    assert "shift B S p is not multiplied by scaling" in m["scaling"]
