"""The Pareto front of quality against a cost (latency, size) and the pick for a budget.

Lower is better on both axes. A point is on the front when no other point is at least as cheap and
strictly better; among equally cheap points only the best counts. Only variants that passed their gate
are candidates: a variant the toolchain would not ship is no answer to "what should I ship".
"""

from __future__ import annotations

import math
from typing import Any

Row = dict[str, Any]
TIE = 1e-3  # quality within 0.1% of the best: closer than a gate or a second training seed can tell apart


def front(rows: list[Row], cost: str, quality: str = "quality") -> list[Row]:
    """The rows no other row beats on COST and QUALITY together, cheapest first."""
    usable = [r for r in rows if r.get(cost) is not None and r.get(quality) is not None]
    best, out = math.inf, []
    for row in sorted(usable, key=lambda r: (r[cost], r[quality])):
        if row[quality] < best:
            out.append(row)
            best = row[quality]
    return out


def pick(rows: list[Row], budget_ms: float | None = None, budget_mb: float | None = None,
         quality: str = "quality") -> Row | None:
    """The best row within both budgets (a budget left None does not bind), or None when nothing fits.

    Rows within TIE of the best count as equally good, and the cheapest of them wins (smallest under a size
    budget alone, else fastest): an int8 variant 0.01% worse than fp32 at a quarter of the size is the buy."""
    fits = [r for r in rows if r.get(quality) is not None
            and (budget_ms is None or (r.get("p50_ms") is not None and r["p50_ms"] <= budget_ms))
            and (budget_mb is None or r["mb"] <= budget_mb)]
    if not fits:
        return None
    best = min(r[quality] for r in fits)
    good = [r for r in fits if r[quality] <= best + TIE * abs(best)]
    if budget_ms is None and budget_mb is not None:
        return min(good, key=lambda r: (r["mb"], r.get("p50_ms") or math.inf))
    return min(good, key=lambda r: (r.get("p50_ms") or math.inf, r["mb"]))


def recommend(rows: list[Row], budget_ms: float | None, budget_mb: float | None, short: str = "quality",
              quality: str = "quality") -> str:
    """One line: what to ship for the budgets, or what comes closest when nothing fits."""
    asked = " and ".join(s for s in (f"≤ {budget_ms:g} ms" if budget_ms is not None else "",
                                     f"≤ {budget_mb:g} MB" if budget_mb is not None else "") if s)
    if not asked:
        return "no budget given: pass --budget-ms and/or --budget-mb for a recommendation."
    best = pick(rows, budget_ms, budget_mb, quality)
    if best is not None:
        return f"for {asked}: ship {describe(best, short, quality)}."
    cost = "p50_ms" if budget_ms is not None else "mb"
    cheapest = min((r for r in rows if r.get(cost) is not None), key=lambda r: r[cost], default=None)
    closest = f"; the cheapest passed variant is {describe(cheapest, short, quality)}" if cheapest else ""
    return f"nothing fits {asked}{closest}."


def describe(row: Row, short: str = "quality", quality: str = "quality") -> str:
    ms = f"{row['p50_ms']:.2f} ms" if row.get("p50_ms") is not None else "no latency"
    return f"{row['point']} {row['variant']} ({short} {row[quality]:.3f}, {ms}, {row['mb']:.1f} MB)"
