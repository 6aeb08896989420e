"""Behavioural checks for notebook 04 (the rank-space shift, RSS).

Contract: ``RSSBilinearLoRA(base_layer, cond_dim, rank=4, alpha=1)`` keeps
``self.base_layer`` and ``self.scaling = alpha / rank``; ``forward(x, p)`` takes x of shape
(B, ..., in_features) and p of shape (B, cond_dim), broadcast over the middle dims of x::

    y = base(x) + scaling * B((A x) ⊙ (C p) + S p)    A (r, in), B (out, r), C, S (r, cond_dim)

``merge_conditioned(layer, p) -> nn.Linear`` for one p of shape (cond_dim,) computes what
``layer(x, p)`` computes for that p: weight W + scaling * B diag(C p) A and bias
b + scaling * B S p (a bias is created when the base layer has none). The layer it was given
still computes what it computed, for every condition: a merge for one p written into
``layer.base_layer`` would make ``layer`` wrong for every other p.

A, B, C and S are found among the trainable parameters by shape (C and S may also be one fused
(2r, cond_dim) projection); C and S share a shape and are told apart by behaviour: at x = 0
only the shift reaches the output. Shared code: ``_conditioned.py``; the checks that do not
involve the shift are the same as notebook 03's. Concept keys: ``rss.<concept>``.
"""
from __future__ import annotations

from typing import Callable

from . import _conditioned as _c
from ._common import keyed
from ._probe import run_checks

VARIANT = _c.RSS


@keyed("rss.shapes")
def check_shapes(cls: type) -> None:
    """Output (B, ..., out) for x (B, in), (B, T, in), (B, T, U, in) and p (B, cond_dim)."""
    _c.check_shapes(cls, VARIANT)


@keyed("rss.per_sample")
def check_per_sample(cls: type) -> None:
    """Sample b's output depends on p[b] only (also when the batch size equals a middle dim)."""
    _c.check_per_sample(cls, VARIANT)


@keyed("rss.frozen")
def check_frozen(cls: type, in_f: int = _c.IN, out_f: int = _c.OUT, rank: int = _c.RANK,
                 cond: int = _c.COND) -> None:
    """The base is frozen and exactly r*(in + out + 2*cond_dim) parameters train."""
    _c.check_frozen(cls, VARIANT, in_f, out_f, rank, cond)


@keyed("rss.identity_at_init")
def check_identity_at_init(cls: type) -> None:
    """At init the layer equals its base for every p (B = 0)."""
    _c.check_identity_at_init(cls, VARIANT)


@keyed("rss.off_at_zero")
def check_off_at_zero(cls: type) -> None:
    """p = 0 switches the adapter off (gate and shift): layer(x, 0) = base(x) even with B != 0."""
    _c.check_off_at_zero(cls, VARIANT)


@keyed("rss.shift")
def check_shift(cls: type) -> None:
    """The update is G(x, p) + σ(p): σ(p) = Δ(0, p) is non-zero, linear in p and independent of
    x; G is linear in x and in p."""
    _c.check_shift(cls, VARIANT)


@keyed("rss.update")
def check_update(cls: type) -> None:
    """With non-zero adapters: y = base(x) + (alpha/r) * B((A x) ⊙ (C p) + S p)."""
    _c.check_update(cls, VARIANT)


@keyed("rss.column_space")
def check_column_space(cls: type) -> None:
    """Every update, shift included, lies in the column space of B."""
    _c.check_column_space(cls, VARIANT)


@keyed("rss.scaling")
def check_scaling(cls: type) -> None:
    """self.scaling = alpha / rank and the whole update (shift included) is scaled by it."""
    _c.check_scaling(cls, VARIANT)


@keyed("rss.low_rank_order")
def check_low_rank_order(cls: type) -> None:
    """forward never builds an (out x in)-sized tensor such as B diag(C p) A."""
    _c.check_low_rank_order(cls, VARIANT)


@keyed("rss.gradients")
def check_gradients(cls: type) -> None:
    """B gets a gradient at init; A, B, C and S once B != 0; the base never."""
    _c.check_gradients(cls, VARIANT)


@keyed("rss.gradient_gating")
def check_gradient_gating(cls: type) -> None:
    """∂L/∂A = scaling * diag(C p) Bᵀ Gᵀ X (the shift does not touch it); gradcheck in float64."""
    _c.check_gradient_gating(cls, VARIANT)


@keyed("rss.merge")
def check_merge(cls: type, merge_fn: Callable) -> None:
    """merge_fn(layer, p) returns an nn.Linear computing layer(x, p): the shift goes into the bias."""
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
    "rank-space shift": check_shift,
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
