"""Behavioural checks called by the notebooks' test cells. See each module's docstring.

Public here: what the notebooks and lorakit's explorers use; everything with a leading
underscore is the checks' own business.
"""
from ._conditioned import BILINEAR, RSS, find_cond_factors
from ._probe import BigIntermediates, CheckFailure, other_inputs

__all__ = ["BILINEAR", "RSS", "BigIntermediates", "CheckFailure", "find_cond_factors", "other_inputs"]
