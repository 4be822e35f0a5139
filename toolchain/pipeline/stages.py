"""Build: a recipe through every stage — train, export, quantize, validate, bench — with one summary.

Each stage is the module that does it; this one only sequences them, reuses a trained model that is
already there (unless told to retrain), and reports accuracy, size and latency per variant.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from toolchain.bench import bench
from toolchain.data.metrics import exact_match
from toolchain.data.texts import TextSet, read_split, read_texts
from toolchain.export.core import export
from toolchain.runtime import ToolchainError, load, read_manifest
from toolchain.runtime.manifest import REFERENCE_VARIANT
from toolchain.train.recipe import Recipe, load_recipe
from toolchain.train.seq2seq_stage import EVAL_PAIRS
from toolchain.train.stages import HELD_OUT
from toolchain.train.trainer import default_out, train
from toolchain.variants.optimize import optimize
from toolchain.variants.quantize import quantize
from toolchain.variants.validate import validate

SMOKE_BENCH = {"batches": (1,), "seqs": (16,), "runs": 3, "real": False}
FULL_BENCH = {"batches": (1, 32), "seqs": (128,), "runs": 20, "real": True}


def bench_settings(smoke: bool, max_length: int) -> dict[str, Any]:
    """The build's bench settings, its sequence lengths cut to what the model takes (gpt2-sst2: 64 tokens)."""
    settings = SMOKE_BENCH if smoke else FULL_BENCH
    return {**settings, "seqs": tuple(sorted({min(s, max_length) for s in settings["seqs"]}))}


