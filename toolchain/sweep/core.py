"""sweep(): train a family of sizes from one recipe, fit the scaling law, and find what to ship for a budget.

Resumable by construction: each finished point writes OUT/sizes/NAME/result.json atomically, last; a
rerun reuses every point whose result is there and was made with the same derived recipe (point.json
holds its digest), and starts the first unfinished one, whose trained model is reused if it was saved.
A point whose settings changed is rebuilt from nothing rather than mixed with stale files.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from toolchain.artifact.atomic import write_json
from toolchain.runtime.errors import ToolchainError
from toolchain.sweep.fit import fit_power_law
from toolchain.sweep.pareto import front, pick, recommend
from toolchain.sweep.quality import Quality, quality_for
from toolchain.sweep.spec import Point, parse_sizes, parse_tokens, plan, with_schedule
from toolchain.train.recipe import Recipe, load_recipe

RESULT, POINT = "result.json", "point.json"
Measure = Callable[[Point, Path, Quality, bool, Callable[[str], None]], dict[str, Any]]


def _measure(point: Point, folder: Path, quality: Quality, smoke: bool, progress) -> dict[str, Any]:
    from toolchain.sweep.measure import measure  # torch, onnx and friends only when a point is really built

    return measure(point, folder, quality, smoke, progress)


def sweep(recipe: str | Path | Recipe, sizes: str, tokens: str | None = None, out: str | Path | None = None,
          smoke: bool = False, budget_ms: float | None = None, budget_mb: float | None = None,
          progress: Callable[[str], None] = lambda msg: None, measure: Measure | None = None,
          schedule: list[str] | None = None) -> dict[str, Any]:
    """Train, build and bench every size of RECIPE (at every --tokens budget) into OUT; write sweep.json and
    sweep.png there and return the summary. MEASURE builds one point (default: measure.measure, every stage)."""
    measure = measure or _measure
    for flag, value in (("--budget-ms", budget_ms), ("--budget-mb", budget_mb)):
        if value is not None and not value > 0:
            raise ToolchainError(f"{flag} must be a positive number, got {value}; give e.g. {flag} 2.")
    recipe = with_schedule(recipe if isinstance(recipe, Recipe) else load_recipe(recipe), schedule)
    quality = quality_for(recipe.task)
    points = plan(recipe, parse_sizes(sizes), parse_tokens(tokens))
    out = Path(out) if out else Path("dist") / f"sweep-{recipe.name}"
    started = time.perf_counter()
    results = []
    for i, point in enumerate(points, 1):
        progress(f"[{i}/{len(points)}] {point.name}")
        results.append(run_point(point, out / "sizes" / point.name, quality, smoke, progress, measure))
    summary = summarise(recipe, results, quality, budget_ms, budget_mb)
    summary.update({"out": str(out), "smoke": smoke, "schedule": schedule or [], "sizes_spec": sizes,
                    "run_seconds": round(time.perf_counter() - started, 1)})
    from toolchain.sweep.charts import draw  # matplotlib only once there is something to draw

    draw(summary, out / "sweep.png")
    summary["chart"] = str(out / "sweep.png")
    write_json(out / "sweep.json", summary)
    return summary


def run_point(point: Point, folder: Path, quality: Quality, smoke: bool, progress, measure: Measure) -> dict[str, Any]:
    """POINT's result: the saved one when it was made with the same settings, else a fresh measurement."""
    stamp = {"name": point.name, "key": point.key, "smoke": smoke}
    done = folder / RESULT
    if done.is_file() and _read(folder / POINT) == stamp:
        progress(f"{point.name}: done in an earlier run, reusing {done}")
        return _read(done)
    if folder.exists() and _read(folder / POINT) != stamp:
        progress(f"{point.name}: {folder} was made with other settings; starting it again")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / POINT, stamp)
    result = {**measure(point, folder, quality, smoke, progress), "name": point.name, "size_name": point.size.name,
              "tokens": point.tokens}
    write_json(done, result)
    return result


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def variant_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every variant of every point as one flat row, with its point's size and budget."""
    return [{"point": r["name"], "size": r["size_name"], "non_embedding": r["non_embedding"], "tokens": r["tokens"], **row}
            for r in results for row in r["rows"]]


def summarise(recipe: Recipe, results: list[dict[str, Any]], quality: Quality, budget_ms: float | None,
              budget_mb: float | None) -> dict[str, Any]:
    """Fits along N (per budget) and along tokens (per size), the fronts over passed variants, the picks."""
    rows = variant_rows(results)
    fp32 = [r for r in rows if r["variant"] == "fp32" and r["quality"] is not None]
    fits_n = [_fit(f"tokens={t}", [(r["non_embedding"], r["quality"]) for r in fp32 if r["tokens"] == t], t)
              for t in sorted({r["tokens"] for r in fp32}, key=lambda t: t or 0)]
    fits_d = [_fit(f"size={s}", [(r["tokens"], r["quality"]) for r in fp32 if r["size"] == s], s)
              for s in dict.fromkeys(r["size"] for r in fp32 if r["tokens"] is not None)]
    fitted = [f for f in fits_n if "alpha" in f]
    shipped = [r for r in rows if r["passed"]]
    picks = {"ms": pick(shipped, budget_ms=budget_ms) if budget_ms else None,
             "mb": pick(shipped, budget_mb=budget_mb) if budget_mb else None}
    return {"recipe": str(recipe.path), "task": recipe.task, "quality": {"label": quality.label, "short": quality.short},
            "latency_unit": results[0]["latency_unit"] if results else None,
            "points": results, "rows": rows, "fit": fitted[-1] if fitted else None,
            "fits_params": fits_n, "fits_tokens": [f for f in fits_d if len(f["points"]) > 1],
            "front_latency": [_key(r) for r in front(shipped, "p50_ms")],
            "front_size": [_key(r) for r in front(shipped, "mb")],
            "budgets": {"ms": budget_ms, "mb": budget_mb}, "picks": picks,
            "recommendation": recommend(shipped, budget_ms, budget_mb, quality.short),
            "seconds": round(sum(r["seconds"] for r in results), 1)}


def _fit(what: str, xy: list[tuple[float, float]], group: Any) -> dict[str, Any]:
    """A fit over XY as a JSON-ready dict, or why there is none (too few points)."""
    xy = sorted(xy)
    base = {"group": group, "points": [list(p) for p in xy]}
    try:
        law = fit_power_law([x for x, _ in xy], [y for _, y in xy])
    except ToolchainError as exc:
        return {**base, "skipped": f"{what}: {exc}"}
    return {**base, **law.to_dict(), "text": law.describe("N" if what.startswith("tokens") else "D")}


def _key(row: dict[str, Any]) -> str:
    return f"{row['point']}/{row['variant']}"
