"""Checking what callers pass: plain Python values out, or an InputError that names the fix."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import InputError

MIN_SCALE = 1e-6  # smallest positive temperature / repetition penalty: below it the sampler's float64 logits overflow
MAX_PENALTY = 1e6


def _show(value: Any) -> str:
    """A short repr for error messages (a 100k-character prompt must not become a 100k-character error)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(name: str, value: Any, low: int, fix: str) -> int:
    """VALUE as a Python int >= LOW (numpy integers accepted; bools, floats and strings refused)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low:
        return int(value)
    raise InputError(f"{name} must be an int >= {low}: {fix}, got {_show(value)}.")


def _finite(value: Any) -> float | None:
    """VALUE as a finite Python float, or None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value):
        return float(value)
    return None
