"""The power-law fit recovers a known exponent, and its interval means what it says."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.runtime.errors import ToolchainError
from toolchain.sweep.fit import fit_power_law

N = np.geomspace(5e4, 5e6, 8)
A, ALPHA, C = 400.0, 0.35, 1.2  # a*(N/N0)^-alpha is about 4 at the middle size


def law(n):
    return A * n ** (-ALPHA) + C


def test_recovers_a_known_law_exactly():
    fit = fit_power_law(N, law(N))
    assert fit.alpha == pytest.approx(ALPHA, rel=1e-4) and fit.c == pytest.approx(C, rel=1e-4)
    assert fit.a == pytest.approx(A, rel=1e-3) and fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.predict([1e5])[0] == pytest.approx(law(1e5), rel=1e-6)


def test_interval_covers_the_truth_at_its_level():
    """Over many noisy draws the 95% interval covers the true alpha about 95% of the time, and its width
    matches the spread of the estimates: a wrong standard error or quantile fails one of the two."""
    rng = np.random.default_rng(0)
    fits = [fit_power_law(N, law(N) + rng.normal(0, 0.02, len(N))) for _ in range(60)]
    covered = np.mean([f.alpha_ci[0] <= ALPHA <= f.alpha_ci[1] for f in fits])
    spread = np.std([f.alpha for f in fits])
    t_half = np.median([f.alpha_pm for f in fits]) / 2.571  # t(0.975, 5 dof): back to one standard error
    assert covered >= 0.85, covered
    assert 0.5 < t_half / spread < 2.0, (t_half, spread)
    assert all(f.r2 > 0.9 for f in fits)


def test_r2_is_the_share_of_variance_explained():
    y = law(N) + np.array([0.05, -0.05] * 4)
    fit = fit_power_law(N, y)
    residual = ((fit.predict(N) - y) ** 2).sum()
    assert fit.r2 == pytest.approx(1 - residual / ((y - y.mean()) ** 2).sum())
    assert 0 < fit.r2 < 1


def test_three_points_fit_without_an_interval_and_fewer_are_refused():
    fit = fit_power_law(N[:3], law(N[:3]))
    assert fit.alpha_ci is None and fit.alpha_pm is None and "no interval" in fit.describe()
    with pytest.raises(ToolchainError, match="at least 3 distinct positive sizes"):
        fit_power_law(N[:2], law(N[:2]))
    with pytest.raises(ToolchainError, match="at least 3"):
        fit_power_law([1e5, 1e5, 1e5], [2.0, 2.1, 2.2])
