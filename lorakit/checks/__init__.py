"""Behavioural checks called by the notebooks' test cells. See each module's docstring."""
from ._probe import CheckFailure, other_inputs

__all__ = ["CheckFailure", "other_inputs"]
