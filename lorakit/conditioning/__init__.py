"""Conditioning: how a model hands a condition p or a structure prior to its adapter layers
(``context.py``), and the encoders that make structure priors (``encoders.py``)."""
from .context import condition, current_condition, current_structure_prior, structure_prior
from .encoders import StructureEncoder, TemporalStructureEncoder, relative_position_bucket

__all__ = ["StructureEncoder", "TemporalStructureEncoder", "condition", "current_condition",
           "current_structure_prior", "relative_position_bucket", "structure_prior"]
