"""What every tests/checks/test_checks_*.py verdict matrix asserts, written once.

Each file builds the verdicts of one notebook's checks for the samples in
``autograde/samples/<notebook>/`` (every check's message, None when it passed); these helpers
add the borrowing check, compare the verdicts with a sample's ``# expect:``/``# fails:`` header,
and hold the checks to teaching messages and to leaving the caller's random state alone.
"""
from __future__ import annotations

from typing import Callable

import torch

from lorakit.checks import CheckFailure


def with_borrowing_check(results: dict, check_not_reference: Callable, *args) -> dict:
    """``results`` plus "not reference": None when the submission is its own implementation."""
    try:
        check_not_reference(*args)
        results["not reference"] = None
    except CheckFailure as e:
        results["not reference"] = str(e)
    return results


def assert_verdicts_match_header(sample, results: dict, known: set[str]) -> None:
    """A "full" sample passes every check; any other fails exactly the checks it names."""
    failed = sorted(name for name, msg in results.items() if msg)
    if sample.expect == "full":
        assert failed == [], {n: results[n] for n in failed}
    else:
        unknown = set(sample.fails) - set(known)
        assert not unknown, f"header names unknown checks {unknown}"
        assert failed == sorted(sample.fails), {n: results[n] for n in failed}


def assert_messages_teach(results: dict) -> None:
    """Messages are sentences about the concept, never a bare assert."""
    for name, msg in results.items():
        if msg:
            assert len(msg) > 40 and msg[0].isupper(), (name, msg)


def assert_rng_untouched(run_checks: Callable[[], object]) -> None:
    """Running the checks leaves torch's global random stream where it was."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_checks()
    assert torch.equal(torch.rand(3), expected)
