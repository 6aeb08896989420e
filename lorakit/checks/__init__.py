"""Behavioural checks called by the notebooks' test cells. See each module's docstring."""
from ._probe import CheckFailure

__all__ = ["CheckFailure"]
