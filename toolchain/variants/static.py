"""Static int8: smoothed activations (smooth.py), per-tensor scales calibrated on real tokens, QDQ format.

Why static: the activation scales are constants, so the graph computes none at run time (per-row int8
spends six elementwise ops per quantized activation on them) and a text's result cannot depend on the
other texts in its batch (invariance.py measures it all the same). Why not onnxruntime's quantize_static:
its calibrators read whole padded batches, so the padding of a short text in a batch of long ones is
counted as data (and its percentile and entropy calibrators failed outright on batches of different
lengths). Here the activations are captured with the ranking's own pass (sensitivity.capture: real tokens
only, padding rows dropped) and the statistics are numpy's.

Calibration: per activation tensor, an asymmetric uint8 range from the PERCENTILES of its values; which
percentile is chosen per tensor by the error it causes in the outputs of the MatMuls that read it, on the
calibration tokens (clipping at 99.99% ruins MiniLM's FFN down-projections, whose few huge values carry
their output; the full max wastes levels on the LayerNorm outputs). The smoothing strength alpha is chosen
by the gate from ALPHAS, then the measured plan search keeps the most sensitive layers in fp32 until the
gate passes. The graph is written as QuantizeLinear/DequantizeLinear pairs around each MatMul, which ONNX
Runtime fuses into one integer MatMul (MatMulIntegerToFloat) and other runtimes read as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolchain.data.texts import TextSet
from toolchain.variants.plans import Plan, search
from toolchain.variants.rowquant import TWO_GB, WEIGHT_FORMATS, WeightFormat, quantizable, quantize_weight
from toolchain.variants.sensitivity import Sensitivity, capture
from toolchain.variants.smooth import factors, fold, sites

ALPHAS = (0.0, 0.5, 0.75)  # smoothing strengths the gate chooses from (0: no smoothing)
PERCENTILES = (99.99, 99.999, 100.0)  # clipping points each activation's range is chosen from
CALIB_TEXTS = 128  # calibration texts captured (real tokens only)
PREFIX = "sq"


@dataclass(frozen=True)
class Range:
    """An activation's static uint8 quantization: scale, zero point, and the percentile it was clipped at."""

    scale: float
    zero_point: int
    percentile: float

    @classmethod
    def of(cls, x: np.ndarray, percentile: float) -> "Range":
        return cls.each(x, (percentile,))[0]

    @classmethod
    def each(cls, x: np.ndarray, percentiles: tuple[float, ...]) -> list["Range"]:
        """One range per percentile of X (one pass over X for all of them)."""
        qs = np.percentile(x, [100 - p for p in percentiles] + list(percentiles))
        out = []
        for p, lo, hi in zip(percentiles, qs[: len(percentiles)], qs[len(percentiles) :]):
            lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)  # zero stays exactly representable
            scale = max(hi - lo, 1e-8) / 255
            out.append(cls(float(np.float32(scale)), int(np.clip(round(-lo / scale), 0, 255)), p))
        return out

    def fake(self, x: np.ndarray) -> np.ndarray:
        """What QuantizeLinear then DequantizeLinear give back for X."""
        q = np.clip(np.round(x / np.float32(self.scale)) + self.zero_point, 0, 255)
        return ((q - self.zero_point) * np.float32(self.scale)).astype(np.float32)


