"""Small helpers used across the package, kept in one place: checking what callers pass (plain Python
values out, or an InputError that names the fix), the first line of an exception, and warn-once logging.

Torch-free and dependency-light: every stage may import it.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np

from .errors import InputError

MIN_SCALE = 1e-6  # smallest positive temperature / repetition penalty: below it the sampler's float64 logits overflow
MAX_PENALTY = 1e6

WARNED: set[str] = set()  # messages warn_once has already logged in this process


def show(value: Any) -> str:
    """A short repr for error messages (a 100k-character prompt must not become a 100k-character error)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    """Whether VALUE is an integer (Python or numpy), bools excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, low: int, fix: str) -> int:
    """VALUE as a Python int >= LOW (numpy integers accepted; bools, floats and strings refused)."""
    if is_int(value) and value >= low:
        return int(value)
    raise InputError(f"{name} must be an int >= {low}: {fix}, got {show(value)}.")


def finite(value: Any) -> float | None:
    """VALUE as a finite Python float, or None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value):
        return float(value)
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (without C++ stacks and notes), or its type name when empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def warn_once(log: logging.Logger, message: str, seen: set[str] | None = None) -> None:
    """Log MESSAGE as a warning on LOG the first time it is seen (in SEEN, default the process-wide WARNED);
    later repeats are dropped."""
    seen = WARNED if seen is None else seen
    if message not in seen:
        seen.add(message)
        log.warning(message)
