"""Measured sensitivity: which layers lose the most when quantized, on the calibration data itself.

One fp32 run over the calibration texts captures the input of every quantizable MatMul; each layer is then
quantized alone, in numpy, exactly as rowquant.py will do it, and scored by the relative error of its
output, ||XW - Q(X)Q(W)|| / ||XW||, on the real tokens only (padding rows left out). This is the per-layer
output error of onnxruntime's quantization debugging tools (qdq_loss_debug), without building one graph
per layer: ranking MiniLM's 36 projections costs one fp32 pass and a few seconds of numpy instead of 36 gated
builds. plans.py searches mixed-precision plans from this ranking; each plan is then gated for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.data.texts import TextSet
from toolchain.runtime.manifest import REFERENCE_VARIANT
from toolchain.runtime.model import load
from toolchain.variants.rowquant import WeightFormat, quantizable, simulate

RANK_TEXTS = 64  # calibration texts the ranking reads
MAX_ROWS = 4096  # token rows kept per layer input (a random, seeded sample beyond it)
BATCH = 8


@dataclass(frozen=True)
class Sensitivity:
    """One layer: its node name, its output's relative error when quantized alone, its weight shape."""

    node: str
    error: float
    shape: tuple[int, int]

    def to_dict(self) -> dict:
        return {"node": self.node, "error": round(self.error, 6), "shape": list(self.shape)}


def capture(src: Path, artifact: Path, data: TextSet, limit: int = RANK_TEXTS) -> dict[str, np.ndarray]:
    """Activation name -> (rows, K) inputs of the quantizable MatMuls over DATA's first LIMIT texts, real tokens only."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(src))
    wanted = sorted({n.input[0] for n in quantizable(model.graph)})
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(a, onnx.TensorProto.FLOAT, None)
                              for a in wanted if a not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every captured tensor
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    runtime = load(artifact, variant=REFERENCE_VARIANT, provider="cpu")
    inputs = {i.name for i in session.get_inputs()}
    texts = data.texts[:limit]
    rows: dict[str, list[np.ndarray]] = {a: [] for a in wanted}
    for start in range(0, len(texts), BATCH):
        feeds, mask = _feeds(runtime, texts[start : start + BATCH], inputs, src)
        outs = session.run(wanted, feeds)
        real = np.asarray(mask).reshape(-1) > 0
        for a, x in zip(wanted, outs):
            flat = x.reshape(-1, x.shape[-1])
            rows[a].append(flat[real] if len(flat) == len(real) else flat)
    rng = np.random.default_rng(0)
    out = {}
    for a, parts in rows.items():
        x = np.concatenate(parts).astype(np.float64)
        out[a] = x[rng.choice(len(x), MAX_ROWS, replace=False)] if len(x) > MAX_ROWS else x
    return out


def _feeds(runtime, texts: list[str], inputs: set[str], src: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The graph's feeds for TEXTS as the runtime makes them; a decoder's prompt runs with an empty KV cache (as
    its gate's teacher-forced windows do). A graph that needs anything else is not ranked (NotImplementedError)."""
    feeds, mask = runtime.encode(texts)
    if inputs - set(feeds) and runtime.manifest.task == "text-generation":
        gen = runtime.generator
        empty = np.zeros((feeds["input_ids"].shape[0], gen.kv_heads, 0, gen.head_dim), dtype=gen.kv_type)
        feeds.update({name: empty for name in gen.past})
        if gen.takes_positions:
            feeds["position_ids"] = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    missing = inputs - set(feeds)
    if missing:
        raise NotImplementedError(f"the ranking cannot feed {src}: it also needs {', '.join(sorted(missing))}")
    return {k: v for k, v in feeds.items() if k in inputs}, mask


def rank(src: Path, artifact: Path, data: TextSet, formats: list[WeightFormat],
         limit: int = RANK_TEXTS) -> dict[str, list[Sensitivity]]:
    """Per weight format, every quantizable layer of SRC, most sensitive first (one fp32 pass for all formats)."""
    import onnx

    graph = onnx.load(str(src)).graph
    inputs = capture(src, artifact, data, limit)
    return {fmt.name: _scores(graph, inputs, fmt) for fmt in formats}


def _scores(graph, inputs: dict[str, np.ndarray], fmt: WeightFormat) -> list[Sensitivity]:
    import onnx

    weights = {i.name: i for i in graph.initializer}
    scores = []
    for node in quantizable(graph):
        w = onnx.numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
        x = inputs[node.input[0]]
        exact = x @ w
        err = np.linalg.norm(exact - simulate(x, w, fmt)) / max(float(np.linalg.norm(exact)), 1e-12)
        scores.append(Sensitivity(node.name, float(err), tuple(w.shape)))
    return sorted(scores, key=lambda s: -s.error)
