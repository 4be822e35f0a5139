"""The decoder quantization gate on synthetic teacher-forced rows with known agreement and perplexity.

Rows are (argmax next token, log-probability of the true next token), as gate._lm_positions returns
them. The thresholds are stated here, independently of what the gate writes into its metrics: with a
budget of max_drop, next-token agreement must be >= 1 - 4 * max_drop and the perplexity ratio
(variant / fp32) <= 1 + max_drop (DESIGN.md; issue 13).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolchain.data.texts import TextSet
from toolchain.variants.gate import GATES, gate_for

N = 1000
BUDGET = 0.02  # the generate gate's default budget
NEED_AGREEMENT = 1 - 4 * BUDGET  # 0.92
MAX_RATIO = 1 + BUDGET  # 1.02
DATA = TextSet(Path("heldout.txt"), ["x"])


def rows(agreement: float, ppl_ratio: float, base_logp: float = -2.0) -> tuple[np.ndarray, np.ndarray]:
    """(fp32 rows, variant rows): the variant agrees on the first ``agreement`` share of positions and
    its perplexity is exactly ``ppl_ratio`` times fp32's (log-probs shifted by -log(ratio))."""
    ref_tokens = np.arange(N) % 50
    got_tokens = ref_tokens.copy()
    k = int(round(N * (1 - agreement)))
    got_tokens[:k] += 1  # disagree at k positions
    ref = np.stack([ref_tokens, np.full(N, base_logp)], axis=1).astype(np.float64)
    got = np.stack([got_tokens, np.full(N, base_logp - np.log(ppl_ratio))], axis=1).astype(np.float64)
    return ref, got


def verdict(agreement: float, ppl_ratio: float, budget: float = BUDGET) -> bool:
    ref, got = rows(agreement, ppl_ratio)
    return gate_for("text-generation").judge(ref, got, DATA, budget).passed


def test_default_budget_is_the_documented_one():
    assert GATES["text-generation"].default_max_drop == BUDGET


@pytest.mark.parametrize("agreement, ratio, passed", [
    (1.0, 1.0, True),            # identical
    (0.95, 1.01, True),          # well within both
    (NEED_AGREEMENT, 1.0, True),  # agreement exactly at the bound
    (1.0, 1.019, True),           # ratio just under the bound
    (0.90, 1.0, False),          # agreement 0.90 < 0.92
    (0.50, 1.0, False),
    (0.0, 1.0, False),           # never agrees
    (1.0, 1.03, False),          # perplexity 3% worse > 2%
    (1.0, 10.0, False),
    (1.0, 1e6, False),           # perplexity blown up
    (0.5, 5.0, False),           # both bad
])
def test_generate_gate_rule(agreement, ratio, passed):
    assert verdict(agreement, ratio) is passed
    # the rule itself, stated here: the verdict must agree with it
    assert passed == (agreement >= NEED_AGREEMENT and ratio <= MAX_RATIO)


def test_generate_gate_metrics_are_the_measured_numbers():
    ref, got = rows(0.9, 1.5)
    result = gate_for("text-generation").judge(ref, got, DATA, BUDGET)
    m = result.metrics
    assert m["token_agreement"] == pytest.approx(0.9)
    assert m["fp32_perplexity"] == pytest.approx(np.exp(2.0))
    assert m["perplexity"] == pytest.approx(1.5 * np.exp(2.0))
    assert m["perplexity_ratio"] == pytest.approx(1.5)
    assert m["positions"] == N
    assert result.passed is False


@pytest.mark.parametrize("budget, agreement, ratio, passed", [
    (0.0, 1.0, 1.0, True),       # a zero budget passes only identical rows
    (0.0, 0.999, 1.0, False),
    (0.0, 1.0, 1.0001, False),
    (0.1, 0.61, 1.09, True),     # 0.61 >= 0.6, 1.09 <= 1.1
    (0.1, 0.59, 1.0, False),
    (0.1, 1.0, 1.11, False),
])
def test_generate_gate_scales_with_budget(budget, agreement, ratio, passed):
    assert verdict(agreement, ratio, budget) is passed


def test_improvement_is_not_a_miss():
    """A variant with lower perplexity than fp32 (ratio < 1) passes on that count."""
    assert verdict(1.0, 0.5) is True
