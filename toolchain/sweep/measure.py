"""One point of a sweep: train it, export it, quantize it (gated), validate and bench it, count its parameters.

The stages are the toolchain's own entry functions, in build()'s order. The bench is narrower than
build()'s on purpose: a sweep needs batch-1 latency and size per variant, while build()'s full bench
(batch 32, the real-sentences scenario, PyTorch and optimum baselines) costs minutes per model here.
A point whose model is already trained (a sweep killed after training it) is not trained again, and the
trainer itself resumes a run killed mid-way from its last checkpoint.
"""

from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path
from typing import Any

from toolchain.bench import bench
from toolchain.export.core import export
from toolchain.runtime import read_manifest
from toolchain.runtime.errors import ToolchainError
from toolchain.sweep.quality import Quality
from toolchain.sweep.spec import Point
from toolchain.train.stages import HELD_OUT
from toolchain.train.trainer import train
from toolchain.variants.quantize import quantize
from toolchain.variants.validate import validate

SWEEP_BENCH = {"batches": (1,), "seqs": (128,), "runs": 20, "real": False, "vs_pytorch": False}
SMOKE_BENCH = {"batches": (1,), "seqs": (16,), "runs": 3, "real": False, "vs_pytorch": False}
# Token and position tables (and a tied or untied LM head): the parameters a scaling law leaves out.
EMBEDDING = re.compile(r"(^|\.)(\w*embed\w*|wte|wpe|lm_head|positions)(\.|$)")


def measure(point: Point, folder: Path, quality: Quality, smoke: bool, progress) -> dict[str, Any]:
    """Build POINT under FOLDER (model/ and artifact/) and return its result: parameters and one row per variant."""
    recipe = point.recipe
    model_dir, artifact = folder / "model", folder / "artifact"
    started = time.perf_counter()
    if (model_dir / "training.json").is_file():
        progress(f"[train] {point.name}: using the trained model in {model_dir}")
    else:
        train(recipe, out=model_dir, smoke=smoke, progress=progress)
    trained = time.perf_counter()
    training = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    trust = recipe.source.trust_remote_code or recipe.model is not None  # a [model] recipe names its own code
    manifest = export(model_dir, artifact, task=recipe.task, opset=recipe.export.opset, progress=progress,
                      trust_remote_code=trust)
    calib = calibration(point, model_dir)
    errors = {}
    for mode in recipe.export.quantize:
        progress(f"[quantize] {point.name}: {mode}")
        try:
            quantize(artifact, mode, calib=calib, max_drop=recipe.gate.max_drop, limit=64 if smoke else 512,
                     progress=progress)
        except Exception as exc:  # noqa: BLE001  a mode one size cannot take must not end an hour's sweep:
            errors[mode] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"  # recorded
            progress(f"[quantize] {point.name}: {mode} failed, recorded and skipped ({errors[mode]})")
    passed = [n for n, v in read_manifest(artifact).variants.items() if v.passed]
    validate(artifact, variants=passed, trust_remote_code=trust)
    settings = dict(SMOKE_BENCH if smoke else SWEEP_BENCH)
    settings["seqs"] = tuple(min(s, manifest["max_length"]) for s in settings["seqs"])
    report = bench(artifact, progress=progress, trust_remote_code=trust, **settings)
    total, non_embedding = parameter_counts(model_dir)
    return {"axes": dict(point.size.axes), "params": total,
            "non_embedding": non_embedding, "train_seconds": round(trained - started, 1),
            "seconds": round(time.perf_counter() - started, 1), "training": _training_summary(training),
            "latency_unit": report.get("unit", f"ms per batch of 1 x {report['reference_shape']['seq']} tokens"),
            "rows": rows(artifact, report, training, quality), "quantize_errors": errors}


def calibration(point: Point, model_dir: Path) -> str | None:
    """The gate's data: a language model's held-out text, else the recipe's dev split (build()'s choice)."""
    if (model_dir / HELD_OUT).is_file():
        return str(model_dir / HELD_OUT)
    dev = point.recipe.data.dev if point.recipe.data is not None else None
    return str(point.recipe.resolve(dev.path)) if dev is not None else None


def rows(artifact: Path, report: dict[str, Any], training: dict[str, Any], quality: Quality) -> list[dict[str, Any]]:
    """Per variant: precision, gate, size in MB, p50 at batch 1 (the bench's reference shape) and quality."""
    ref = report["reference_shape"]
    out = []
    for name, v in read_manifest(artifact).variants.items():
        shapes = report["rows"].get(name, {}).get("shapes", [])
        hit = [s["p50_ms"] for s in shapes if (s["batch"], s["seq"]) == (ref["batch"], ref["seq"])]
        out.append({"variant": name, "precision": v.precision, "passed": bool(v.passed), "mb": v.bytes / 1e6,
                    "p50_ms": hit[0] if hit else None, "quality": quality.score(training, v.metrics)})
    return out


def parameter_counts(model_dir: Path) -> tuple[int, int]:
    """(all parameters, those outside token/position embeddings and the LM head), read from the safetensors
    headers alone: no weights are loaded, and a tied head is stored (and counted) once."""
    total = non_embedding = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= dim
            total += count
            non_embedding += 0 if EMBEDDING.search(name) else count
    if total == 0:
        raise ToolchainError(f"{model_dir} holds no safetensors weights; train the point again (delete the folder).")
    return total, non_embedding


def _training_summary(training: dict[str, Any]) -> dict[str, Any]:
    keep = ("val_loss", "val_perplexity", "dev_accuracy", "train_seconds", "train_loss", "parameters", "sample")
    return {k: training[k] for k in keep if k in training}
