"""SmoothQuant smoothing, folded offline into the fp32 ONNX graph (Xiao et al., 2023).

A static per-tensor activation scale must cover every channel of its tensor, and a transformer's activations
have a few channels far larger than the rest (MiniLM: a LayerNorm output with max |x| 28 in one channel, median
1.8; the FFN's GELU output up to 25, median 1.5), so one scale leaves the ordinary channels a handful of levels.
Dividing channel j of the activation by s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplying row j of
every weight that reads it by s_j leaves X W unchanged and moves part of the range into the weights, which are
quantized per output channel. Every activation a quantizable MatMul reads is a site, of one of three kinds:

- "norm": written by a LayerNorm; 1 / s is folded into its gamma and beta, so the graph runs no extra op: in
  place when the LayerNorm's output feeds only the smoothed MatMuls (pre-LN blocks), and as a scaled copy of the
  LayerNorm when its output is also the residual stream (post-LN BERT: dividing the residual by s would change
  the model).
- "value": attention's context (probs @ V, heads merged), read by the attention output projection. It is linear
  in V channel by channel (Reshape, Transpose and the rhs of a MatMul keep each channel apart), so 1 / s is
  folded into the value projection's weight columns and bias: no extra op either, and the value projection's own
  per-channel weight quantization does not see a column scale.
- "mul": anything else (the GELU output the FFN down-projection reads: no linear op to fold into). One Mul by
  1 / s runs before the QuantizeLinear, only for the MatMuls that are quantized: an elementwise op on the
  activation, which costs far less than leaving its MatMul in fp32.

Folding into the QuantizeLinear's scale instead (per-axis quantization) needs no op, but ONNX Runtime's per-axis
QuantizeLinear ran 5x slower than the per-tensor one on a 128 x 384 activation. Smoothing alone is exact up to
float rounding (tests/variants/test_static.py and test_smooth.py check it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolchain.variants.rowquant import quantizable

PREFIX = "smooth"
NORMS = ("LayerNormalization",)  # ops whose per-channel affine weights can absorb 1 / s
FLOOR = 1e-5  # no channel's max is taken as smaller (an all-zero channel: no 0 ** alpha / 0)
SHAPE_ONLY = ("Shape",)  # consumers that read the tensor's shape, never its values
KINDS = ("norm", "value", "mul")


@dataclass(frozen=True)
class Site:
    """One smoothable activation: how 1 / s is applied (KINDS), the nodes that absorb it (the norm; the value
    projection's MatMul and bias Add; none for a Mul), and the quantizable MatMuls that read it."""

    activation: str
    kind: str
    sources: tuple[str, ...]
    matmuls: tuple[str, ...]
    exclusive: bool  # True: nothing else reads the activation's values (a norm is folded in place)


@dataclass(frozen=True)
class _Caller:
    """The reader of a graph output: whoever runs the model."""

    name: str = ""
    op_type: str = "graph output"


def sites(graph) -> list[Site]:
    """Every activation read by quantizable MatMuls, as a norm site, a value site, or else a mul site."""
    consts = constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in set(n.input):
            readers.setdefault(i, []).append(n)
    for o in graph.output:  # a graph output is read by the caller: smoothing it would change the model
        readers.setdefault(o.name, []).append(_Caller())
    found: dict[str, list[str]] = {}
    for node in quantizable(graph):
        found.setdefault(node.input[0], []).append(node.name)
    out = []
    for act, names in found.items():
        others = [r for r in readers[act] if r.name not in names and r.op_type not in SHAPE_ONLY]
        norm = producer.get(act)
        if norm is not None and norm.op_type in NORMS and _affine_last_axis(norm, consts) and act == norm.output[0]:
            out.append(Site(act, "norm", (norm.name,), tuple(names), exclusive=not others))
            continue
        value = None if others else _value_path(act, producer, readers, consts)
        if value:
            out.append(Site(act, "value", value, tuple(names), exclusive=True))
        else:
            out.append(Site(act, "mul", (), tuple(names), exclusive=not others))
    return out


def constants(graph) -> dict:
    """Name -> initializer, for the initializers and for what Identity nodes copy from them (exporters write one
    Identity per duplicate of a tied or equal parameter: a tiny BERT's zero biases and unit LayerNorm gammas)."""
    consts = {i.name: i for i in graph.initializer}
    for n in graph.node:  # in topological order: a chain of Identities resolves as it goes
        if n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
    return consts


def _affine_last_axis(node, consts) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return axis == -1 and all(i in consts for i in node.input[1:] if i)


def _value_path(act: str, producer: dict, readers: dict, consts: dict) -> tuple[str, str] | None:
    """(value MatMul, bias Add) when ACT is, channel by channel, a linear image of a projection's output plus bias:
    back from ACT through Reshapes, Transposes that keep the last axis last (and compose to no permutation), and at
    most one MatMul entered by its rhs (attention's probs @ V), every tensor on the way read by one node only, to an
    Add of a 1-D constant bias and a quantizable MatMul's output. Else None."""
    from onnx import numpy_helper

    name, perm, crossed = act, None, 0
    while True:
        node = producer.get(name)
        if node is None:
            return None
        if name != act and len([r for r in readers.get(name, []) if r.op_type not in SHAPE_ONLY]) != 1:
            return None
        if node.op_type == "Reshape":
            name = node.input[0]
        elif node.op_type == "Transpose":
            p = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if not p or p[-1] != len(p) - 1 or (perm is not None and len(perm) != len(p)):
                return None
            perm = p if perm is None else [p[i] for i in perm]
            name = node.input[0]
        elif node.op_type == "MatMul" and not crossed and node.input[1] not in consts:
            crossed, name = 1, node.input[1]
        elif node.op_type == "Add" and len(node.input) == 2:
            bias = [i for i in node.input if i in consts]
            other = [i for i in node.input if i not in consts]
            mm = producer.get(other[0]) if len(bias) == 1 and len(other) == 1 else None
            if mm is None or mm.op_type != "MatMul" or mm.input[1] not in consts or len(readers.get(other[0], [])) != 1:
                return None
            b, w = numpy_helper.to_array(consts[bias[0]]), consts[mm.input[1]]
            if b.ndim != 1 or len(w.dims) != 2 or b.shape[0] != w.dims[1]:
                return None
            if perm is not None and perm != sorted(perm):
                return None
            return mm.name, node.name
        else:
            return None


def factors(x_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha): X_MAX (K,) per input channel over the calibration tokens, W_MAX
    (K,) per input row over every weight that reads the activation. alpha 0 means no smoothing (s = 1)."""
    if alpha == 0:
        return np.ones_like(x_max, dtype=np.float32)
    s = np.maximum(x_max, FLOOR) ** alpha / np.maximum(w_max, FLOOR) ** (1 - alpha)
    return s.astype(np.float32)


def fold(model, scales: dict[str, np.ndarray], quantized: set[str] | None = None) -> dict[str, str]:
    """Apply S (activation -> (K,) factors) to MODEL in place: 1 / s folded into each norm site's gamma and beta (in
    place, or in a scaled copy when other ops read its output) and into each value site's projection; a Mul by 1 / s
    for each mul site, read only by its MatMuls in QUANTIZED (default: all; a MatMul left in fp32 needs no
    smoothing); every smoothed MatMul's weight rows multiplied by s. Sites whose s is all ones are left alone.
    Returns activation -> the name the smoothed MatMuls now read."""
    graph = model.graph
    inits = constants(graph)
    by_name = {n.name: n for n in graph.node}
    smoothed: dict[str, str] = {}
    after: dict[str, object] = {}  # node name -> a node inserted right after it (a norm's scaled copy)
    before: dict[str, object] = {}  # node name -> a node inserted right before it (a mul site's Mul)
    for site in sites(graph):
        s = scales.get(site.activation)
        if s is None or np.all(s == 1):
            continue
        s = s.astype(np.float32)
        matmuls = [m for m in site.matmuls if quantized is None or m in quantized or site.kind != "mul"]
        if not matmuls:
            continue
        if site.kind == "norm":
            source = _fold_norm(graph, inits, by_name[site.sources[0]], site, s, after)
        elif site.kind == "value":
            _fold_value(graph, inits, [by_name[n] for n in site.sources], s)
            source = site.activation
        else:
            source = f"{PREFIX}/{site.activation}/x"
            inv = _add(graph, inits, f"{PREFIX}/{site.activation}/inv_s", 1 / s)
            before[matmuls[0]] = _mul(site.activation, inv, source)
        for mm in matmuls:
            node = by_name[mm]
            w = _array(inits[node.input[1]]) * s[:, None]
            node.input[1] = _add(graph, inits, f"{PREFIX}/{mm}/weight", w)
            node.input[0] = source
        smoothed[site.activation] = source
    _rebuild(graph, before, after)
    return smoothed


def _fold_norm(graph, inits: dict, norm, site: Site, s: np.ndarray, after: dict) -> str:
    """1 / S into NORM's gamma and beta (or those of a copy of it, when its output is also read elsewhere)."""
    target = norm if site.exclusive else _copy(norm, f"{PREFIX}/{site.activation}")
    if target is not norm:
        after[norm.name] = target
    for k, name in enumerate(target.input[1:3], start=1):
        if name:
            target.input[k] = _add(graph, inits, f"{PREFIX}/{norm.name}/{k}", _array(inits[name]) / s)
    return target.output[0]


