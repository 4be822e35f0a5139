"""Quantize: add an int8 / int4 / fp16 variant to an artifact, kept for `auto` only if it passes the gate.

The work is onnxruntime.quantization's; this module picks its settings per target (hardware.py),
searches a short ladder of layers to keep in fp32 when the fully quantized graph misses the gate
(sensitive projections into the residual stream first), and records every number in the manifest.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toolchain.artifact.atomic import add_variant, link_into, writes_into
from toolchain.bench.core import measure_variants, record_latency
from toolchain.data.texts import TextSet, read_texts
from toolchain.variants.gate import GateResult, judge
from toolchain.variants.hardware import Preset, preset_for
from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.manifest import MODEL, REFERENCE_VARIANT, Component, Manifest, Variant, read_manifest
from toolchain.runtime.model import load

CALIB_BATCH = 8
SAME_SPEED = 1.03  # candidates within 3% of the fastest count as equally fast


@dataclass
class Plan:
    """One candidate: what to keep in fp32, and the data static calibration needs."""

    label: str
    exclude: list[str] = field(default_factory=list)
    keep: str = "fp32"  # how the excluded layers are stored: a key of KEEP
    calib: TextSet | None = None
    artifact: Path | None = None
    components: tuple[str, ...] = (MODEL,)  # the graphs this plan quantizes; the others stay fp32


# How layers kept off activation quantization are stored: fp32, or int8 weights (block-wise, weight-only)
# computed in fp32 or with int8 per-block activations (finer than per-tensor dynamic quantization).
KEEP = {"fp32": None, "int8-weights": {"accuracy_level": None}, "int8-weights-int8-compute": {"accuracy_level": 4}}


@dataclass(frozen=True)
class Mode:
    name: str  # as given to --mode
    variant: str  # the variant it writes
    precision: str
    build: Callable[[Path, Path, Preset, Plan], None]
    ladder: bool = True  # also try keeping sensitive layers off quantization
    keeps: tuple[str, ...] = ("fp32",)  # ways to store the kept layers (keys of KEEP)


MODES: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    MODES[mode.name] = mode
    return mode


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return getattr(QuantType, name)


def _int8_dynamic(src: Path, dst: Path, preset: Preset, plan: Plan) -> None:
    """Dynamic int8 (weights per channel, activations per call); the layers the ladder keeps away from
    activation quantization still store int8 weights (block-wise, weight-only, fp32 compute)."""
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), op_types_to_quantize=["MatMul", "Gather"], per_channel=preset.per_channel,
        reduce_range=preset.reduce_range, weight_type=_qtype(preset.weight_type), nodes_to_exclude=plan.exclude,
        extra_options={"MatMulConstBOnly": True},
    )
    if plan.exclude and KEEP[plan.keep] is not None:
        _weight_only(dst, dst, bits=8, include=plan.exclude, **KEEP[plan.keep])


def _weight_only(src: Path, dst: Path, bits: int, include: list[str] | None = None, exclude: list[str] | None = None,
                 accuracy_level: int | None = None) -> None:
    """Block-wise weight-only quantization of MatMul weights (onnxruntime's MatMulNBits)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=32, is_symmetric=True,
                                 accuracy_level=accuracy_level, nodes_to_include=include, nodes_to_exclude=exclude)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=False)


class _CalibReader:
    """Feeds calibration texts to onnxruntime's calibrator through the runtime's own tokenizer."""

    def __init__(self, artifact: Path, texts: list[str]):
        model = load(artifact, variant=REFERENCE_VARIANT, provider="cpu")
        batches = [texts[i : i + CALIB_BATCH] for i in range(0, len(texts), CALIB_BATCH)]
        self._feeds = iter([model.encode(b)[0] for b in batches])

    def get_next(self):
        return next(self._feeds, None)


def _int8_static(src: Path, dst: Path, preset: Preset, plan: Plan) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    if plan.calib is None or plan.artifact is None:
        raise ToolchainError("int8-static needs calibration texts; pass --calib FILE.")
    quantize_static(
        str(src), str(dst), _CalibReader(plan.artifact, plan.calib.texts[:128]), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"], per_channel=preset.per_channel, reduce_range=preset.reduce_range,
        activation_type=_qtype(preset.activation_type), weight_type=_qtype(preset.weight_type),
        nodes_to_exclude=plan.exclude, calibrate_method=CalibrationMethod.MinMax,
        extra_options={"MatMulConstBOnly": True},
    )


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


register(Mode("int8-dynamic", "int8", "int8", _int8_dynamic, keeps=tuple(KEEP)))
register(Mode("int8-static", "int8-static", "int8", _int8_static))
register(Mode("fp16", "fp16", "fp16", _fp16, ladder=False))
register(Mode("int4", "int4", "int4", _int4))


