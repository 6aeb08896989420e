"""Argument checks, one per kind of argument, for every public lorakit function and layer.

A wrong type raises TypeError, a value out of range ValueError; both name the argument, what
was expected and what came. ``bool`` is never accepted as a number (``True`` is an int in
Python, and ``rank=True`` is always a mistake). A leaf module: it imports nothing.
"""
from __future__ import annotations

import math

__all__ = ["check_int", "check_real"]


def check_int(name: str, value, minimum: int | None = 1, what: str = "") -> int:
    """``value`` as an int >= ``minimum`` (None: any int); ``what`` explains the argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int{what}, got {type(value).__name__} ({value!r})")
    if minimum is not None and value < minimum:
        expected = "a positive int" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {expected}{what}, got {value}")
    return value


def check_real(name: str, value, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, what: str = "") -> float:
    """``value`` as a finite float within [low, high] (an open end with ``low_open`` /
    ``high_open``; None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number{what}, got {type(value).__name__} ({value!r})")
    value = float(value)
    inside = math.isfinite(value) and (low is None or (value > low if low_open else value >= low)) \
        and (high is None or (value < high if high_open else value <= high))
    if not inside:
        if low is not None and high is not None:
            expected = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            expected = f"a finite number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            expected = f"a finite number {'<' if high_open else '<='} {high:g}"
        else:
            expected = "finite"
        raise ValueError(f"{name} must be {expected}{what}, got {value!r}")
    return value
