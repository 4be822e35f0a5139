"""The sweep's summary for people: one line per point, the fit, the fronts and the recommendation."""

from __future__ import annotations

from typing import Any

from toolchain.sweep.pareto import describe


def format_summary(summary: dict[str, Any]) -> str:
    short = summary["quality"]["short"]
    lines = [f"{summary['out']}: {len(summary['points'])} models of {summary['recipe']} "
             f"({summary['seconds']:.0f} s of building in all, {summary['run_seconds']:.0f} s this run)",
             f"{'point':<18}{'non-emb N':>11}{'tokens':>10}{'fp32 ' + short:>11}{'train s':>9}  variants (passed)"]
    for p in summary["points"]:
        fp32 = next((r for r in p["rows"] if r["variant"] == "fp32"), {})
        q = f"{fp32['quality']:.4f}" if fp32.get("quality") is not None else "-"
        passed = ", ".join(r["variant"] for r in p["rows"] if r["passed"])
        tokens = f"{p['tokens']:,}" if p["tokens"] else "recipe"
        lines.append(f"{p['name']:<18}{p['non_embedding']:>11,}{tokens:>10}{q:>11}{p['train_seconds']:>9.0f}  {passed}")
    for p in summary["points"]:
        for mode, why in p.get("quantize_errors", {}).items():
            lines.append(f"{p['name']}: {mode} failed ({why})")
    for fit in summary["fits_params"] + summary["fits_tokens"]:
        lines.append(fit.get("text") or fit["skipped"])
    by_key = {f"{r['point']}/{r['variant']}": r for r in summary["rows"]}
    for what, key in (("latency", "front_latency"), ("size", "front_size")):
        lines.append(f"front ({short} vs {what}): " + "; ".join(describe(by_key[k], short) for k in summary[key]))
    for unit, row in summary["picks"].items():
        if summary["budgets"][unit] is not None:
            best = describe(row, short) if row else "nothing fits"
            lines.append(f"pick for ≤ {summary['budgets'][unit]:g} {unit.replace('mb', 'MB')}: {best}")
    lines.append(summary["recommendation"])
    lines.append(f"chart: {summary['chart']}; latency: {summary['latency_unit']}")
    return "\n".join(lines)
