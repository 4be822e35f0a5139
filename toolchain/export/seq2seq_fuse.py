"""Attention fusion for the graphs of export/seq2seq_hf.py: each attention block of optimum's decoder-with-past
(and of the encoder) becomes one ONNX Runtime ``com.microsoft.MultiHeadAttention`` node.

optimum's graphs spell attention out in ~25 small nodes per block (Shape / Gather / Unsqueeze / Concat to
build reshape targets, Reshape / Transpose to heads, the cache Concat, MatMul, scaling, Add of the mask,
Softmax, MatMul, Transpose / Reshape back), and the decoder step rebuilds an all-zero causal mask (~80 more).
At batch 1 a step is mostly the MatMuls streaming their weights; those small nodes' fixed cost is much of the
rest (measured: the fused T5 / Marian decoder step takes ~20% less CPU time). The fusion matches, from each
Softmax, the core every family shares::

    q = Transpose_0213(Reshape(q_lin))                    (batch, heads, 1 or seq, dim)
    scores = MatMul(q [* c1], Transpose_0132(K) [* c2])  (the exporter may fold K's two transposes into one)
    out = Reshape(Transpose_0213(MatMul(Softmax([Cast](scores [+ bias])), V)))   (batch, seq, heads * dim)

where K / V is a cross-attention input ``cross.{i}.key`` / ``.value`` (batch, heads, source, dim), the
self-attention cache ``present.{i}.decoder.*`` = Concat(``past.{i}.decoder.*``, the new key / value), or
(no cache: the encoder) the key / value projection reshaped to heads. The block becomes
``MultiHeadAttention(q_lin, k, v, attention_bias=bias, past_key, past_value)`` with ``scale = c1 * c2`` (1 without
a Mul: T5), writing ``out`` and, for the cache, ``present.{i}.decoder.*``. The bias (mask, T5's position bias)
is still computed by the graph's own nodes, so it is exactly what the model adds. What no longer feeds an
output is pruned. A block that does not match is left as it is (the graph stays valid, only slower).

In the decoder, a bias term that depends on shapes only and is zero at every probe is then dropped
(drop_zero_bias: the causal mask, since one new token sees every cached position; T5's zeros on
cross-attention), with the ~80 nodes that built it. fuse_checked keeps the result only when it computes the
unfused graph's outputs on random feeds at several batch, cache and source lengths (cache length 0 included).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from toolchain.export.graph_cut import node_reads
from toolchain.export.graph_probes import PROBES, Runner, random_feeds, same_outputs
from toolchain.export.source import import_optional

MS_DOMAIN = "com.microsoft"
FUSED_OP = "MultiHeadAttention"
_SAME_FLOAT = 1  # onnx.TensorProto.FLOAT: a Cast to it in front of Softmax is a no-op on these float32 graphs


class _Index:
    """Producers, consumers, constant values and graph-input dims of a graph."""

    def __init__(self, graph: Any):
        numpy_helper = import_optional("onnx").numpy_helper
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for node in graph.node:
            for name in node_reads(node):
                self.consumers[name].append(node)
        for out in graph.output:
            self.consumers[out.name].append(None)  # a graph output: never removed
        self.consts = {init.name: init for init in graph.initializer}
        self.consts.update({n.output[0]: n.attribute[0].t for n in graph.node
                            if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t")})
        self.to_array = numpy_helper.to_array
        self.inputs = {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param
                                for d in v.type.tensor_type.shape.dim] for v in graph.input}

    def made_by(self, name: str, op: str, **attrs: Any) -> Any:
        """The node of type OP (with the int / ints attributes ATTRS) that writes NAME, else None."""
        node = self.producer.get(name)
        if node is None or node.op_type != op:
            return None
        have = {a.name: (list(a.ints) if a.ints else a.i) for a in node.attribute}
        return node if all(have.get(k) == v for k, v in attrs.items()) else None

    def scalar(self, name: str) -> float | None:
        if name not in self.consts:
            return None
        value = self.to_array(self.consts[name])
        return float(value.reshape(())) if value.size == 1 else None

    def only_consumer(self, name: str) -> Any:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None


def _scaled(ix: _Index, name: str) -> tuple[str, float]:
    """(the value under an optional Mul / Div by a constant, the factor)."""
    node = ix.producer.get(name)
    if node is not None and node.op_type in ("Mul", "Div"):
        for pos in (1, 0) if node.op_type == "Mul" else (1,):
            factor = ix.scalar(node.input[pos])
            if factor is not None and factor != 0:
                return node.input[1 - pos], factor if node.op_type == "Mul" else 1.0 / factor
    return name, 1.0


def _heads_of(ix: _Index, name: str) -> str | None:
    """LIN where NAME = Transpose(Reshape(LIN, .), perm 0,2,1,3): a projection split into heads."""
    split = ix.made_by(name, "Transpose", perm=[0, 2, 1, 3])
    reshape = split and ix.made_by(split.input[0], "Reshape")
    return reshape.input[0] if reshape else None


def _kv(ix: _Index, name: str) -> dict[str, Any] | None:
    """What the key or value NAME of an attention block is: a cross input (batch, heads, source, dim) given as
    is, the cache present = Concat(past, new heads) (the new projection, the past), or new heads (no cache)."""
    if name in ix.inputs:
        dims = ix.inputs[name]
        return {"bnsh": name, "heads": dims[1]} if len(dims) == 4 and isinstance(dims[1], int) else None
    concat = ix.producer.get(name)
    if concat is not None and concat.op_type == "Concat" and len(concat.input) == 2:
        axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
        past, new = concat.input
        dims = ix.inputs.get(past, [])
        lin = _heads_of(ix, new)
        if axis in (2, -2) and len(dims) == 4 and isinstance(dims[1], int) and lin:
            return {"lin": lin, "past": past, "present": name, "concat": concat, "heads": dims[1]}
        return None
    lin = _heads_of(ix, name)
    return {"lin": lin, "heads": None} if lin else None


def _match(ix: _Index, softmax: Any) -> dict[str, Any] | None:
    """The attention block around SOFTMAX, or None when it is not the shape this fusion knows."""
    if next((a.i for a in softmax.attribute if a.name == "axis"), -1) not in (-1, 3):
        return None
    context = ix.only_consumer(softmax.output[0])
    if context is None or context.op_type != "MatMul" or context.input[0] != softmax.output[0]:
        return None
    merge = ix.only_consumer(context.output[0])
    if merge is None or merge.op_type != "Transpose" or \
            [list(a.ints) for a in merge.attribute if a.name == "perm"] != [[0, 2, 1, 3]]:
        return None
    out = ix.only_consumer(merge.output[0])
    if out is None or out.op_type != "Reshape":
        return None
    scores = softmax.input[0]
    cast = ix.made_by(scores, "Cast", to=_SAME_FLOAT)
    scores = cast.input[0] if cast else scores
    bias = ""
    add = ix.made_by(scores, "Add")
    if add is not None:
        raw = next((x for x in add.input if ix.made_by(x, "MatMul")), None)
        if raw is None:
            return None
        bias = add.input[1] if raw == add.input[0] else add.input[0]
        scores = raw
    product = ix.made_by(scores, "MatMul")
    if product is None:
        return None
    query, c1 = _scaled(ix, product.input[0])
    key_t, c2 = _scaled(ix, product.input[1])
    transposed = ix.made_by(key_t, "Transpose", perm=[0, 1, 3, 2])
    key = _kv(ix, transposed.input[0]) if transposed else None
    folded = ix.made_by(key_t, "Transpose", perm=[0, 2, 3, 1])  # the exporter's two transposes in one
    reshape = folded and ix.made_by(folded.input[0], "Reshape")
    if reshape:
        key = {"lin": reshape.input[0], "heads": None}
    q_lin, value = _heads_of(ix, query), _kv(ix, context.input[1])
    if not (q_lin and key and value) or ("bnsh" in key) != ("bnsh" in value) or ("past" in key) != ("past" in value):
        return None
    heads = key["heads"] or value["heads"] or _reshape_heads(ix, query, q_lin)
    if not heads:
        return None
    return {"q": q_lin, "key": key, "value": value, "bias": bias, "scale": c1 * c2, "heads": heads,
            "out": out.output[0], "at": context}


def _reshape_heads(ix: _Index, query: str, q_lin: str) -> int | None:
    """The heads of the (batch, seq, heads, dim) Reshape target of QUERY: its third entry, or (given as -1)
    the width of Q_LIN's projection weight over its fourth."""
    reshape = ix.made_by(ix.made_by(query, "Transpose").input[0], "Reshape")
    target = ix.producer.get(reshape.input[1])
    if reshape.input[1] in ix.consts:
        dims = ix.to_array(ix.consts[reshape.input[1]]).ravel().tolist()
    elif target is not None and target.op_type == "Concat" and len(target.input) == 4:
        dims = [ix.scalar(x) for x in target.input]
    else:
        return None
    if len(dims) != 4:
        return None
    if dims[2] is not None and dims[2] > 0:
        return int(dims[2])
    width = _width(ix, q_lin)
    return width // int(dims[3]) if dims[2] == -1 and dims[3] and dims[3] > 0 and width and width % dims[3] == 0 \
        else None


