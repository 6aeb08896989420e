"""Notebooks 03 and 04's checks against independently written submissions.

Every correct sample must pass every check; every buggy one must fail exactly the checks its
header names, each with a message that names the concept. lorakit's reference layers pass every
check except the one that forbids borrowing them.
"""
import functools
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
from lorakit.checks import CheckFailure, _conditioned, _probe, bilinear, rss

SAMPLES_DIR = Path(__file__).parents[2] / "autograde/samples"
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
    """10 s per step here (tests/conftest.py's is 3 s): the bilinear checks' steps are longer."""
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


@pytest.mark.parametrize("folder,sample", [(f, s) for f, s in CASES if s.fails],
                         ids=lambda c: getattr(c, "name", c))
def test_failure_messages_teach(folder, sample):
    assert_messages_teach(verdicts(folder, *compile_sample(folder, sample)))


def _reference(name):
    from lorakit.layers import bilinear
    return getattr(bilinear, name)


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


# --- behaviour beyond one forward call: a matrix of buggy variants ------------------------------

class Bilinear(nn.Module):
    """A correct BilinearLoRALinear (RSS with shift=True) written like a student's."""
    shift = False

    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.1)
        self.B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.C = nn.Parameter(torch.randn(rank, cond_dim) * 0.1)
        if self.shift:
            self.S = nn.Parameter(torch.randn(rank, cond_dim) * 0.1)

    def gate(self, p, h):
        view = (p.shape[0],) + (1,) * (h.dim() - 2) + (h.shape[-1],)
        g = (p @ self.C.T).view(view)
        return g, ((p @ self.S.T).view(view) if self.shift else 0)

    def base(self, x):
        return self.base_layer(x)

    def forward(self, x, p):
        h = x @ self.A.T
        g, sh = self.gate(p, h)
        return self.base(x) + self.scaling * (h * g + sh) @ self.B.T


class RSS(Bilinear):
    shift = True


def new_merge(layer, p):
    with torch.no_grad():
        base = layer.base_layer
        merged = nn.Linear(base.in_features, base.out_features, bias=True)
        merged.weight.copy_(base.weight + layer.scaling * layer.B @ ((layer.C @ p)[:, None] * layer.A))
        b = torch.zeros(base.out_features) if base.bias is None else base.bias
        if layer.shift:
            b = b + layer.scaling * layer.B @ (layer.S @ p)
        merged.bias.copy_(b)
        if not layer.shift and base.bias is None:
            merged.bias = None
    return merged


def in_place_merge(layer, p):
    merged = new_merge(layer, p)
    with torch.no_grad():
        layer.base_layer.weight.copy_(merged.weight)
        if merged.bias is not None:
            if layer.base_layer.bias is None:
                layer.base_layer.bias = nn.Parameter(merged.bias.clone(), requires_grad=False)
            else:
                layer.base_layer.bias.copy_(merged.bias)
    return layer.base_layer


def variant(base_cls, name, **methods):
    return type(name, (base_cls,), methods)


def eval_skips(self, x, p):
    return base_cls_forward(self, x, p) if self.training else self.base_layer(x)


def base_cls_forward(self, x, p):
    return (RSS if self.shift else Bilinear).forward(self, x, p)


def _eval_gate_cache(self, p, h):
    if self.training:
        self._g = None
    elif getattr(self, "_g", None) is None:
        self._g = Bilinear.gate(self, p, h)
    return Bilinear.gate(self, p, h) if self.training else self._g


def _gate_cache_same_p(self, p, h):
    if getattr(self, "_p", None) is not p:
        self._p, self._g = p, Bilinear.gate(self, p, h)
    return self._g


def _base_no_grad(self, x):
    with torch.no_grad():
        return self.base_layer(x)


def _p_detached(self, p, h):
    return Bilinear.gate(self, p.detach(), h)


def merge_writes_base_returns_copy(layer, p):
    import copy
    in_place_merge(layer, p)
    return copy.deepcopy(layer.base_layer)


def merge_in_place_scales_B(layer, p):
    merged = in_place_merge(layer, p)
    with torch.no_grad():
        layer.B.mul_(2)
    return merged


