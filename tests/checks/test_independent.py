"""The regression set written without looking at solutions/, lorakit/checks/ or the samples
(autograde/independent/, see its README): every correct submission passes every check of its
notebook, every buggy one fails at least one.

Bugs the checks do not catch yet are listed in ESCAPES, as strict expected failures: the day a
check catches one, this test says so and the entry goes (issue: checks that catch what real
students write).
"""
import math
from pathlib import Path

import pytest
import test_checks_bilinear as bilinear_matrix
import test_checks_dora as dora_matrix
import test_checks_hylorada as hylorada_matrix
import test_checks_hylorada_v2 as hylorada_v2_matrix
import test_checks_lora as lora_matrix
import test_checks_practice as practice_matrix
import torch
import torch.nn.functional as F
from torch import nn

from autograde.submissions import load_samples

HERE = Path(__file__).resolve().parents[2] / "autograde" / "independent"

ESCAPES = {
}


def _verdicts(folder, sample):
    if folder == "01_lora_linear":
        return lora_matrix.verdicts(*lora_matrix.compile_sample(sample))
    if folder == "02_lora_in_practice":
        return practice_matrix.verdicts(*practice_matrix.compile_sample(sample))
    if folder in ("03_bilinear_conditioning", "04_rank_space_shift"):
        return bilinear_matrix.verdicts(folder, *bilinear_matrix.compile_sample(folder, sample))
    if folder == "05_dora":  # its setup cell also imports math and F (torch.nn.functional)
        ns = {"torch": torch, "nn": nn, "F": F, "math": math}
        exec(compile(sample.cells["dora_linear"], f"<{sample.name}>", "exec"), ns)
        return dora_matrix.verdicts(ns["DoRALinear"])
    if folder == "06_hylorada":  # its setup cell imports math and F
        ns = {"torch": torch, "nn": nn, "math": math, "F": F}
        exec(compile(sample.cells["hylorada_linear"], f"<{sample.name}>", "exec"), ns)
        return hylorada_matrix.verdicts(ns["HyLoRADALinear"])
    if folder == "07_hylorada_v2":  # setup: math; the notebook's locked HyLoRADAv1Linear cell
        ns = {**hylorada_v2_matrix.namespace(), "math": math}
        exec(compile(sample.cells["hylorada_v2_linear"], f"<{sample.name}>", "exec"), ns)
        return hylorada_v2_matrix.verdicts(ns["HyLoRADAv2Linear"])
    raise AssertionError(f"no check matrix for {folder}")


CASES = [(folder.name, s) for folder in sorted(HERE.iterdir()) if folder.is_dir()
         for s in load_samples(folder)]


def _param(folder, sample):
    key = f"{folder}/{sample.name}"
    marks = [pytest.mark.xfail(strict=True, reason=ESCAPES[key])] if key in ESCAPES else []
    return pytest.param(folder, sample, id=key, marks=marks)


pytestmark = pytest.mark.usefixtures("short_time_limit")  # tests/conftest.py


def test_the_set_has_correct_and_buggy_submissions_for_each_notebook():
    for folder in {f for f, _ in CASES}:
        kinds = [s.expect for f, s in CASES if f == folder]
        assert kinds.count("full") >= 3 and len(kinds) - kinds.count("full") >= 5, folder


@pytest.mark.parametrize("folder, sample", [_param(f, s) for f, s in CASES])
def test_independent_submission(folder, sample):
    results = _verdicts(folder, sample)
    failed = {name: msg for name, msg in results.items() if msg}
    if sample.expect == "full":
        assert not failed, failed
    else:
        assert failed, f"{sample.name} ({sample.description[:120]}) passes every check"