def exclusion_ladder(model_path: Path) -> list[tuple[str, list[str]]]:
    """Candidates from least to most kept in fp32, found from the graph's structure (not layer names):

    1. nothing; 2. the projections right after the activation (FFN down-projections, whose inputs
    have the widest range); 3. every projection that writes into the residual stream.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in weights]

    def after_activation(n) -> bool:
        p = producer.get(n.input[0])
        return p is not None and p.op_type in {"Mul", "Gelu", "FastGelu", "BiasGelu", "Relu", "QuickGelu"}

    def into_residual(n) -> bool:
        nxt = [c for c in consumers.get(n.output[0], []) if c.op_type == "Add"]
        return any(c.op_type == "Add" for a in nxt for c in consumers.get(a.output[0], []))

    down = [n.name for n in matmuls if after_activation(n)]
    residual = [n.name for n in matmuls if into_residual(n)]
    ladder = [("all layers quantized", [])]
    if down:
        ladder.append((f"{len(down)} FFN down-projections kept at higher precision", down))
    if residual and set(residual) != set(down):
        ladder.append((f"{len(residual)} residual-stream projections kept at higher precision", residual))
    return ladder


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


def component_ladder(names: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """A variant of several graphs (encoder + decoder): every graph quantized first, then one graph at a
    time, the last first (a decoder runs once per output token: where quantization saves the most), the
    others kept in fp32."""
    ladder = [("every component quantized", tuple(names))]
    for name in reversed(names):
        kept = ", ".join(n for n in names if n != name)
        ladder.append((f"{name} quantized ({kept} kept in fp32)", (name,)))
    return ladder


def candidates(spec: Mode, src: Path | dict[str, Path]) -> list[Plan]:
    """Every plan MODE tries for SRC (a graph, or component -> graph): the ladder of layers kept off
    quantization x the ways to store them; for a variant of several graphs, the ladder of components."""
    src = src if isinstance(src, dict) else {MODEL: Path(src)}
    if len(src) > 1:
        return [Plan(label, components=names) for label, names in component_ladder(list(src))]
    (src,) = src.values()
    plans = []
    for label, exclude in exclusion_ladder(src) if spec.ladder else [("as converted", [])]:
        for keep in spec.keeps if exclude else ("fp32",):
            plans.append(Plan(label + (f" ({keep})" if exclude else ""), exclude, keep))
    return plans


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
    (the smallest of those within 3% of the fastest).
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
    progress(f"{mode} for target {preset.target} (per-channel {preset.per_channel}, reduce-range {preset.reduce_range}); "
             f"gate on {len(data.texts)} texts from {data.path}")
    work = Path(tempfile.mkdtemp(prefix=f".{spec.variant}.tmp-{os.getpid()}-", dir=root))
    try:
        src = {c: link_into(p, work) for c, p in src.items()}  # the quantizer writes NAME-inferred.onnx beside its input
        scratch = copy.deepcopy(manifest)
        tried = _try_candidates(spec, src, work, scratch, preset, data, max_drop, progress)
        passed = [t for t in tried if t["passed"]]
        best, timings = _choose(scratch, spec, tried, progress)
        result = best["result"]
        entry = {
            "precision": spec.precision, "passed": result.passed, "latency": {},
            "tolerance": {"max_drop": result.metrics.get("max_drop", max_drop)},
            "metrics": {"gate": result.metrics, "quantization": {
                "mode": mode, "target": preset.target, "per_channel": preset.per_channel,
                "reduce_range": preset.reduce_range, "plan": best["plan"], "kept_nodes": best["fp32_nodes"],
                "kept_as": best["keep"], "tried": [_row(t) for t in tried]}},
        }
        fp32 = manifest.variant(REFERENCE_VARIANT).components  # components left in fp32 share its files
        add_variant(root, spec.variant, {c: p if c in best["quantized"] else root / fp32[c].file
                                         for c, p in best["files"].items()}, entry)
        if passed:  # so that variant="auto" ranks it at once; `toolchain bench` refines it
            record_latency(root, {REFERENCE_VARIANT: timings[REFERENCE_VARIANT], spec.variant: timings[best["name"]]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return QuantizeReport(spec.variant, result.passed, result, best["plan"], best["bytes"],
                          manifest.variant(REFERENCE_VARIANT).bytes, [_row(t) for t in tried],
                          best.get("p50_ms"), timings.get(REFERENCE_VARIANT, {}).get("p50_ms"))


def _try_candidates(spec: Mode, src: dict[str, Path], work: Path, scratch: Manifest, preset: Preset, data: TextSet,
                    max_drop: float | None, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Build every candidate plan into WORK and gate it against fp32 (listed in SCRATCH, a copy of the manifest)."""
    root, reference, tried = scratch.root, None, []
    for n, plan in enumerate(candidates(spec, src)):
        name = f"{spec.variant}~{n}"
        progress(f"building {spec.variant}: {plan.label}")
        plan.calib, plan.artifact = data, root
        files = {}
        for component, path in src.items():  # a component the plan does not quantize stays the fp32 graph
            files[component] = work / (f"{n}.onnx" if component == MODEL else f"{n}.{component}.onnx")
            if component in plan.components:
                _build(spec, path, files[component], preset, plan)
            else:
                files[component] = path
        scratch.variants[name] = Variant(name, precision=spec.precision, components={
            c: Component.of(root, str(p.relative_to(root))) for c, p in files.items()})
        result, reference = judge(scratch, name, data, max_drop, reference)
        progress(f"  {'passed' if result.passed else 'missed'}: {result.summary}")
        tried.append({"name": name, "plan": plan.label, "fp32_nodes": plan.exclude, "keep": plan.keep,
                      "passed": result.passed, "bytes": sum(p.stat().st_size for p in files.values()),
                      "files": files, "quantized": plan.components, "result": result, **_brief(result)})
    return tried


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
