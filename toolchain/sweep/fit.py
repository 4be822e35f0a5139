"""The scaling law L(N) = a * N^(-alpha) + c, fitted with scipy's curve_fit, with confidence intervals.

N is rescaled by its geometric mean before fitting (a * (N/N0)^(-alpha) + c), so the three parameters
are of similar size and the covariance curve_fit returns is well conditioned; ``a`` is reported back on
the original scale. The starting point comes from a grid over alpha with (a, c) solved by linear least
squares at each, so the fit does not depend on a lucky guess. Intervals are the usual Student-t ones from
the covariance (n - 3 degrees of freedom): with exactly three points there is no interval to give.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from toolchain.runtime.errors import ToolchainError

LEVEL = 0.95


@dataclass(frozen=True)
class PowerLaw:
    a: float
    alpha: float
    c: float
    r2: float
    n: int  # points fitted
    alpha_ci: tuple[float, float] | None  # LEVEL interval; None when n == 3 or the covariance is singular
    c_ci: tuple[float, float] | None
    level: float = LEVEL

    def predict(self, x) -> np.ndarray:
        return self.a * np.asarray(x, dtype=float) ** (-self.alpha) + self.c

    @property
    def alpha_pm(self) -> float | None:
        """Half the width of alpha's interval (alpha ± this)."""
        return None if self.alpha_ci is None else (self.alpha_ci[1] - self.alpha_ci[0]) / 2

    def to_dict(self) -> dict:
        return {**asdict(self), "alpha_pm": self.alpha_pm}

    def describe(self, x_name: str = "N") -> str:
        pm = f" ± {self.alpha_pm:.3f}" if self.alpha_pm is not None else " (no interval from 3 points)"
        return (f"L({x_name}) = {self.a:.3g}·{x_name}^(-{self.alpha:.3f}) + {self.c:.3f}; alpha = {self.alpha:.3f}{pm} "
                f"({self.level:.0%}), R² = {self.r2:.3f}, {self.n} points")


def _law(u: np.ndarray, a: float, alpha: float, c: float) -> np.ndarray:
    return a * u ** (-alpha) + c


def _start(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(a, alpha, c) with the least squared error over a grid of alpha, (a, c) linear at each; a > 0."""
    best = (math.inf, 1.0, 0.3, float(y.min()))
    for alpha in np.geomspace(0.01, 4.0, 200):
        design = np.stack([u ** (-alpha), np.ones_like(u)], axis=1)
        (a, c), *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(((design @ np.array([a, c]) - y) ** 2).sum())
        if a > 0 and sse < best[0]:
            best = (sse, float(a), float(alpha), float(c))
    return best[1:]


def fit_power_law(x: Sequence[float], y: Sequence[float], level: float = LEVEL) -> PowerLaw:
    """Fit y = a * x^(-alpha) + c; at least three points with distinct x > 0 and y that falls as x grows."""
    from scipy import stats
    from scipy.optimize import OptimizeWarning, curve_fit

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(set(x.tolist())) < 3 or (x <= 0).any() or not np.isfinite(y).all():
        raise ToolchainError(f"a power-law fit needs at least 3 distinct positive sizes with finite values, got "
                             f"{len(set(x.tolist()))} sizes; sweep more sizes.")
    x0 = float(np.exp(np.log(x).mean()))
    u = x / x0
    p0 = _start(u, y)
    try:
        with warnings.catch_warnings():  # three points leave no covariance: said by alpha_ci = None instead
            warnings.simplefilter("ignore", OptimizeWarning)
            params, cov = curve_fit(_law, u, y, p0=p0, maxfev=20000)
    except (RuntimeError, ValueError):  # no convergence: keep the grid's best, without an interval
        params, cov = np.array(p0), np.full((3, 3), np.inf)
    a, alpha, c = (float(p) for p in params)
    sse = float(((_law(u, a, alpha, c) - y) ** 2).sum())
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - sse / sst if sst > 0 else 0.0
    dof = len(x) - 3
    alpha_ci = c_ci = None
    spread = np.sqrt(np.diag(cov)) if np.isfinite(cov).all() else None
    if dof > 0 and spread is not None:
        t = float(stats.t.ppf(0.5 + level / 2, dof))
        alpha_ci = (alpha - t * spread[1], alpha + t * spread[1])
        c_ci = (c - t * spread[2], c + t * spread[2])
    return PowerLaw(a=a * x0 ** alpha, alpha=alpha, c=c, r2=r2, n=len(x), alpha_ci=alpha_ci, c_ci=c_ci, level=level)
