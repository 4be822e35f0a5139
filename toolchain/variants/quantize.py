"""Quantize: add an int8 / int4 / fp16 variant to an artifact, kept for `auto` only if it passes the gate.

int8-dynamic is per-row (rowquant.py: one activation scale per token, so batch-invariant), in each weight
format the target's kernels compute exactly (hardware.py); the layers to keep in fp32 are searched from a
measured sensitivity ranking (sensitivity.py, plans.py). int8-static (static.py, smooth.py) folds SmoothQuant
smoothing into the graph and calibrates static ranges on real tokens; the gate chooses its alpha, then the same
search runs. fp16 and int4 are onnxruntime's, with the structural ladder of layers to keep. Every plan is gated against fp32, the passing ones are timed,
and every number (the ranking, the plans tried, batch invariance) is recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toolchain.artifact.atomic import link_into, writes_into
from toolchain.artifact.manifest_writes import add_variant
from toolchain.bench.core import measure_variants, record_latency
from toolchain.data.texts import TextSet, read_texts
from toolchain.variants.gate import GateResult, judge, outputs
from toolchain.variants.hardware import Preset, detect_target, exact_on, preset_for
from toolchain.variants.invariance import batch_invariance
from toolchain.variants.plans import Plan, search, structural
from toolchain.variants.rowquant import WEIGHT_FORMATS, rowquant
from toolchain.variants.sensitivity import rank
from toolchain.variants.static import calibrate, describe, search_plans, write_qdq
from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.manifest import MODEL, REFERENCE_VARIANT, Component, Manifest, Variant, read_manifest

INTEGER_GEMMS = ("int8-dynamic", "int8-static")  # modes built in rowquant.WEIGHT_FORMATS
SAME_SPEED = 1.03  # candidates within 3% of the fastest count as equally fast


@dataclass(frozen=True)
class Mode:
    name: str  # as given to --mode
    variant: str  # the variant it writes
    precision: str
    build: Callable[[Path, Path, Preset, Plan], None]
    ladder: bool = True  # also try keeping sensitive layers off quantization
    measured: bool = False  # find the layers to keep from the sensitivity ranking (else the structural ladder)


MODES: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    MODES[mode.name] = mode
    return mode


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return getattr(QuantType, name)


def _int8_dynamic(src: Path, dst: Path, preset: Preset, plan: Plan) -> None:
    """Per-row dynamic int8 (rowquant.py) in the plan's weight format, the plan's layers left in fp32; embedding
    tables (Gather) stored as int8 by onnxruntime (weight-only: a lookup needs no activation scale)."""
    with _tables(src, dst) as tables:
        rowquant(tables, dst, WEIGHT_FORMATS[plan.weights or preset.row_weights[0]], plan.exclude)


@contextlib.contextmanager
def _tables(src: Path, dst: Path):
    """SRC with its embedding tables (Gather) stored as int8 by onnxruntime, as a file beside DST while in use."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tables = dst.with_name(dst.stem + ".tables.onnx")
    quantize_dynamic(str(src), str(tables), op_types_to_quantize=["Gather"], weight_type=QuantType.QInt8)
    try:
        yield tables
    finally:
        for p in tables.parent.glob(tables.name + "*"):
            p.unlink()


