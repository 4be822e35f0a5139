"""SmoothQuant smoothing, folded offline into the fp32 ONNX graph (Xiao et al., 2023).

A static per-tensor activation scale must cover every channel of its tensor, and a transformer's LayerNorm
outputs have a few channels far larger than the rest (MiniLM: max |x| 28 in one channel, median 1.8), so one
scale leaves the ordinary channels a handful of levels. Dividing channel j of the activation by
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplying row j of every weight that reads it by s_j leaves
X W unchanged and moves part of the range into the weights, which are quantized per output channel.

The division is folded into the LayerNorm that produces X (gamma and beta divided by s), so the graph runs
no extra op: in place when the LayerNorm's output feeds only the smoothed MatMuls (pre-LN blocks), and as a
scaled copy of the LayerNorm when its output is also the residual stream (post-LN BERT, where every
LayerNorm feeds an Add as well: dividing the residual by s would change the model). Folding into the
QuantizeLinear's scale instead (per-axis quantization) needs no copy, but ONNX Runtime's per-axis
QuantizeLinear ran 5x slower than the per-tensor one on a 128 x 384 activation, which costs more than a
LayerNorm. Smoothing alone is exact up to float rounding (tests/variants/test_static.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolchain.variants.rowquant import quantizable

PREFIX = "smooth"
NORMS = ("LayerNormalization",)  # ops whose per-channel affine weights can absorb 1 / s
FLOOR = 1e-5  # no channel's max is taken as smaller (an all-zero channel: no 0 ** alpha / 0)
SHAPE_ONLY = ("Shape",)  # consumers that read the tensor's shape, never its values


@dataclass(frozen=True)
class Site:
    """One smoothable activation: the norm that writes it and the quantizable MatMuls that read it."""

    activation: str
    norm: str  # the norm node's name
    matmuls: tuple[str, ...]
    exclusive: bool  # True: nothing else reads the activation's values (the fold is in place)


def sites(graph) -> list[Site]:
    """Activations written by a LayerNormalization (constant gamma, last-axis) and read by quantizable MatMuls."""
    consts = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in set(n.input):
            readers.setdefault(i, []).append(n)
    found: dict[str, list[str]] = {}
    for node in quantizable(graph):
        found.setdefault(node.input[0], []).append(node.name)
    out = []
    for act, names in found.items():
        norm = producer.get(act)
        if norm is None or norm.op_type not in NORMS or not _affine_last_axis(norm, consts) or act != norm.output[0]:
            continue
        others = [r for r in readers[act] if r.name not in names and r.op_type not in SHAPE_ONLY]
        out.append(Site(act, norm.name, tuple(names), exclusive=not others))
    return out


def _affine_last_axis(node, consts: set[str]) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return axis == -1 and all(i in consts for i in node.input[1:] if i)


def factors(x_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha): X_MAX (K,) per input channel over the calibration tokens, W_MAX
    (K,) per input row over every weight that reads the activation. alpha 0 means no smoothing (s = 1)."""
    if alpha == 0:
        return np.ones_like(x_max, dtype=np.float32)
    s = np.maximum(x_max, FLOOR) ** alpha / np.maximum(w_max, FLOOR) ** (1 - alpha)
    return s.astype(np.float32)


def fold(model, scales: dict[str, np.ndarray]) -> dict[str, str]:
    """Fold S (activation -> (K,) factors) into MODEL in place: the norm's gamma and beta divided by s (in place, or
    in a scaled copy of the norm when other ops read its output), each reading MatMul's weight rows multiplied by s.
    Returns activation -> the name the smoothed MatMuls now read."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    smoothed: dict[str, str] = {}
    copies: dict[str, object] = {}  # norm name -> its scaled copy, inserted after it below
    for site in sites(graph):
        if site.activation not in scales:
            continue
        s = scales[site.activation].astype(np.float32)
        norm = by_name[site.norm]
        target = norm if site.exclusive else _copy(norm, f"{PREFIX}/{site.activation}")
        if target is not norm:
            copies[norm.name] = target
        for k, name in enumerate(target.input[1:3], start=1):
            if name:
                value = numpy_helper.to_array(inits[name]).astype(np.float32) / s
                target.input[k] = _add(graph, inits, f"{PREFIX}/{site.norm}/{k}", value)
        for mm in site.matmuls:
            node = by_name[mm]
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32) * s[:, None]
            node.input[1] = _add(graph, inits, f"{PREFIX}/{mm}/weight", w)
            node.input[0] = target.output[0]
        smoothed[site.activation] = target.output[0]
    nodes = []
    for n in graph.node:  # each copy right after its norm: the graph stays topologically sorted
        nodes += [n, copies[n.name]] if n.name in copies else [n]
    read = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in read]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return smoothed


def _copy(norm, output: str):
    """A copy of NORM (same input, same attributes) writing OUTPUT."""
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(norm)
    copy.name = f"{PREFIX}/{norm.name}"
    del copy.output[:]
    copy.output.append(output)
    return copy


def _add(graph, inits: dict, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    tensor = numpy_helper.from_array(value.astype(np.float32), name)
    graph.initializer.append(tensor)
    inits[name] = tensor
    return name
