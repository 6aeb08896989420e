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


# --------------------------------------------------------------------------------------------
# one table of layer cases: every registered adapter family (lorakit.layers.registry), built
# and called from its declaration (ADAPTER), for the layer-generic tests to iterate over
# --------------------------------------------------------------------------------------------
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from lorakit.layers.base import spec_of  # noqa: E402
from lorakit.layers.registry import FAMILIES  # noqa: E402

TEST_SIZES = {"cond_dim": 4, "structure_dim": 5}   # small condition and prior lengths


@dataclass(frozen=True)
class LayerCase:
    """One registered family: how to build a layer of it and what to call it with."""
    cls: type

    @property
    def name(self) -> str:
        return spec_of(self.cls).name

    @property
    def spec(self):
        return spec_of(self.cls)

    def build(self, base: nn.Linear, rank: int, alpha: float, **kwargs) -> nn.Module:
        sizes = {k: TEST_SIZES[k] for k in self.spec.sizes}
        return self.cls(base, rank=rank, alpha=alpha, **sizes, **kwargs)

    def extra(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple:
        """The forward's inputs after x: p (B, cond_dim), a prior (..., structure_dim), or none."""
        if self.spec.condition == "p":
            return (torch.randn(x.shape[0], TEST_SIZES["cond_dim"], generator=generator).to(x),)
        if self.spec.condition == "structure_prior":
            return (torch.randn(*x.shape[:-1], TEST_SIZES["structure_dim"], generator=generator).to(x),)
        return ()

    def __str__(self) -> str:
        return self.name


LAYER_CASES = [LayerCase(cls) for cls in FAMILIES]
LAYER_NAMES = [case.name for case in LAYER_CASES]
CASES = {case.name: case for case in LAYER_CASES}


@torch.no_grad()
def trained(layer: nn.Module, std: float = 1.0) -> nn.Module:
    """Every zero-initialised trainable tensor of ``layer`` (B, v2's w) drawn from N(0, std²), so
    that no path can shortcut a zero update."""
    for p in layer.parameters():
        if p.requires_grad and not p.any():
            p.normal_(0, std)
    return layer