def _width(ix: _Index, lin: str) -> int | None:
    """The output width of the projection writing LIN: MatMul(x, W) (plus a bias Add), W a 2-D constant."""
    node = ix.producer.get(lin)
    if node is not None and node.op_type == "Add":
        node = next((ix.producer[x] for x in node.input if x in ix.producer and ix.producer[x].op_type == "MatMul"),
                    None)
    if node is None or node.op_type != "MatMul" or node.input[1] not in ix.consts:
        return None
    dims = list(ix.consts[node.input[1]].dims)
    return int(dims[-1]) if len(dims) == 2 else None


def fuse_attention(model: Any) -> int:
    """Rewrite every attention block of MODEL (an onnx ModelProto, in place) that _match recognises into one
    MultiHeadAttention node; prune what no longer feeds an output. Returns the number of blocks fused."""
    onnx = import_optional("onnx")
    graph = model.graph
    ix = _Index(graph)
    fused = {}
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        found = _match(ix, softmax)
        if found is None:
            continue
        key, value = found["key"], found["value"]
        inputs = [found["q"], key.get("bnsh") or key["lin"], value.get("bnsh") or value["lin"], "", "", found["bias"]]
        outputs = [found["out"]]
        if "past" in key:
            inputs += [key["past"], value["past"]]
            outputs += [key["present"], value["present"]]
        node = onnx.helper.make_node(FUSED_OP, inputs, outputs, name=f"{FUSED_OP}/{len(fused)}", domain=MS_DOMAIN,
                                     num_heads=int(found["heads"]), scale=float(found["scale"]))
        fused[id(found["at"])] = node
    if not fused:
        return 0
    # The cache Concat stays, under another name, for what else reads it (T5's position bias reads the cache's
    # length from its Shape); prune() drops it where only the replaced nodes did.
    moved = {out: out + "/concat" for node in fused.values() for out in node.output[1:]}
    replaced = {node.output[0] for node in fused.values()}
    kept = []
    for node in graph.node:
        if id(node) in fused:
            kept.append(fused[id(node)])
        elif not replaced.intersection(node.output):  # the old Reshape writing out goes
            for i, name in enumerate(node.input):
                node.input[i] = moved.get(name, name)
            for i, name in enumerate(node.output):
                node.output[i] = moved.get(name, name)
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    prune(graph)
    # ONNX's shape inference knows no com.microsoft op: typing each attention output lets it (and tools built on
    # it: onnxruntime.quantization, the fp16 converter) type what follows
    known = {v.name for v in graph.value_info}
    graph.value_info.extend(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None)
                            for n in fused.values() if n.output[0] not in known)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    return len(fused)


