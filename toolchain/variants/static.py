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
their output; the full max wastes levels on the LayerNorm outputs). Every activation is smoothed (smooth.py:
LayerNorm outputs, attention's context, the GELU output) with its own alpha, the one of ALPHAS whose smoothing,
range and quantized weights move its MatMuls' outputs the least per token; one alpha for all (FALLBACK_ALPHAS)
is gated only if that misses, then the measured plan search keeps the most sensitive layers in fp32 until the
gate passes. On MiniLM with 7-bit weights (AVX2 without saturation) this passes with every layer quantized
(cosine mean 0.9960, min 0.9859), where one alpha for the LayerNorm outputs alone needed two FFN
down-projections in fp32. The graph is written as QuantizeLinear/DequantizeLinear pairs around each MatMul,
which ONNX Runtime fuses into one integer MatMul (MatMulIntegerToFloat) and other runtimes read as they are.
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

ALPHAS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)  # smoothing strengths each activation's is chosen from (0: no smoothing)
FALLBACK_ALPHAS = (0.75,)  # one strength for every activation, gated only when the per-activation choice misses
# (MiniLM: 0.75 passes too, mean/min 0.9959/0.9887 7-bit, 0.9973/0.9896 8-bit; 0.5 misses, 0.983/0.956: the GELU
# outputs need strong smoothing)
PERCENTILES = (99.99, 99.999, 100.0)  # clipping points each activation's range is chosen from
CALIB_TEXTS = 128  # calibration texts captured (real tokens only)
CHOICE_ROWS = 1024  # token rows the output errors that choose a percentile and an alpha are measured on
OUTLIER_ROWS = 64  # of which the rows with the largest |x| (the rare tokens clipping would wreck) always
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


Alpha = float | dict[str, float]  # one smoothing strength for every site, or one per activation


@dataclass
class Calibration:
    """The captured real-token inputs of every quantizable MatMul of one graph, and what is derived from them."""

    rows: dict[str, np.ndarray]  # activation -> (tokens, K) float32
    weights: dict[str, np.ndarray]  # MatMul node -> (K, N) fp32 weight
    reads: dict[str, str]  # MatMul node -> its activation
    smoothable: dict[str, tuple[str, ...]]  # activation -> the MatMuls a smoothing site applies to
    texts: int
    kinds: dict[str, str] = field(default_factory=dict)  # activation -> its site's kind (smooth.KINDS)
    _cache: dict = field(default_factory=dict, repr=False)

    def scales(self, alpha: Alpha) -> dict[str, np.ndarray]:
        """Activation -> smoothing factors s for ALPHA (every smoothable site)."""
        return {act: self._factors(act, _alpha_of(alpha, act)) for act in self.smoothable}

    def ranges(self, alpha: Alpha) -> dict[str, Range]:
        """Activation -> its static range once smoothed by ALPHA, the percentile chosen by output error."""
        return {act: self._range(act, _alpha_of(alpha, act) if act in self.smoothable else 0.0) for act in self.rows}

    def alphas(self, fmt: WeightFormat) -> dict[str, float]:
        """Activation -> the alpha of ALPHAS whose smoothing, static range and FMT weights move the outputs of the
        MatMuls reading it the least (per-token relative error, _error): each site's own strength (MiniLM's
        LayerNorm outputs do best near 0.7, its GELU outputs near 0.9, one of them unsmoothed)."""
        key = ("alphas", fmt.name)
        if key not in self._cache:
            self._cache[key] = {act: min(ALPHAS, key=lambda a, act=act: self._error(act, a, fmt))
                                for act in self.smoothable}
        return self._cache[key]

    def _factors(self, act: str, alpha: float) -> np.ndarray:
        key = ("s", act, alpha)
        if key not in self._cache:
            w_max = np.max([np.abs(self.weights[n]).max(axis=1) for n in self.smoothable[act]], axis=0)
            self._cache[key] = factors(np.abs(self.rows[act]).max(axis=0), w_max, alpha)
        return self._cache[key]

    def _range(self, act: str, alpha: float) -> Range:
        key = ("range", act, alpha)
        if key not in self._cache:
            s = self._factors(act, alpha) if act in self.smoothable else None
            x, ws = self._smoothed(act, s), self._consumers(act, s)
            rows, weight = self._sample(act)
            self._cache[key] = _best_range(x, x[rows], weight, ws)
        return self._cache[key]

    def _error(self, act: str, alpha: float, fmt: WeightFormat) -> float:
        """ACT's MatMuls' relative output error at ALPHA (static range, FMT weights), per token, averaged over the
        sample rows and summed over the MatMuls. Per token, not over the whole tensor: a tensor-wide norm is ruled
        by the few tokens with huge outputs, and the gate's worst text is a short one whose every token counts
        (MiniLM, 7-bit: mean cosine 0.996 either way, min 0.986 per token, 0.978 tensor-wide)."""
        rows, weight = self._sample(act)
        s = self._factors(act, alpha)
        xq = self._range(act, alpha).fake(self._smoothed(act, s)[rows])
        err = 0.0
        for node, w in zip(self._nodes(act), self._consumers(act, s)):
            exact = self.rows[act][rows] @ self.weights[node]
            diff = np.linalg.norm(exact - xq @ dequantized(w, fmt), axis=1)
            err += float(np.average(diff / np.maximum(np.linalg.norm(exact, axis=1), 1e-12), weights=weight))
        return err

    def _sample(self, act: str) -> tuple[np.ndarray, np.ndarray]:
        """The rows errors are measured on, and the weight of each: the OUTLIER_ROWS with the largest |x| (weight 1:
        all of them are there), and a seeded sample of the rest, each standing for the rows left out (a stratified
        sample: the rare tokens clipping would wreck are never missed, nor over-counted)."""
        x = self.rows[act]
        if len(x) <= CHOICE_ROWS:
            return np.arange(len(x)), np.ones(len(x))
        top = np.argsort(-np.abs(x).max(axis=1))[:OUTLIER_ROWS]
        rest = np.setdiff1d(np.arange(len(x)), top)
        picked = np.random.default_rng(0).choice(rest, CHOICE_ROWS - len(top), replace=False)
        weight = np.concatenate([np.ones(len(top)), np.full(len(picked), len(rest) / len(picked))])
        return np.concatenate([top, picked]), weight

    def _nodes(self, act: str) -> list[str]:
        return [n for n, a in self.reads.items() if a == act]

    def _smoothed(self, act: str, s: np.ndarray | None) -> np.ndarray:
        return self.rows[act] / s if s is not None else self.rows[act]

    def _consumers(self, act: str, s: np.ndarray | None) -> list[np.ndarray]:
        ws = [self.weights[n] for n in self._nodes(act)]
        return [w * s[:, None] for w in ws] if s is not None else ws