def _weight_only(src: Path, dst: Path, bits: int, include: list[str] | None = None, exclude: list[str] | None = None,
                 accuracy_level: int | None = None) -> None:
    """Block-wise weight-only quantization of MatMul weights (onnxruntime's MatMulNBits)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=32, is_symmetric=True,
                                 accuracy_level=accuracy_level, nodes_to_include=include, nodes_to_exclude=exclude)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=False)


def _int8_static(src: Path, dst: Path, preset: Preset, plan: Plan) -> None:
    """Static int8 (static.py): smoothing folded into the LayerNorms, per-tensor activation ranges calibrated on real
    tokens, QDQ around each MatMul; embedding tables as int8-dynamic stores them."""
    if plan.calibration is None:  # a structural plan (no measured search): calibrate here, moderate smoothing
        if plan.calib is None or plan.artifact is None:
            raise ToolchainError("int8-static needs calibration texts; pass --calib FILE.")
        plan.calibration, plan.alpha = calibrate(src, plan.artifact, plan.calib), 0.5
    with _tables(src, dst) as tables:
        write_qdq(tables, dst, plan.calibration, plan.alpha or 0.0,
                  WEIGHT_FORMATS[plan.weights or preset.row_weights[0]], plan.exclude)


# Ops kept in fp32 by the fp16 mode: their intermediate values overflow fp16's 65504 or lose too much
# precision (variance of a LayerNorm, x**2 of an RMSNorm, exp of a softmax or GELU); the Casts around
# them cost little next to the MatMuls that do run in fp16.
FP16_KEEP_FP32_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
                      "SkipSimplifiedLayerNormalization", "RMSNormalization", "Softmax", "Erf", "Exp", "Pow",
                      "ReduceMean")


def _fp16(src: Path, dst: Path, preset: Preset, plan: Plan) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    # Inputs and outputs stay fp32 so callers need no change; ops that overflow in fp16 stay fp32.
    blocked = list(DEFAULT_OP_BLOCK_LIST) + list(FP16_KEEP_FP32_OPS)
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked, node_block_list=plan.exclude)
    _drop_duplicate_nodes(model.graph)
    onnx.save(model, str(dst))


def _drop_duplicate_nodes(graph) -> None:
    """convert_float_to_float16 inserts one Cast per fp32 consumer of an fp16 tensor, all with the same name and
    output (RMSNorm's Pow and Mul both read the residual stream), which ONNX Runtime refuses: keep one of each."""
    seen: set[bytes] = set()
    kept = []
    for node in graph.node:
        key = node.SerializeToString()
        if key not in seen:
            seen.add(key)
            kept.append(node)
    if len(kept) < len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _int4(src: Path, dst: Path, preset: Preset, plan: Plan) -> None:
    _weight_only(src, dst, bits=4, exclude=plan.exclude, accuracy_level=preset.int4_accuracy_level)


register(Mode("int8-dynamic", "int8", "int8", _int8_dynamic, measured=True))
register(Mode("int8-static", "int8-static", "int8", _int8_static, measured=True))
register(Mode("fp16", "fp16", "fp16", _fp16, ladder=False))
register(Mode("int4", "int4", "int4", _int4))


@dataclass
class QuantizeReport:
    variant: str
    passed: bool
    gate: GateResult
    plan: str
    bytes: int
    fp32_bytes: int
    tried: list[dict[str, Any]]
    p50_ms: float | None = None
    fp32_p50_ms: float | None = None
    sensitivity: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # weight format -> ranking
    batch_invariance: dict[str, Any] = field(default_factory=dict)
    why: str = ""


def candidates(spec: Mode, src: Path | dict[str, Path], preset: Preset | None = None) -> list[Plan]:
    """The fixed plans MODE tries for SRC (a graph, or component -> graph) without a sensitivity ranking: the
    structural ladder of layers kept in fp32 (per weight format for int8-dynamic), or the ladder of components."""
    weights = (preset or preset_for(None)).row_weights if spec.name in INTEGER_GEMMS else (None,)
    return structural(src, spec.ladder, ("fp32",), weights)


@writes_into
def quantize(
    artifact: str | Path,
    mode: str,
    calib: str | Path | None = None,
    max_drop: float | None = None,
    target: str | None = None,
    limit: int = 512,
    progress: Callable[[str], None] = lambda msg: None,
) -> QuantizeReport:
    """Add MODE's variant to ARTIFACT: every candidate plan is gated against fp32 on CALIB (default: the
    bundled SST-2 dev set), the passing ones are timed against fp32 in one run, and the fastest is kept
    (the smallest of those within 3% of the fastest); its batch invariance is measured and recorded.
    When none passes, the closest is kept for inspection with passed=false (never chosen by auto)."""
    if mode not in MODES:
        raise ToolchainError(f"mode {mode!r} is not known; use one of {', '.join(MODES)}.")
    spec = MODES[mode]
    root = Path(artifact)
    manifest = read_manifest(root)
    src = manifest.verify_components(REFERENCE_VARIANT)
    if len(src) > 1 and spec.name == "int8-static":
        raise ToolchainError(f"int8-static calibrates one graph's inputs and {root} has {', '.join(src)}; use "
                             "--mode int8-dynamic for encoder-decoders.")
    preset = preset_for(target)
    data = read_texts(calib, limit=limit)
    progress(f"{mode} for target {preset.target} ({_scheme(spec, preset)}); gate on {len(data.texts)} texts from {data.path}")
    work = Path(tempfile.mkdtemp(prefix=f".{spec.variant}.tmp-{os.getpid()}-", dir=root))
    try:
        src = {c: link_into(p, work) for c, p in src.items()}  # the quantizer writes NAME-inferred.onnx beside its input
        trials = _Trials(spec, src, work, copy.deepcopy(manifest), preset, data, max_drop, progress)
        _search(trials)
        tried = trials.tried
        best, timings = _choose(trials.scratch, spec, tried, progress)
        result = best["result"]
        invariance = batch_invariance(trials.scratch, best["name"], data)
        progress(f"batch invariance of the kept plan: {invariance}")
        why = _why(best, tried)
        entry = {
            "precision": spec.precision, "passed": result.passed, "latency": {},
            "tolerance": {"max_drop": result.metrics.get("max_drop", max_drop)},
            "metrics": {"gate": result.metrics, "batch_invariance": invariance, "quantization": {
                "mode": mode, "target": preset.target, "scheme": _scheme(spec, preset, best["weights"]),
                "per_channel": preset.per_channel, "weights": best["weights"],
                "reduce_range": WEIGHT_FORMATS[best["weights"]].reduce_range if best["weights"] else preset.reduce_range,
                "plan": best["plan"], "kept_nodes": best["fp32_nodes"], "why": why, "gated_on": detect_target(),
                "numerics_match_target": exact_on(best["weights"], detect_target()),
                "sensitivity": trials.rankings, "tried": [_row(t) for t in tried],
                **({"static": describe(trials.calibration, best["alpha"])} if "alpha" in best and trials.calibration else {})}},
        }
        fp32 = manifest.variant(REFERENCE_VARIANT).components  # components left in fp32 share its files
        add_variant(root, spec.variant, {c: p if c in best["quantized"] else root / fp32[c].file
                                         for c, p in best["files"].items()}, entry)
        if result.passed:  # so that variant="auto" ranks it at once; `toolchain bench` refines it
            record_latency(root, {REFERENCE_VARIANT: timings[REFERENCE_VARIANT], spec.variant: timings[best["name"]]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return QuantizeReport(spec.variant, result.passed, result, best["plan"], best["bytes"],
                          manifest.variant(REFERENCE_VARIANT).bytes, [_row(t) for t in tried],
                          best.get("p50_ms"), timings.get(REFERENCE_VARIANT, {}).get("p50_ms"),
                          trials.rankings, invariance, why)


def _scheme(spec: Mode, preset: Preset, weights: str | None = None) -> str:
    formats = weights or " / ".join(preset.row_weights)
    if spec.name == "int8-static":
        return f"static per-tensor int8 activations (smoothed, QDQ), per-channel weights as {formats}"
    if spec.name != "int8-dynamic":
        return f"per-channel {preset.per_channel}, reduce-range {preset.reduce_range}"
    return f"per-row dynamic int8 activations, per-channel weights as {formats}"


class _Trials:
    """Builds plans into WORK and gates each against fp32 (listed in SCRATCH, a copy of the manifest); every
    attempt is kept in ``tried``, in order."""

    def __init__(self, spec: Mode, src: dict[str, Path], work: Path, scratch: Manifest, preset: Preset,
                 data: TextSet, max_drop: float | None, progress: Callable[[str], None]):
        self.spec, self.src, self.work, self.scratch, self.preset = spec, src, work, scratch, preset
        self.data, self.max_drop, self.progress = data, max_drop, progress
        self.tried: list[dict[str, Any]] = []
        self.rankings: dict[str, list[dict[str, Any]]] = {}
        self.reference = None
        self.calibration = None  # int8-static: the static.Calibration of the measured search

    def attempt(self, plan: Plan) -> bool:
        n, spec, root = len(self.tried), self.spec, self.scratch.root
        name = f"{spec.variant}~{n}"
        self.progress(f"building {spec.variant}: {plan.label}")
        plan.calib, plan.artifact = self.data, root
        files = {}
        for component, path in self.src.items():  # a component the plan does not quantize stays the fp32 graph
            files[component] = self.work / (f"{n}.onnx" if component == MODEL else f"{n}.{component}.onnx")
            if component in plan.components:
                _build(spec, path, files[component], self.preset, plan)
            else:
                files[component] = path
        self.scratch.variants[name] = Variant(name, precision=spec.precision, components={
            c: Component.of(root, str(p.relative_to(root))) for c, p in files.items()})
        result, self.reference = judge(self.scratch, name, self.data, self.max_drop, self.reference)
        self.progress(f"  {'passed' if result.passed else 'missed'}: {result.summary}")
        self.tried.append({"name": name, "plan": plan.label, "fp32_nodes": plan.exclude, "weights": plan.weights,
                           **({} if plan.alpha is None else {"alpha": plan.alpha}), "passed": result.passed, "bytes": sum(p.stat().st_size for p in files.values()),
                           "files": files, "quantized": plan.components, "result": result, **_brief(result)})
        return result.passed


def _search(trials: _Trials) -> None:
    """Measured plans where the ranking can feed the graph (int8-dynamic on one graph: encoders, decoders): per
    weight format, the fewest most sensitive layers kept in fp32 with which the gate passes; else fixed candidates."""
    spec, src = trials.spec, trials.src
    if not (spec.measured and len(src) == 1):
        for plan in candidates(spec, src, trials.preset):
            trials.attempt(plan)
        return
    (path,) = src.values()
    if spec.name == "int8-static":
        _static_search(trials, path)
        return
    # fp32's outputs first: the gate checks the data fits the task (images for an image model) before any ranking
    trials.reference = outputs(trials.scratch, REFERENCE_VARIANT, trials.data)
    formats = trials.preset.row_weights
    try:
        rankings = rank(path, trials.scratch.root, trials.data, [WEIGHT_FORMATS[f] for f in formats])
    except NotImplementedError:  # a graph the ranking cannot feed: the structural ladder instead
        for plan in structural(path, spec.ladder, ("fp32",), formats):
            trials.attempt(plan)
        return
    for fmt in formats:
        ranking = rankings[fmt]
        trials.rankings[fmt] = [r.to_dict() for r in ranking]
        trials.progress(f"sensitivity ({fmt}): " + ", ".join(f"{r.node} {r.error:.4f}" for r in ranking[:3]) + " ...")
        search([r.node for r in ranking], trials.attempt, fmt)


def _static_search(trials: _Trials, path: Path) -> None:
    """int8-static: calibrate once on real tokens, then let the gate choose the smoothing alpha and the layers to keep."""
    trials.reference = outputs(trials.scratch, REFERENCE_VARIANT, trials.data)
    try:
        trials.calibration = calibrate(path, trials.scratch.root, trials.data)
    except NotImplementedError as exc:
        raise ToolchainError(f"int8-static cannot calibrate this graph ({exc}); use --mode int8-dynamic.") from None
    trials.rankings = search_plans(trials.calibration, list(trials.preset.row_weights), trials.attempt,
                                   lambda: _score(trials.tried[-1]["result"]), trials.progress)


def _why(best: dict[str, Any], tried: list[dict[str, Any]]) -> str:
    """One sentence for the manifest: why this plan was kept."""
    if not best["passed"]:
        return "no plan passed the gate; the closest miss is kept for inspection and never chosen by auto"
    passed = [t for t in tried if t["passed"]]
    kept = len(best["fp32_nodes"])
    return (f"{len(passed)} of {len(tried)} plans passed the gate; this one was the fastest at batch 1 x 128 "
            f"(the smallest within {SAME_SPEED - 1:.0%} of it), with {kept} layer(s) kept in fp32")


def _choose(scratch: Manifest, spec: Mode, tried: list[dict[str, Any]],
            progress: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The candidate to keep and the timings: the fastest that passed (the smallest file within SAME_SPEED of
    it), timed against fp32 in one run; when none passed, the closest miss (kept with passed=false)."""
    passed = [t for t in tried if t["passed"]]
    if not passed:
        return max(tried, key=lambda t: _score(t["result"])), {}
    progress(f"timing {len(passed)} passing candidate(s) against fp32 (batch 1 x 128 tokens)")
    timings = measure_variants(scratch, [REFERENCE_VARIANT] + [t["name"] for t in passed])
    for t in passed:
        t["p50_ms"] = timings[t["name"]]["p50_ms"]
    fastest = min(t["p50_ms"] for t in passed)  # within timing noise of the fastest, the smallest file wins
    best = min((t for t in passed if t["p50_ms"] <= fastest * SAME_SPEED), key=lambda t: (t["bytes"], t["p50_ms"]))
    return best, timings


def _row(t: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in t.items() if k not in ("result", "name", "fp32_nodes", "files", "quantized")}


def _build(spec: Mode, src: Path, dst: Path, preset: Preset, plan: Plan) -> None:
    import logging

    quiet = [logging.getLogger(), logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")]
    levels = [log.level for log in quiet]
    for log in quiet:  # onnxruntime.quantization logs every node at INFO and advice at WARNING
        log.setLevel(logging.ERROR)
    try:
        spec.build(src, dst, preset, plan)
    except ToolchainError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises plain exceptions on unsupported graphs
        first = first_line(exc)
        raise ToolchainError(f"{spec.name} quantization failed on {src.resolve()}: {first}") from None
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


def _brief(result: GateResult) -> dict[str, Any]:
    keep = ("mean_cosine", "min_cosine", "accuracy", "accuracy_drop", "agreement", "exact_match", "exact_match_drop")
    return {k: round(v, 5) for k, v in result.metrics.items() if k in keep}


def _score(result: GateResult) -> float:
    m = result.metrics
    if "mean_cosine" in m:
        return m.get("mean_cosine", 0) + m.get("min_cosine", 0)
    return -m.get("accuracy_drop", m.get("exact_match_drop", 1 - m.get("agreement", 0)))
