"""Candidate plans for quantize: which layers stay in fp32, which weight format, which graphs.

Two ways to find the layers to keep: the measured one (sensitivity.py ranks the layers by their own
quantization error on the calibration data; keep the k most sensitive for k = 0, 1, 2, 4, ... until the gate
passes, then bisect down to the fewest), used by int8-dynamic on single graphs (encoders, decoders); and the
structural ladder (FFN down-projections, then every projection into the residual stream), used by the other
modes, by variants of several graphs, and by graphs the ranking cannot feed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toolchain.data.texts import TextSet
from toolchain.runtime.manifest import MODEL

MAX_GATED = 8  # plans gated per weight format by the sensitivity search, at most


@dataclass
class Plan:
    """One candidate: what to keep in fp32, the weight format, and the data static calibration needs."""

    label: str
    exclude: list[str] = field(default_factory=list)
    keep: str = "fp32"  # how the excluded layers are stored: a key of quantize.KEEP
    calib: TextSet | None = None
    artifact: Path | None = None
    components: tuple[str, ...] = (MODEL,)  # the graphs this plan quantizes; the others stay fp32
    weights: str | None = None  # int8-dynamic, int8-static: a key of rowquant.WEIGHT_FORMATS
    alpha: float | dict[str, float] | None = None  # int8-static: the smoothing strength, or one per activation
    calibration: Any = None  # int8-static: the static.Calibration the plan is built from


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


def component_ladder(names: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """A variant of several graphs (encoder + decoder): every graph quantized first, then one graph at a
    time, the last first (a decoder runs once per output token: where quantization saves the most), the
    others kept in fp32."""
    ladder = [("every component quantized", tuple(names))]
    for name in reversed(names):
        kept = ", ".join(n for n in names if n != name)
        ladder.append((f"{name} quantized ({kept} kept in fp32)", (name,)))
    return ladder


def structural(src: Path | dict[str, Path], ladder: bool, keeps: tuple[str, ...],
               weights: tuple[str | None, ...] = (None,)) -> list[Plan]:
    """The fixed list of plans: the structural ladder x the ways to keep layers x the weight formats; for a
    variant of several graphs, the ladder of components (in the first weight format)."""
    src = src if isinstance(src, dict) else {MODEL: Path(src)}
    if len(src) > 1:
        return [Plan(label, components=names, weights=weights[0]) for label, names in component_ladder(list(src))]
    (path,) = src.values()
    plans = []
    for fmt in weights:
        tag = f"{fmt}: " if fmt and len(weights) > 1 else ""
        for label, exclude in exclusion_ladder(path) if ladder else [("as converted", [])]:
            for keep in keeps if exclude else ("fp32",):
                plans.append(Plan(tag + label + (f" ({keep})" if exclude else ""), exclude, keep, weights=fmt))
    return plans


def search(ranked: list[str], attempt: Callable[[Plan], bool], weights: str | None,
           max_gated: int = MAX_GATED) -> list[int]:
    """Keep the k most sensitive layers of RANKED (most sensitive first) in fp32, for k = 0, 1, 2, 4, ... until
    ATTEMPT (build + gate) passes, then bisect between the last miss and the first pass for the fewest kept.
    Returns the k values tried, in order."""
    tried: dict[int, bool] = {}

    def run(k: int) -> bool:
        tag = f"{weights}: " if weights else ""
        label = tag + (f"{k} most sensitive layers kept in fp32" if k else "all layers quantized")
        tried[k] = attempt(Plan(label, list(ranked[:k]), weights=weights))
        return tried[k]

    k, miss, hit = 0, -1, None
    while hit is None and len(tried) < max_gated:
        if run(k):
            hit = k
        elif k >= len(ranked):
            break
        else:
            miss, k = k, min(len(ranked), max(1, 2 * k))
    while hit is not None and hit - miss > 1 and len(tried) < max_gated:  # bisect: fewest kept that still passes
        mid = (hit + miss) // 2
        if run(mid):
            hit = mid
        else:
            miss = mid
    return list(tried)


def explain(report) -> list[str]:
    """`toolchain quantize --explain`: the sensitivity ranking per weight format, every plan tried and its gate,
    and why the kept one was kept (a QuantizeReport in, printable lines out)."""
    lines = []
    for fmt, ranking in report.sensitivity.items():
        lines.append(f"sensitivity ({fmt} weights): relative output error of each layer quantized alone, most sensitive first")
        lines += [f"  {i:3d}. {r['error']:.5f}  {r['node']}  {r['shape'][0]}x{r['shape'][1]}" for i, r in enumerate(ranking, 1)]
    lines.append("plans tried:")
    for t in report.tried:
        gate = ", ".join(f"{k} {v}" for k, v in t.items() if k not in ("plan", "weights", "alpha", "passed", "bytes", "p50_ms"))
        speed = f", p50 {t['p50_ms']:.2f} ms" if "p50_ms" in t else ""
        lines.append(f"  {'pass' if t['passed'] else 'miss'}  {t['plan']}: {gate}; {t['bytes'] / 1e6:.1f} MB{speed}")
    inv = report.batch_invariance
    lines.append(f"kept: {report.plan} ({report.why}); batch-invariant: {inv.get('invariant')}"
                 + (f" (max |batch - alone| {inv['max_abs_diff']:.2g})" if "max_abs_diff" in inv else ""))
    return lines
