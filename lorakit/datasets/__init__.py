"""Small offline data sets, generated from a seed or read from the shipped corpus:

    plant.py       a simulated plant with operating conditions (notebooks 03, 04)
    code_depth.py  AST depth of Python source, one structure prior per byte token (notebook 07)
    periodic.py    periodic time series with a seasonal adaptation strength (notebook 07)
"""
from .code_depth import ast_depths, depth_types, get_batch_with_depths, line_starts, load_tokens_with_depths
from .periodic import PeriodicRegression, SeasonalComponent, periodic_series, seasonal
from .plant import OperatingSystem, condition_splits

__all__ = ["OperatingSystem", "PeriodicRegression", "SeasonalComponent", "ast_depths", "condition_splits",
           "depth_types", "get_batch_with_depths", "line_starts", "load_tokens_with_depths",
           "periodic_series", "seasonal"]
