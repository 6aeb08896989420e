"""Behavioural checks for notebook 03 (bilinear conditioning).

Contract: ``BilinearLoRALinear(base_layer, cond_dim, rank=4, alpha=1)`` keeps
``self.base_layer`` and ``self.scaling = alpha / rank``; ``forward(x, p)`` takes x of shape
(B, ..., in_features) and p of shape (B, cond_dim), broadcast over the middle dims of x::

    y = base(x) + scaling * B((A x) ⊙ (C p))      A (r, in), B (out, r), C (r, cond_dim)

``merge_conditioned(layer, p) -> nn.Linear`` for one p of shape (cond_dim,) computes what
``layer(x, p)`` computes for that p: weight W + scaling * B diag(C p) A, bias unchanged. The
notebook allows updating ``layer.base_layer`` in place and returning it; then ``layer`` is spent
(its base holds the update for that p, so ``layer(x, p')`` adds it on top of its own for every
p'). Any other merge leaves ``layer`` computing what it computed, for every condition.

A, B and C are found among the trainable parameters by shape (nn.Parameter or nn.Linear,
either orientation, einsum or ``@`` all pass). Each check raises ``CheckFailure`` (an
AssertionError) whose message names the concept and carries a concept key ``bilinear.<concept>``.
Shared code: ``_conditioned.py``.
"""
from __future__ import annotations

from typing import Callable

from . import _conditioned as _c
from ._common import keyed
from ._probe import run_checks

VARIANT = _c.BILINEAR


@keyed("bilinear.shapes")
def check_shapes(cls: type) -> None:
    """Output (B, ..., out) for x (B, in), (B, T, in), (B, T, U, in) and p (B, cond_dim)."""
    _c.check_shapes(cls, VARIANT)


@keyed("bilinear.per_sample")
def check_per_sample(cls: type) -> None:
    """Sample b's output depends on p[b] only (also when the batch size equals a middle dim)."""
    _c.check_per_sample(cls, VARIANT)


@keyed("bilinear.frozen")
def check_frozen(cls: type, in_f: int = _c.IN, out_f: int = _c.OUT, rank: int = _c.RANK,
                 cond: int = _c.COND) -> None:
    """The base is frozen and exactly r*(in + out + cond_dim) parameters train."""
    _c.check_frozen(cls, VARIANT, in_f, out_f, rank, cond)


@keyed("bilinear.identity_at_init")
def check_identity_at_init(cls: type) -> None:
    """At init the layer equals its base for every p (B = 0)."""
    _c.check_identity_at_init(cls, VARIANT)


@keyed("bilinear.off_at_zero")
def check_off_at_zero(cls: type) -> None:
    """p = 0 switches the adapter off: layer(x, 0) = base(x) even with B != 0."""
    _c.check_off_at_zero(cls, VARIANT)


@keyed("bilinear.bilinear")
def check_bilinear(cls: type) -> None:
    """The update layer(x, p) - base(x) is linear in x (fixed p) and linear in p (fixed x)."""
    _c.check_bilinear(cls, VARIANT)


@keyed("bilinear.update")
def check_update(cls: type) -> None:
    """With non-zero adapters: y = base(x) + (alpha/r) * B((A x) ⊙ (C p))."""
    _c.check_update(cls, VARIANT)


@keyed("bilinear.column_space")
def check_column_space(cls: type) -> None:
    """Every update lies in the column space of B."""
    _c.check_column_space(cls, VARIANT)


@keyed("bilinear.scaling")
def check_scaling(cls: type) -> None:
    """self.scaling = alpha / rank and the update is scaled by it."""
    _c.check_scaling(cls, VARIANT)


@keyed("bilinear.low_rank_order")
def check_low_rank_order(cls: type) -> None:
    """forward never builds an (out x in)-sized tensor such as B diag(C p) A."""
    _c.check_low_rank_order(cls, VARIANT)


@keyed("bilinear.gradients")
def check_gradients(cls: type) -> None:
    """B gets a gradient at init; A, B and C once B != 0; the base never."""
    _c.check_gradients(cls, VARIANT)


@keyed("bilinear.gradient_gating")
def check_gradient_gating(cls: type) -> None:
    """∂L/∂A = scaling * diag(C p) Bᵀ Gᵀ X (zero at p = 0); gradcheck passes in float64."""
    _c.check_gradient_gating(cls, VARIANT)


@keyed("bilinear.merge")
def check_merge(cls: type, merge_fn: Callable) -> None:
    """merge_fn(layer, p) returns an nn.Linear computing layer(x, p) for that p."""
    _c.check_merge(cls, merge_fn, VARIANT)


def check_not_reference(cls: type, merge_fn: Callable | None = None) -> None:
    """The submission implements the layer rather than subclassing or calling lorakit's."""
    _c.check_not_reference(cls, merge_fn, VARIANT)


CHECKS: dict[str, Callable] = {
    "shapes": check_shapes,
    "per-sample conditioning": check_per_sample,
    "frozen": check_frozen,
    "identity at init": check_identity_at_init,
    "off at p = 0": check_off_at_zero,
    "bilinear": check_bilinear,
    "update": check_update,
    "column space": check_column_space,
    "scaling": check_scaling,
    "low-rank order": check_low_rank_order,
    "gradients": check_gradients,
    "gradient gating": check_gradient_gating,
}


def report(cls: type, merge_fn: Callable | None = None, verbose: bool = True) -> dict[str, str | None]:
    """Run every check on ``cls`` (and ``merge_fn``) and print a table; never raises.

    Returns {check name: None if passed, else the failure message}.
    """
    checks = dict(CHECKS)
    if merge_fn is not None:
        checks["merge"] = lambda c: check_merge(c, merge_fn)
    return run_checks(checks, cls, verbose)
