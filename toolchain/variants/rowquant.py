"""Per-row dynamic int8: every activation row (one token) gets its own scale, computed inside the graph.

Why not onnxruntime's ``quantize_dynamic``: it computes ONE activation scale per call over the whole batch,
padding included, so a text's result depends on the other texts in its request, and one outlier token
(BERT's [SEP], a long text's rare word) costs every other token its precision (MiniLM: cosine to fp32
mean 0.990, min 0.974, below the default gate). Here each row is quantized symmetrically around its own
max |x| (a row depends on itself only, so the result is the same whatever else is in the batch; invariance.py
measures it), stored as uint8 with a fixed zero point of 128 so that ONNX Runtime's MatMulIntegerToFloat,
which takes one scalar zero point but a per-row scale, runs it in one op (as fast as quantize_dynamic's
fused per-tensor kernel on MiniLM); weights are quantized per output channel in one of WEIGHT_FORMATS. The integer product is exact in int32 on every CPU whose kernels do not saturate, so the
gate measured here holds wherever the format's kernels are exact (see hardware.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREFIX = "rowq"  # every name this module adds starts with it
ACTIVATION_LEVELS = 127  # |q| <= 127 around zero point 128: uint8 1..255
TWO_GB = 2**31 - 1
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib ops


@dataclass(frozen=True)
class WeightFormat:
    """How weights are stored for MatMulInteger (activations are always uint8 around 128)."""

    name: str
    signed: bool
    levels: int  # largest |q|: 127 for 8-bit, 63 for 7-bit
    why: str

    @property
    def reduce_range(self) -> bool:
        return self.levels < 127


WEIGHT_FORMATS = {f.name: f for f in (
    WeightFormat("u8s8", True, 127, "int8 weights: exact in VNNI and ARM dot-product kernels; u8*s8 pairs can "
                                    "saturate AVX2's 16-bit vpmaddubsw, so judge it only on such CPUs"),
    WeightFormat("u8s8-7bit", True, 63, "7-bit weights: u8*s8 pairs cannot saturate AVX2's vpmaddubsw, "
                                        "at the cost of one bit of weight precision"),
    WeightFormat("u8u8", False, 127, "uint8 weights around 128: AVX2's u8u8 kernel widens to 16 bits and never "
                                     "saturates, with full 8-bit weights; slower than u8s8 where VNNI exists"),
)}


def quantizable(graph) -> list:
    """The MatMul nodes whose second input is a 2-D float constant (projections; not attention's Q.K^T)."""
    weights = {i.name: i for i in graph.initializer}
    return [n for n in graph.node if _projection(n, weights)]


def _projection(node, weights: dict) -> bool:
    import onnx

    return (node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in weights
            and len(weights[node.input[1]].dims) == 2 and weights[node.input[1]].data_type == onnx.TensorProto.FLOAT)


def quantize_weight(w: np.ndarray, fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) float -> integer weights (int8, or uint8 around 128) and the (N,) per-channel scales."""
    amax = np.abs(w).max(axis=0)
    scale = np.where(amax > 0, amax / fmt.levels, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -fmt.levels, fmt.levels)
    return (q.astype(np.int8) if fmt.signed else (q + 128).astype(np.uint8)), scale


def simulate(x: np.ndarray, w: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """What the quantized graph computes for rows X (R, K) times W (K, N), in numpy (sensitivity.py)."""
    amax = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-8)
    s = amax / ACTIVATION_LEVELS
    xq = np.clip(np.round(x / s), -ACTIVATION_LEVELS, ACTIVATION_LEVELS)
    wq, ws = quantize_weight(w, fmt)
    wq = wq.astype(np.float64) - (0 if fmt.signed else 128)
    return (xq @ wq) * s * ws


def rowquant(src: Path, dst: Path, fmt: WeightFormat, exclude: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Write SRC with every quantizable MatMul not in EXCLUDE replaced by its per-row int8 form; returns the
    names of the nodes quantized. Rows shared by several MatMuls (Q, K and V read one input) are quantized once."""
    import onnx

    model = onnx.load(str(src))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    weights = {i.name: i for i in graph.initializer}
    skip = set(exclude)
    added = [_const("one", np.array(1.0, np.float32)), _const("zp128", np.array(128, np.uint8)),
             _const("inv_levels", np.array(1 / ACTIVATION_LEVELS, np.float32)), _const("eps", np.array(1e-8, np.float32))]
    if opset >= 18:
        added.append(_const("axes", np.array([-1], np.int64)))
    if not fmt.signed:
        added.append(_const("wzp", np.array(128, np.uint8)))
    rows: dict[str, str] = {}  # activation -> its quantized rows' name prefix
    done_weights: set[str] = set()
    nodes, names = [], []
    for node in graph.node:
        if not _projection(node, weights) or node.name in skip:
            nodes.append(node)
            continue
        a, b = node.input
        if a not in rows:
            rows[a] = f"{PREFIX}/{len(rows)}"
            nodes.extend(_quantize_rows(a, rows[a], opset))
        if b not in done_weights:
            wq, scale = quantize_weight(onnx.numpy_helper.to_array(weights[b]).astype(np.float32), fmt)
            added += [onnx.numpy_helper.from_array(wq, f"{PREFIX}/{b}/q"),
                      onnx.numpy_helper.from_array(scale, f"{PREFIX}/{b}/scale")]
            done_weights.add(b)
        nodes.extend(_integer_matmul(node, rows[a], b, fmt))
        names.append(node.name)
    still_read = {i for n in nodes for i in n.input}
    kept = [i for i in graph.initializer if i.name in still_read or i.name not in done_weights]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    del graph.node[:]
    graph.node.extend(nodes)
    if names and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    big = model.ByteSize() > TWO_GB
    onnx.save(model, str(dst), save_as_external_data=big, location=f"{Path(dst).name}_data" if big else None)
    return names


def _const(name: str, value: np.ndarray):
    import onnx

    return onnx.numpy_helper.from_array(value, f"{PREFIX}/{name}")


def _quantize_rows(a: str, p: str, opset: int) -> list:
    """A (..., K) -> P/q uint8 (round(A / s) + 128) and P/s (..., 1), s = max|row| / 127."""
    from onnx import helper

    reduce = (helper.make_node("ReduceMax", [f"{p}/abs", f"{PREFIX}/axes"], [f"{p}/max"], keepdims=1) if opset >= 18
              else helper.make_node("ReduceMax", [f"{p}/abs"], [f"{p}/max"], axes=[-1], keepdims=1))
    return [helper.make_node("Abs", [a], [f"{p}/abs"]), reduce,
            helper.make_node("Max", [f"{p}/max", f"{PREFIX}/eps"], [f"{p}/max_eps"]),  # an all-zero row: no 0 / 0
            helper.make_node("Mul", [f"{p}/max_eps", f"{PREFIX}/inv_levels"], [f"{p}/s"]),
            helper.make_node("Div", [a, f"{p}/s"], [f"{p}/x"]),
            helper.make_node("QuantizeLinear", [f"{p}/x", f"{PREFIX}/one", f"{PREFIX}/zp128"], [f"{p}/q"])]


def _integer_matmul(node, p: str, b: str, fmt: WeightFormat) -> list:
    """The node's output from the quantized rows in one op: onnxruntime's MatMulIntegerToFloat multiplies the int32
    product by the row scale (one per row: it broadcasts like its output) and the channel scales in the GEMM."""
    from onnx import helper

    feeds = [f"{p}/q", f"{PREFIX}/{b}/q", f"{p}/s", f"{PREFIX}/{b}/scale", f"{PREFIX}/zp128"]
    if not fmt.signed:
        feeds.append(f"{PREFIX}/wzp")
    return [helper.make_node("MatMulIntegerToFloat", feeds, [node.output[0]], name=node.name, domain=MS_DOMAIN)]