@dataclass
class Calibration:
    """The captured real-token inputs of every quantizable MatMul of one graph, and what is derived from them."""

    rows: dict[str, np.ndarray]  # activation -> (tokens, K) float32
    weights: dict[str, np.ndarray]  # MatMul node -> (K, N) fp32 weight
    reads: dict[str, str]  # MatMul node -> its activation
    smoothable: dict[str, tuple[str, ...]]  # activation -> the MatMuls a smoothing site folds into
    texts: int
    _cache: dict = field(default_factory=dict, repr=False)

    def scales(self, alpha: float) -> dict[str, np.ndarray]:
        """Activation -> smoothing factors s for ALPHA (every smoothable site)."""
        out = {}
        for act, nodes in self.smoothable.items():
            w_max = np.max([np.abs(self.weights[n]).max(axis=1) for n in nodes], axis=0)
            out[act] = factors(np.abs(self.rows[act]).max(axis=0), w_max, alpha)
        return out

    def ranges(self, alpha: float) -> dict[str, Range]:
        """Activation -> its static range once smoothed by ALPHA, the percentile chosen by output error."""
        s, out = self.scales(alpha), {}
        for act in self.rows:
            key = (act, alpha if act in s else None)  # an activation no site smooths: the same range for every alpha
            if key not in self._cache:
                self._cache[key] = _best_range(self._smoothed(act, s), self._consumers(act, s))
            out[act] = self._cache[key]
        return out

    def _smoothed(self, act: str, s: dict[str, np.ndarray]) -> np.ndarray:
        return self.rows[act] / s[act] if act in s else self.rows[act]

    def _consumers(self, act: str, s: dict[str, np.ndarray]) -> list[np.ndarray]:
        ws = [self.weights[n] for n, a in self.reads.items() if a == act]
        return [w * s[act][:, None] for w in ws] if act in s else ws


def calibrate(src: Path, artifact: Path, data: TextSet, limit: int = CALIB_TEXTS) -> Calibration:
    """One fp32 pass over DATA's first LIMIT texts: every quantizable MatMul's input rows, padding left out."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(src)).graph
    inits = {i.name: i for i in graph.initializer}
    rows = {a: x.astype(np.float32) for a, x in capture(src, artifact, data, limit).items()}
    nodes = quantizable(graph)
    weights = {n.name: numpy_helper.to_array(inits[n.input[1]]).astype(np.float32) for n in nodes}
    smoothable = {site.activation: site.matmuls for site in sites(graph)}
    return Calibration(rows, weights, {n.name: n.input[0] for n in nodes}, smoothable, min(limit, len(data.texts)))


def _best_range(x: np.ndarray, weights: list[np.ndarray]) -> Range:
    """The percentile whose clipping and rounding move X @ W the least (summed relative error over WEIGHTS)."""
    exact = [x @ w for w in weights]

    def error(r: Range) -> float:
        xq = r.fake(x)
        return sum(float(np.linalg.norm(e - xq @ w) / max(np.linalg.norm(e), 1e-12)) for e, w in zip(exact, weights))

    return min(Range.each(x, PERCENTILES), key=error)


def rank(cal: Calibration, alpha: float, fmt: WeightFormat) -> list[Sensitivity]:
    """Every quantizable layer by the relative error of its output when it alone is quantized (smoothed by ALPHA,
    static range, FMT weights), most sensitive first: the ranking plans.search reads."""
    s, ranges = cal.scales(alpha), cal.ranges(alpha)
    scores = []
    for node, act in cal.reads.items():
        x, w = cal.rows[act], cal.weights[node]
        xs, ws = (x / s[act], w * s[act][:, None]) if act in s else (x, w)
        wq, wscale = quantize_weight(ws, fmt)
        wdq = (wq.astype(np.float32) - (0 if fmt.signed else 128)) * wscale
        exact = x @ w
        err = np.linalg.norm(exact - ranges[act].fake(xs) @ wdq) / max(float(np.linalg.norm(exact)), 1e-12)
        scores.append(Sensitivity(node, float(err), tuple(w.shape)))
    return sorted(scores, key=lambda r: -r.error)


def describe(cal: Calibration, alpha: float) -> dict:
    """The manifest's record of the calibration and smoothing behind a variant."""
    ranges = cal.ranges(alpha)
    chosen = [r.percentile for r in ranges.values()]
    return {"method": "per-tensor uint8 ranges over real tokens only (padding dropped), the percentile of each "
                      "chosen by the output error it causes", "texts": cal.texts,
            "tokens": int(max(len(x) for x in cal.rows.values())), "alpha": alpha,
            "smoothed_activations": len(cal.smoothable) if alpha else 0,
            "percentiles": {str(p): chosen.count(p) for p in PERCENTILES}, "activation_scales": "static"}


