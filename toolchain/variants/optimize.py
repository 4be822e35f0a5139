"""Optimize: graph rewrites kept as a variant only where they pass the gate AND are measurably faster here.

Candidates (a registry): ONNX Runtime's offline-optimized graph, and onnxruntime.transformers' fused
graph. Each is timed against its base in the same run, interleaved; a rewrite that is slower, or
faster by less than the noise margin, is reported and dropped, never assumed to help.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toolchain.artifact.manifest_writes import add_variant, update_manifest
from toolchain.bench.core import measure_variants, record_latency
from toolchain.data.texts import read_texts
from toolchain.variants.gate import judge
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.manifest import MODEL, REFERENCE_VARIANT, Component, Manifest, Variant, read_manifest

MIN_SPEEDUP = 1.05  # faster by at least 5% at batch 1 x 128 tokens, or it is not kept

# transformer-optimizer model types per Hugging Face model_type (its fusions are written per family).
FUSION_FAMILIES = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "xlm-roberta": "bert",
                   "electra": "bert", "mpnet": "bert", "gpt2": "gpt2", "bart": "bart", "t5": "t5"}


def _ort_offline(src: Path, dst: Path, manifest: Manifest) -> None:
    """ONNX Runtime's own graph optimizations (extended level: portable across CPUs), saved to disk."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), sess_options=options, providers=["CPUExecutionProvider"])


def _fused(src: Path, dst: Path, manifest: Manifest) -> None:
    """onnxruntime.transformers' attention / layer-norm / GELU fusions for the model's family."""
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = manifest.source.model_type
    family = FUSION_FAMILIES.get(model_type or "")
    if family is None:
        raise ToolchainError(f"no transformer fusions for model type {model_type!r}; known: {', '.join(FUSION_FAMILIES)}.")
    optimize_model(str(src), model_type=family, num_heads=0, hidden_size=0, use_gpu=False).save_model_to_file(str(dst))


@dataclass(frozen=True)
class Rewrite:
    name: str
    suffix: str  # variant name = base + "-" + suffix
    build: Callable[[Path, Path, Manifest], None]


REWRITES: dict[str, Rewrite] = {}


def register(rewrite: Rewrite) -> Rewrite:
    REWRITES[rewrite.name] = rewrite
    return rewrite


register(Rewrite("ort-offline", "ortopt", _ort_offline))
register(Rewrite("transformer-fusion", "fused", _fused))


def optimize(
    artifact: str | Path,
    base: str = REFERENCE_VARIANT,
    rewrites: list[str] | None = None,
    calib: str | Path | None = None,
    max_drop: float | None = None,
    runs: int = 40,
    progress: Callable[[str], None] = lambda msg: None,
) -> list[dict[str, Any]]:
    """Try each rewrite on variant BASE; keep the ones that pass the gate and are faster. Returns one row per try."""
    root = Path(artifact)
    manifest = read_manifest(root)
    src = manifest.verify(base)
    names = rewrites or list(REWRITES)
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise ToolchainError(f"rewrite {unknown[0]!r} is not known; use one of {', '.join(REWRITES)}.")
    data = read_texts(calib, limit=256)
    rows, reference = [], None
    work = Path(tempfile.mkdtemp(prefix=f".optimize.tmp-{os.getpid()}-", dir=root))
    try:
        for name in names:
            rewrite = REWRITES[name]
            variant = f"{base}-{rewrite.suffix}" if base != REFERENCE_VARIANT else rewrite.suffix
            dst = work / f"{rewrite.suffix}.onnx"
            progress(f"{name}: rewriting {base}")
            try:
                rewrite.build(src, dst, manifest)
            except ToolchainError as exc:
                rows.append({"rewrite": name, "variant": variant, "kept": False, "reason": str(exc)})
                continue
            except Exception as exc:  # the optimizers raise plain exceptions on graphs they do not handle
                rows.append({"rewrite": name, "variant": variant, "kept": False, "reason": f"failed: {exc}"})
                continue
            scratch = copy.deepcopy(manifest)
            base_v = manifest.variant(base)
            scratch.variants[variant] = Variant(variant, precision=base_v.precision,
                                                components={MODEL: Component.of(root, str(dst.relative_to(root)))})
            result, reference = judge(scratch, variant, data, max_drop, reference)
            timing = measure_variants(scratch, [base, variant], runs=runs)
            speedup = timing[base]["p50_ms"] / timing[variant]["p50_ms"]
            kept = result.passed and speedup >= MIN_SPEEDUP
            reason = (f"{timing[variant]['p50_ms']:.2f} ms vs {base} {timing[base]['p50_ms']:.2f} ms "
                      f"({speedup:.2f}x), {result.summary}")
            rows.append({"rewrite": name, "variant": variant, "kept": kept, "speedup": round(speedup, 3),
                         "p50_ms": timing[variant]["p50_ms"], "base_p50_ms": timing[base]["p50_ms"], "reason": reason})
            progress(f"  {'kept' if kept else 'dropped'}: {reason}")
            if kept:
                entry = {"precision": base_v.precision, "passed": True,
                         "tolerance": {"max_drop": result.metrics.get("max_drop", max_drop)},
                         "metrics": {"gate": result.metrics, "optimization": {"rewrite": name, "base": base,
                                                                               "speedup": speedup}}, "latency": {}}
                add_variant(root, variant, dst, entry)
                record_latency(root, {variant: timing[variant], base: timing[base]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    update_manifest(root, lambda d: d.setdefault("optimize", {}).update({r["rewrite"]: r for r in rows}))
    return rows