def merge_needs_bias(layer, p):
    merged = new_merge(layer, p)
    layer.base_layer.bias.clone()
    return merged


def merge_shift_unscaled(layer, p):
    merged = new_merge(layer, p)
    with torch.no_grad():
        merged.bias += layer.B @ (layer.S @ p) * (1 - layer.scaling)
    return merged


B03, B04 = "03_bilinear_conditioning", "04_rank_space_shift"
BEHAVIOUR = {  # name: (folder, class, merge, {failing check: key}, words a message uses)
    "03 correct, new merged layer": (B03, Bilinear, new_merge, {}, ""),
    "03 correct, in-place merge (allowed in 03)": (B03, Bilinear, in_place_merge, {}, ""),
    "04 correct, new merged layer": (B04, RSS, new_merge, {}, ""),
    "04 in-place merge (not allowed in 04)": (B04, RSS, in_place_merge,
                                              {"merge": "rss.merge_leaves_layer"}, "every other p"),
    "03 adapter skipped in eval mode": (B03, variant(Bilinear, "E", forward=eval_skips), new_merge,
                                        {"update": "bilinear.eval_mode"}, "adapter is skipped"),
    "04 gate cached in eval mode": (B04, variant(RSS, "G", gate=_eval_gate_cache), new_merge,
                                    {"update": "rss.stale_state"}, "new values"),
    "03 gate cached for a repeated p": (B03, variant(Bilinear, "P", gate=_gate_cache_same_p),
                                        new_merge, {"update": "bilinear.stale_state",
                                                    "gradients": "bilinear.gradients",
                                                    "gradient gating": "bilinear.gradient_gating"},
                                        "new values"),
    "03 base path under no_grad": (B03, variant(Bilinear, "N", base=_base_no_grad), new_merge,
                                   {"gradients": "bilinear.input_gradient",
                                    "gradient gating": "bilinear.gradient_gating"}, "detached"),
    "04 p detached": (B04, variant(RSS, "D", gate=_p_detached), new_merge,
                      {"gradients": "rss.condition_gradient", "gradient gating": "rss.gradient_gating"},
                      "condition p"),
    "03 merge writes into base_layer, returns a copy": (
        B03, Bilinear, merge_writes_base_returns_copy, {"merge": "bilinear.merge_leaves_layer"},
        "counts the update twice"),
    "03 in-place merge that also changes the adapter": (
        B03, Bilinear, merge_in_place_scales_B, {"merge": "bilinear.merge_leaves_layer"}, "['B']"),
    "03 merge crashes on a bias-free base": (B03, Bilinear, merge_needs_bias,
                                             {"merge": "bilinear.merge_crash"}, "has no bias"),
    "04 merge: the shift's bias unscaled": (B04, RSS, merge_shift_unscaled,
                                            {"merge": "rss.merge_function"}, "needs the scaling"),
}


@pytest.mark.parametrize("name", list(BEHAVIOUR))
def test_behaviour_variants(name):
    folder, cls, merge_fn, want, words = BEHAVIOUR[name]
    checks = NOTEBOOKS[folder][0]
    failures = {}
    for check_name, check in dict(checks.CHECKS, merge=lambda c: checks.check_merge(c, merge_fn)).items():
        try:
            check(cls)
        except CheckFailure as e:
            failures[check_name] = e
    assert {n: e.key for n, e in failures.items()} == want, {n: str(e) for n, e in failures.items()}
    assert not failures or any(words in str(e) for e in failures.values()), failures


def test_every_failure_of_the_samples_has_a_concept_key():
    for folder, sample in CASES:
        checks = NOTEBOOKS[folder][0]
        topic = "bilinear" if checks is bilinear else "rss"
        cls, merge_fn = compile_sample(folder, sample)
        named = dict(checks.CHECKS, merge=functools.partial(checks.check_merge,
                                                             merge_fn=merge_fn or new_merge))
        for name, check in named.items():
            try:
                check(cls)
            except CheckFailure as e:
                assert e.key and e.key.startswith(topic + "."), (sample.name, name, e.key, str(e))
