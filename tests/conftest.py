"""Fixtures shared by the test modules (pytest loads this file before them).

``short_time_limit``: the checks' per-step time limit (``lorakit.checks._probe.STEP_SECONDS``,
what a student's layer may take per forward or backward before a check gives up on it)
shortened, so that a sample that hangs costs seconds, not the grading default. Modules that
grade samples use it for every test (``pytestmark = pytest.mark.usefixtures(...)``); a module
that needs another limit defines its own fixture of the same name.
"""
from __future__ import annotations

import pytest

from lorakit.checks import _probe

SAMPLE_STEP_SECONDS = 3


@pytest.fixture
def short_time_limit(monkeypatch):
    monkeypatch.setattr(_probe, "STEP_SECONDS", SAMPLE_STEP_SECONDS)