def prune(graph: Any) -> None:
    """Drop the nodes and initializers nothing reads on the way to GRAPH's outputs."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node_reads(node))
    del graph.node[:]
    graph.node.extend(reversed(kept))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


# -- masks that are zero at every step (the check that a rewrite changed nothing: graph_probes.py) -------------
def _data_free(ix: _Index, name: str) -> bool:
    """Whether NAME's value depends on no graph input's values (only on shapes: T5's position bias, a causal mask)."""
    seen, stack = set(), [name]
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        if value in ix.inputs:
            return False
        node = ix.producer.get(value)
        if node is not None and node.op_type not in ("Shape", "Size"):
            stack.extend(node_reads(node))
    return True


def drop_zero_bias(model: Any) -> int:
    """Drop from MODEL's MultiHeadAttention nodes the mask terms that are zero at every step: a bias, or a term
    added to it, whose value depends on shapes only (a causal mask: one new token sees the whole cache; T5's
    zeros in cross-attention) and is zero at every probe (PROBES: batch, cache and source lengths). A term is
    dropped only where what stays is a valid attention bias (batch or 1, heads or 1, 1, keys) at every probe.
    Returns how many biases were simplified (MODEL is changed in place, then pruned)."""
    np = import_optional("numpy")
    ix = _Index(model.graph)
    attention = [n for n in model.graph.node if n.op_type == FUSED_OP and len(n.input) > 5 and n.input[5]]
    terms: dict[int, list[str]] = {}
    for node in attention:
        add = ix.made_by(node.input[5], "Add")
        terms[id(node)] = [node.input[5], *(add.input if add else [])]
    names = tuple(dict.fromkeys(n for t in terms.values() for n in t))
    if not names:
        return 0
    free = {n for n in names if _data_free(ix, n)}
    run = Runner(model, names)
    zero = set(free)
    shapes: dict[str, list] = {n: [] for n in names}
    for k, (batch, past, source) in enumerate(PROBES):
        out = run(random_feeds(model, batch, past, source, k))
        zero = {n for n in zero if not np.any(out[n])}
        for n in names:
            shapes[n].append((out[n].shape, batch, past + 1, source))
    done = 0
    for node in attention:
        bias, *addends = terms[id(node)]
        heads = next(a.i for a in node.attribute if a.name == "num_heads")
        cached = len(node.input) > 6 and bool(node.input[6])

        def fits(name: str) -> bool:
            return all(len(s) == 4 and s[0] in (1, b) and s[1] in (1, heads) and s[2] == 1 and s[3] == (t if cached
                       else src) for s, b, t, src in shapes[name])

        if bias in zero:
            node.input[5] = ""
        elif len(addends) == 2 and any(a in zero for a in addends):
            keep = addends[1] if addends[0] in zero else addends[0]
            if keep in zero or not fits(keep):
                continue
            node.input[5] = keep
        else:
            continue
        done += 1
    prune(model.graph)
    return done


def fuse_checked(model: Any, cached: bool) -> tuple[Any, str]:
    """A fused copy of MODEL (attention fused; for the decoder, CACHED, also its zero mask terms dropped) when it
    computes what MODEL computes at every probe, else MODEL itself; and a line saying which and why."""
    fused = type(model)()
    fused.CopyFrom(model)
    count = fuse_attention(fused)
    if not count:
        return model, "no attention block matched: graph left as exported"
    simplified = drop_zero_bias(fused) if cached else 0
    differs = same_outputs(model, fused)
    if differs:
        return model, f"the fused graph was not kept: {differs}"
    return fused, f"{count} attention blocks fused into {FUSED_OP}" + (
        f", {simplified} zero mask terms dropped" if simplified else "")