def _fold_value(graph, inits: dict, nodes: list, s: np.ndarray) -> None:
    """1 / S into the value projection's weight columns and bias: every channel of the context it feeds divided."""
    matmul, add = nodes
    matmul.input[1] = _add(graph, inits, f"{PREFIX}/{matmul.name}/columns", _array(inits[matmul.input[1]]) / s[None, :])
    k = next(i for i, name in enumerate(add.input) if name in inits)
    add.input[k] = _add(graph, inits, f"{PREFIX}/{add.name}/bias", _array(inits[add.input[k]]) / s)


def _rebuild(graph, before: dict, after: dict) -> None:
    """The nodes with BEFORE's and AFTER's inserted in place (the graph stays topologically sorted), and only the
    initializers still read."""
    nodes = []
    for n in graph.node:
        nodes += ([before[n.name]] if n.name in before else []) + [n] + ([after[n.name]] if n.name in after else [])
    read = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in read]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _copy(norm, output: str):
    """A copy of NORM (same input, same attributes) writing OUTPUT."""
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(norm)
    copy.name = f"{PREFIX}/{norm.name}"
    del copy.output[:]
    copy.output.append(output)
    return copy


def _mul(x: str, inv: str, out: str):
    from onnx import helper

    return helper.make_node("Mul", [x, inv], [out], name=out)


def _array(tensor) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor).astype(np.float32)


def _add(graph, inits: dict, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    tensor = numpy_helper.from_array(value.astype(np.float32), name)
    graph.initializer.append(tensor)
    inits[name] = tensor
    return name