def _alpha_of(alpha: Alpha, act: str) -> float:
    return alpha.get(act, 0.0) if isinstance(alpha, dict) else float(alpha)


def dequantized(w: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """W as FMT's per-channel integer weights give it back."""
    wq, scale = quantize_weight(w, fmt)
    return (wq.astype(np.float32) - (0 if fmt.signed else 128)) * scale


def calibrate(src: Path, artifact: Path, data: TextSet, limit: int = CALIB_TEXTS) -> Calibration:
    """One fp32 pass over DATA's first LIMIT texts: every quantizable MatMul's input rows, padding left out."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(src)).graph
    inits = {i.name: i for i in graph.initializer}
    rows = {a: x.astype(np.float32) for a, x in capture(src, artifact, data, limit).items()}
    nodes = quantizable(graph)
    weights = {n.name: numpy_helper.to_array(inits[n.input[1]]).astype(np.float32) for n in nodes}
    found = sites(graph)
    return Calibration(rows, weights, {n.name: n.input[0] for n in nodes}, {s.activation: s.matmuls for s in found},
                       min(limit, len(data.texts)), {s.activation: s.kind for s in found})


def _best_range(x: np.ndarray, sample: np.ndarray, weight: np.ndarray, weights: list[np.ndarray]) -> Range:
    """The percentile (of all of X) whose clipping and rounding move SAMPLE @ W the least (summed relative error over
    WEIGHTS, each sample row counted WEIGHT times)."""
    exact = [sample @ w for w in weights]

    def norm(m: np.ndarray) -> float:
        return float(np.sqrt(np.sum(weight * np.sum(m * m, axis=1))))

    def error(r: Range) -> float:
        xq = r.fake(sample)
        return sum(norm(e - xq @ w) / max(norm(e), 1e-12) for e, w in zip(exact, weights))

    return min(Range.each(x, PERCENTILES), key=error)


def rank(cal: Calibration, alpha: Alpha, fmt: WeightFormat) -> list[Sensitivity]:
    """Every quantizable layer by the relative error of its output when it alone is quantized (smoothed by ALPHA,
    static range, FMT weights), most sensitive first: the ranking plans.search reads."""
    s, ranges = cal.scales(alpha), cal.ranges(alpha)
    scores = []
    for node, act in cal.reads.items():
        x, w = cal.rows[act], cal.weights[node]
        xs, ws = (x / s[act], w * s[act][:, None]) if act in s else (x, w)
        exact = x @ w
        got = ranges[act].fake(xs) @ dequantized(ws, fmt)
        err = np.linalg.norm(exact - got) / max(float(np.linalg.norm(exact)), 1e-12)
        scores.append(Sensitivity(node, float(err), tuple(w.shape)))
    return sorted(scores, key=lambda r: -r.error)


def describe(cal: Calibration, alpha: Alpha) -> dict:
    """The manifest's record of the calibration and smoothing behind a variant."""
    chosen = [r.percentile for r in cal.ranges(alpha).values()]
    alphas = [_alpha_of(alpha, act) for act in cal.smoothable]
    kinds = [cal.kinds.get(act, "norm") for act, a in zip(cal.smoothable, alphas) if a]
    return {"method": "per-tensor uint8 ranges over real tokens only (padding dropped), the percentile of each "
                      "chosen by the output error it causes", "texts": cal.texts,
            "tokens": int(max(len(x) for x in cal.rows.values())),
            "alpha": "per activation, by output error" if isinstance(alpha, dict) else alpha,
            "alphas": {str(a): alphas.count(a) for a in sorted(set(alphas))},
            "smoothed_activations": {k: kinds.count(k) for k in sorted(set(kinds))},
            "percentiles": {str(p): chosen.count(p) for p in PERCENTILES}, "activation_scales": "static"}


def write_qdq(src: Path, dst: Path, cal: Calibration, alpha: Alpha, fmt: WeightFormat,
              exclude: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Write SRC smoothed by ALPHA (smooth.fold) with every quantizable MatMul not in EXCLUDE behind
    QuantizeLinear/DequantizeLinear: a static range per activation (shared by the MatMuls that read it), FMT
    weights per output channel. Returns the names of the MatMuls quantized."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    skip = set(exclude)
    fold(model, cal.scales(alpha), {n for n in cal.reads if n not in skip})  # the MatMuls now read smoothed inputs
    ranges = cal.ranges(alpha)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done, names, nodes, added = {}, [], [], []
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
    """Per weight format: every layer quantized with each activation's own alpha (Calibration.alphas), then, only if
    that misses the gate, with one alpha everywhere (FALLBACK_ALPHAS); the layers are ranked at the alpha that passed
    (else the one the gate scored best), and the fewest kept in fp32 with which the gate passes are searched
    (plans.search). Returns the rankings."""
    rankings = {}
    for fmt in formats:
        choices: list[Alpha] = [cal.alphas(WEIGHT_FORMATS[fmt]), *FALLBACK_ALPHAS]
        gated: list[tuple[bool, float]] = []
        for alpha in choices:
            passed = attempt(Plan(f"{fmt}: {_named(alpha)}: all layers quantized", weights=fmt, alpha=alpha,
                                  calibration=cal))
            gated.append((passed, score()))
            if passed:
                break
        best = max(range(len(gated)), key=lambda i: gated[i])  # a pass first, then the best score
        alpha = choices[best]
        progress(f"smoothing for {fmt}: {_named(alpha)}, chosen by the gate")
        ranking = rank(cal, alpha, WEIGHT_FORMATS[fmt])
        rankings[fmt] = [r.to_dict() for r in ranking]

        def with_alpha(plan: Plan, alpha=alpha, passed=gated[best][0]) -> bool:
            if not plan.exclude:  # gated above
                return passed
            label = plan.label.replace(f"{fmt}: ", f"{fmt}: {_named(alpha)}: ", 1)
            return attempt(dataclasses.replace(plan, label=label, alpha=alpha, calibration=cal))

        search([r.node for r in ranking], with_alpha, fmt)
    return rankings


def _named(alpha: Alpha) -> str:
    if not isinstance(alpha, dict):
        return f"alpha {alpha}"
    counts = {a: list(alpha.values()).count(a) for a in sorted(set(alpha.values()))}
    return "alpha per activation (" + ", ".join(f"{a} x{n}" for a, n in counts.items()) + ")"
