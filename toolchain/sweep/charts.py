"""The sweep's chart, one PNG of three panels: what the scaling law says, and what to ship.

1. fp32 quality against non-embedding parameters on log-log axes, one colour per token budget, with the
   fitted curve and its alpha ± interval in the legend;
2. quality against batch-1 latency, and 3. against artifact size, for every variant that passed its
   gate, the Pareto front drawn as a step line and its points ringed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

MARKERS = {"fp32": "o", "fp16": "D", "int8": "s", "int4": "^"}


def draw(summary: dict[str, Any], path: str | Path) -> None:
    """Write the three panels to PATH atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    _scaling(axes[0], summary)
    unit = "ms per token" if (summary.get("latency_unit") or "").startswith("ms per decode") else "ms"
    _tradeoff(axes[1], summary, "p50_ms", f"p50 latency at batch 1 ({unit}, log)", "front_latency")
    _tradeoff(axes[2], summary, "mb", "artifact size (MB, log)", "front_size")
    fig.suptitle(f"{Path(summary['recipe']).stem}: {len(summary['points'])} models", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png", dpi=80)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def _scaling(ax, summary: dict[str, Any]) -> None:
    label = summary["quality"]["label"]
    for i, fit in enumerate(summary["fits_params"]):
        colour = f"C{i}"
        xs, ys = np.array([p[0] for p in fit["points"]]), np.array([p[1] for p in fit["points"]])
        budget = f"{fit['group']:,} tokens" if fit["group"] else "recipe schedule"
        ax.scatter(xs, ys, color=colour, zorder=3, label=budget)
        if "alpha" in fit:
            grid = np.geomspace(xs.min() / 1.3, xs.max() * 1.3, 100)
            pm = f" ± {fit['alpha_pm']:.2f}" if fit.get("alpha_pm") is not None else ""
            ax.plot(grid, fit["a"] * grid ** (-fit["alpha"]) + fit["c"], color=colour, lw=1.2,
                    label=f"fit: α = {fit['alpha']:.2f}{pm}, c = {fit['c']:.2f}, R² = {fit['r2']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain(ax.yaxis, subs=tuple(range(1, 10)))
    ax.set_xlabel("non-embedding parameters N (log)")
    ax.set_ylabel(f"fp32 {label} (log)")
    ax.set_title("L(N) = a·N^(-α) + c")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _tradeoff(ax, summary: dict[str, Any], cost: str, xlabel: str, front_key: str) -> None:
    rows = [r for r in summary["rows"] if r["passed"] and r.get(cost) is not None and r["quality"] is not None]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    for r in rows:
        ax.scatter(r[cost], r["quality"], marker=MARKERS.get(r["precision"], "x"), s=28, zorder=3,
                   color=f"C{sizes.index(r['size']) % 10}")
    on_front = [r for r in rows if f"{r['point']}/{r['variant']}" in summary[front_key]]
    on_front.sort(key=lambda r: r[cost])
    if on_front:
        ax.step([r[cost] for r in on_front], [r["quality"] for r in on_front], where="post", color="black", lw=1,
                label="Pareto front")
        ax.scatter([r[cost] for r in on_front], [r["quality"] for r in on_front], s=110, facecolors="none",
                   edgecolors="black", zorder=4)
    for s in sizes:
        ax.scatter([], [], color=f"C{sizes.index(s) % 10}", label=s)
    for precision, marker in MARKERS.items():
        if any(r["precision"] == precision for r in rows):
            ax.scatter([], [], marker=marker, color="grey", label=precision)
    ax.set_xscale("log")
    _plain(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(summary["quality"]["label"])
    ax.set_title(f"passed variants vs {'latency' if cost == 'p50_ms' else 'size'}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)


def _plain(axis, subs=(1.0, 2.0, 5.0)) -> None:
    """Log-axis ticks as plain numbers (2.5, not 2.5×10⁰) at 1-2-5 steps (every integer step on a loss axis,
    which spans less than a decade), other minor ticks unlabelled so labels never overlap."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())