def build(recipe: str | Path | Recipe, out: str | Path | None = None, smoke: bool = False, retrain: bool = False,
          progress: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Run RECIPE end to end into the artifact OUT (default dist/NAME); return the summary."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out) if out else Path("dist") / recipe.name
    started = time.perf_counter()
    steps: dict[str, Any] = {}

    model, steps["train"] = train_stage(recipe, out, smoke, retrain, progress)
    progress(f"[export] {model} -> {out}")
    trust = recipe.source.trust_remote_code or recipe.model is not None  # a [model] recipe names its own code
    manifest = export(model, out, task=recipe.task, opset=recipe.export.opset, progress=progress,
                      trust_remote_code=trust)
    eval_data = _eval_data(recipe, smoke, Path(model))
    calib = str(eval_data.path) if eval_data is not None else None
    _variant_steps(recipe, out, calib, smoke, steps, progress, trust)
    progress("[bench]")
    report = bench(out, vs_pytorch=True, progress=progress, trust_remote_code=trust,
                   **bench_settings(smoke, manifest["max_length"]))
    rows = _rows(out, eval_data, report)
    fine = steps["train"].get("finetune", {}) if isinstance(steps["train"], dict) else {}
    ok = fine.get("reached_min_accuracy", True) is not False
    return {"recipe": str(recipe.path), "artifact": str(out), "model": str(model), "rows": rows, "steps": steps,
            "auto": load(out).info()["variant"], "ok": ok, "seconds": round(time.perf_counter() - started, 1),
            "export_seconds": manifest.get("export_seconds"), "bench_threads": report["threads"],
            "bench_shape": report["reference_shape"],
            "min_accuracy": fine.get("min_accuracy")}


def _variant_steps(recipe: Recipe, out: Path, calib: str | None, smoke: bool, steps: dict[str, Any], progress,
                   trust: bool) -> None:
    """Quantize, optimize and validate OUT as the recipe asks, each step's summary into STEPS."""
    limit = 64 if smoke else 512
    for mode in recipe.export.quantize:
        progress(f"[quantize] {mode}")
        report = quantize(out, mode, calib=calib, max_drop=recipe.gate.max_drop, limit=limit, progress=progress)
        steps.setdefault("quantize", {})[mode] = {"variant": report.variant, "passed": report.passed,
                                                 "summary": report.gate.summary}
    if recipe.export.optimize:
        progress("[optimize]")
        steps["optimize"] = optimize(out, calib=calib, max_drop=recipe.gate.max_drop, progress=progress)
    progress("[validate] parity against PyTorch for exact variants, the gate for quantized ones")
    checks = validate(out, variants=[n for n, v in read_manifest(out).variants.items() if v.passed],
                      trust_remote_code=trust)
    steps["validate"] = [c.__dict__ for c in checks]


def train_stage(recipe: Recipe, out: Path, smoke: bool, retrain: bool, progress) -> tuple[str, dict[str, Any]]:
    """The model to export and the train step's summary: the pretrained source when the recipe trains nothing,
    a trained model already beside OUT (unless RETRAIN or SMOKE), else a fresh training run."""
    if recipe.train is None and recipe.pretrain is None:
        return recipe.source.pretrained, {"skipped": "no [train] section: the pretrained model is exported as is"}
    model_dir = out.with_name(out.name + ".model") if out.name else default_out(recipe)
    trained = model_dir / "training.json"
    if trained.is_file() and not retrain and not smoke:
        import json

        progress(f"[train] using the trained model in {model_dir} (pass --retrain to train again)")
        return str(model_dir), {"finetune": json.loads(trained.read_text()), "reused": True}
    progress(f"[train] {recipe.path.name} -> {model_dir}")
    result = train(recipe, out=model_dir, smoke=smoke, progress=progress)
    return str(result.model_dir), result.metrics


def _eval_data(recipe: Recipe, smoke: bool, model_dir: Path) -> TextSet | None:
    """The labelled dev split of the recipe (gate and accuracy), a language model's held-out text,
    else the bundled default set."""
    for name in (HELD_OUT, EVAL_PAIRS):  # a language model's held-out text; a translator's dev pairs
        if (model_dir / name).is_file():
            return read_texts(model_dir / name)
    if recipe.data is not None and recipe.data.dev is not None:
        dev = recipe.data.dev
        return read_split(recipe.resolve(dev.path), dev, recipe.labels)
    try:
        return read_texts(limit=64 if smoke else None)
    except ToolchainError:
        return None


def _rows(out: Path, data: TextSet | None, report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant: the task metric on the eval data, size, p50 at the reference shape, ratio to fp32/PyTorch."""
    manifest = read_manifest(out)
    ref = report["reference_shape"]
    torch_row = report["rows"].get("pytorch")

    def p50(row):
        hit = [s for s in row["shapes"] if (s["batch"], s["seq"]) == (ref["batch"], ref["seq"])]
        return hit[0]["p50_ms"] if hit else None

    rows = []
    fp32_p50 = p50(report["rows"][REFERENCE_VARIANT]) if REFERENCE_VARIANT in report["rows"] else None
    for name, v in manifest.variants.items():
        bench_row = report["rows"].get(name)
        ms = p50(bench_row) if bench_row else None
        rows.append({"variant": name, "precision": v.precision, "passed": v.passed, "mb": v.bytes / 1e6,
                     "metric": _metric(out, name, manifest.task, data, v), "p50_ms": ms,
                     "vs_fp32": ms / fp32_p50 if ms and fp32_p50 else None,
                     "vs_pytorch": ms / p50(torch_row) if ms and torch_row else None,
                     "real_speedup": (bench_row or {}).get("real", {}) and bench_row["real"].get("speedup_vs_pytorch")})
    return rows


def _metric(out: Path, name: str, task: str, data: TextSet | None, variant) -> str:
    """Dev accuracy for classifiers (texts or images), exact match for translators, the gate's cosine for embeddings."""
    if data is not None and data.labels is not None and task in ("text-classification", "image-classification"):
        preds = load(out, variant=name).scores(data.texts).argmax(axis=1)  # an image set's texts are its image paths
        correct = sum(int(p == y) for p, y in zip(preds, data.labels))
        return f"acc {correct / len(data.labels):.4f}"
    if data is not None and data.targets is not None and task == "text2text-generation":
        return f"EM {exact_match(load(out, variant=name).translate(data.texts), data.targets):.4f}"
    gate = variant.metrics.get("gate", {})
    if "mean_cosine" in gate:
        return f"cos {gate['mean_cosine']:.4f}/{gate['min_cosine']:.3f}"
    if "bleu4" in gate:  # captioners: the gate's exact match and BLEU-4 against the table's captions
        return f"EM {gate['exact_match']:.3f} BLEU {gate['bleu4']:.3f}"
    if "token_agreement" in gate:
        return f"agree {gate['token_agreement']:.3f} ppl x{gate['perplexity_ratio']:.3f}"
    return "exact" if "parity" in variant.metrics else "-"


def format_summary(summary: dict[str, Any]) -> str:
    shape = summary["bench_shape"]
    lines = [f"{summary['artifact']} from {summary['model']} ({summary['seconds']:.0f} s; bench at batch {shape['batch']} x "
             f"{shape['seq']} tokens, "
             f"{summary['bench_threads']} threads)",
             f"{'variant':<12}{'precision':<10}{'gate':<8}{'metric':<20}{'MB':>8}{'p50 ms':>9}{'vs fp32':>9}{'vs torch':>10}"]
    fmt = lambda x, spec: format(x, spec) if isinstance(x, (int, float)) else "-"  # noqa: E731
    for r in summary["rows"]:
        lines.append(f"{r['variant']:<12}{r['precision']:<10}{'passed' if r['passed'] else 'FAILED':<8}{r['metric']:<20}"
                     f"{r['mb']:>8.1f}{fmt(r['p50_ms'], '9.2f')}{fmt(r['vs_fp32'], '8.2f')}x{fmt(r['vs_pytorch'], '9.2f')}x")
    lines.append(f"variant='auto' picks: {summary['auto']}")
    if summary.get("min_accuracy") is not None:
        lines.append(f"recipe's min_accuracy {summary['min_accuracy']}: {'reached' if summary['ok'] else 'NOT reached'}")
    return "\n".join(lines)