def write_qdq(src: Path, dst: Path, cal: Calibration, alpha: float, fmt: WeightFormat,
              exclude: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Write SRC smoothed by ALPHA (folded into its LayerNorms) with every quantizable MatMul not in EXCLUDE behind
    QuantizeLinear/DequantizeLinear: a static range per activation (shared by the MatMuls that read it), FMT
    weights per output channel. Returns the names of the MatMuls quantized."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    fold(model, cal.scales(alpha))  # the MatMuls now read the smoothed LayerNorm outputs
    ranges = cal.ranges(alpha)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    skip, done, names, nodes, added = set(exclude), {}, [], [], []
    for node in graph.node:
        if node.name not in cal.reads or node.name in skip:
            nodes.append(node)
            continue
        a, b = node.input
        if a not in done:
            done[a] = f"{PREFIX}/{len(done)}"
            r = ranges[cal.reads[node.name]]
            added += [numpy_helper.from_array(np.array(r.scale, np.float32), f"{done[a]}/scale"),
                      numpy_helper.from_array(np.array(r.zero_point, np.uint8), f"{done[a]}/zp")]
            nodes += [helper.make_node("QuantizeLinear", [a, f"{done[a]}/scale", f"{done[a]}/zp"], [f"{done[a]}/q"]),
                      helper.make_node("DequantizeLinear", [f"{done[a]}/q", f"{done[a]}/scale", f"{done[a]}/zp"],
                                       [f"{done[a]}/x"])]
        wq, wscale = quantize_weight(numpy_helper.to_array(inits[b]).astype(np.float32), fmt)
        zp = np.zeros(len(wscale), np.int8) if fmt.signed else np.full(len(wscale), 128, np.uint8)
        w = f"{PREFIX}/{node.name}"
        added += [numpy_helper.from_array(wq, f"{w}/q"), numpy_helper.from_array(wscale, f"{w}/scale"),
                  numpy_helper.from_array(zp, f"{w}/zp")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{w}/q", f"{w}/scale", f"{w}/zp"], [f"{w}/x"], axis=1))
        del node.input[:]
        node.input.extend([f"{done[a]}/x", f"{w}/x"])
        nodes.append(node)
        names.append(node.name)
    read = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    del graph.node[:]
    graph.node.extend(nodes)
    big = model.ByteSize() > TWO_GB
    onnx.save(model, str(dst), save_as_external_data=big, location=f"{Path(dst).name}_data" if big else None)
    return names


def search_plans(cal: Calibration, formats: list[str], attempt: Callable[[Plan], bool], score: Callable[[], float],
                 progress: Callable[[str], None]) -> dict[str, list[dict]]:
    """Per weight format: gate every layer quantized at each alpha of ALPHAS, keep the alpha the gate liked best,
    rank the layers at that alpha and search for the fewest kept in fp32 (plans.search). Returns the rankings."""
    rankings = {}
    for fmt in formats:
        gated = {}
        for alpha in ALPHAS:
            passed = attempt(Plan(f"{fmt}: alpha {alpha}: all layers quantized", weights=fmt, alpha=alpha, calibration=cal))
            gated[alpha] = (passed, score())
        alpha = max(ALPHAS, key=lambda a: gated[a])  # a pass first, then the best score
        progress(f"smoothing alpha {alpha} chosen by the gate for {fmt}")
        ranking = rank(cal, alpha, WEIGHT_FORMATS[fmt])
        rankings[fmt] = [r.to_dict() for r in ranking]

        def with_alpha(plan: Plan, alpha=alpha) -> bool:
            if not plan.exclude:  # gated above
                return gated[alpha][0]
            label = plan.label.replace(f"{fmt}: ", f"{fmt}: alpha {alpha}: ", 1)
            return attempt(dataclasses.replace(plan, label=label, alpha=alpha, calibration=cal))

        search([r.node for r in ranking], with_alpha, fmt)
    return rankings
