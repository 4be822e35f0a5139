"""Smoothing sites beyond the LayerNorm (smooth.py): attention's context folded into the value projection, other
activations (the GELU output) through one Mul that only quantized MatMuls read; each fold is exact, and a path
whose channels a Transpose would mix is never folded. (The LayerNorm fold: test_static.py.)"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolchain.data.texts import read_texts
from toolchain.runtime import load
from toolchain.variants import static
from toolchain.variants.rowquant import WEIGHT_FORMATS
from toolchain.variants.smooth import fold, sites

B, T, H, D = 2, 5, 2, 4
C = H * D
TEXTS = ["ok", "a fine film", "the plot was thin but the actors carried every scene with ease", "dull"]


def _run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _attention(mixed: bool = False, shared: bool = False):
    """x -> value projection (+ bias) -> heads -> probs @ V -> heads merged -> output projection. MIXED: the heads
    are merged without transposing back (channels come out interleaved with time: no per-channel fold is exact).
    SHARED: the value projection's output is also a graph output."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(C, C)).astype(np.float32), "wv"),
             numpy_helper.from_array(rng.normal(size=C).astype(np.float32), "bv"),
             numpy_helper.from_array(rng.normal(size=(C, 3)).astype(np.float32), "wo"),
             numpy_helper.from_array(np.array([0, 0, H, D], np.int64), "split"),
             numpy_helper.from_array(np.array([0, -1, C], np.int64), "merge")]
    nodes = [helper.make_node("MatMul", ["x", "wv"], ["v0"], name="v_mm"),
             helper.make_node("Add", ["bv", "v0"], ["v"], name="v_add"),
             helper.make_node("Reshape", ["v", "split"], ["vh"], name="split"),
             helper.make_node("Transpose", ["vh"], ["vt"], name="t1", perm=[0, 2, 1, 3]),
             helper.make_node("MatMul", ["probs", "vt"], ["ctx_h"], name="pv")]
    if mixed:
        nodes.append(helper.make_node("Reshape", ["ctx_h", "merge"], ["ctx"], name="merge"))
    else:
        nodes += [helper.make_node("Transpose", ["ctx_h"], ["ctx_t"], name="t2", perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", ["ctx_t", "merge"], ["ctx"], name="merge")]
    nodes.append(helper.make_node("MatMul", ["ctx", "wo"], ["y"], name="o_mm"))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared:
        outs.append(helper.make_tensor_value_info("v", TensorProto.FLOAT, None))
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, T, C]),
           helper.make_tensor_value_info("probs", TensorProto.FLOAT, [B, H, T, T])]
    graph = helper.make_graph(nodes, "attn", ins, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _feeds():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(B, H, T, T))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {"x": rng.normal(size=(B, T, C)).astype(np.float32), "probs": probs.astype(np.float32)}


def _by_activation(model):
    return {s.activation: s for s in sites(model.graph)}


def test_context_folds_into_the_value_projection():
    model = _attention()
    found = _by_activation(model)
    assert found["ctx"].kind == "value" and found["ctx"].sources == ("v_mm", "v_add")
    assert found["x"].kind == "mul"  # a graph input: nothing to fold into
    before = _run(model, _feeds())
    s = np.random.default_rng(2).uniform(0.1, 10, C).astype(np.float32)
    fold(model, {"ctx": s})
    assert np.allclose(_run(model, _feeds())[0], before[0], rtol=1e-4, atol=1e-4)
    assert not [n for n in model.graph.node if n.op_type == "Mul"]  # folded: no op added
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    v_mm = next(n for n in model.graph.node if n.name == "v_mm")
    assert not np.allclose(inits[v_mm.input[1]], numpy_helper.to_array(_attention().graph.initializer[0]))


@pytest.mark.parametrize("mixed, shared", [(True, False), (False, True)])
def test_context_is_not_folded_where_channels_mix_or_v_is_read_elsewhere(mixed, shared):
    model = _attention(mixed=mixed, shared=shared)
    assert _by_activation(model)["ctx"].kind == "mul"
    before = _run(model, _feeds())
    fold(model, {"ctx": np.random.default_rng(2).uniform(0.1, 10, C).astype(np.float32)})
    after = _run(model, _feeds())
    for a, b in zip(before, after):  # the Mul is exact wherever folding is not
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_mul_site_only_where_the_matmul_is_quantized():
    model = _attention()
    s = np.random.default_rng(3).uniform(0.1, 10, C).astype(np.float32)
    untouched = onnx.ModelProto()
    untouched.CopyFrom(model)
    fold(untouched, {"x": s}, quantized={"o_mm"})  # x's only MatMul (v_mm) stays fp32: nothing to smooth
    assert untouched.SerializeToString() == model.SerializeToString()
    before = _run(model, _feeds())
    fold(model, {"x": s}, quantized={"v_mm"})
    muls = [n for n in model.graph.node if n.op_type == "Mul"]
    assert len(muls) == 1 and muls[0].input[0] == "x"
    assert next(n for n in model.graph.node if n.name == "v_mm").input[0] == muls[0].output[0]
    assert np.allclose(_run(model, _feeds())[0], before[0], rtol=1e-4, atol=1e-4)


def test_bert_has_every_kind_and_an_excluded_layer_reads_its_input_unsmoothed(tiny_artifact, tmp_path):
    art = tiny_artifact("bert")
    (tmp_path / "calib.txt").write_text("\n".join(TEXTS * 2) + "\n")
    cal = static.calibrate(art / "model.onnx", art, read_texts(tmp_path / "calib.txt"), limit=8)
    assert set(cal.kinds.values()) == {"norm", "value", "mul"}
    down = next(n for n, a in cal.reads.items() if cal.kinds[a] == "mul")
    dst = tmp_path / "q.onnx"
    quantized = static.write_qdq(art / "model.onnx", dst, cal, 0.8, WEIGHT_FORMATS["u8s8"], exclude=[down])
    assert down not in quantized and len(quantized) == len(cal.reads) - 1
    graph = onnx.load(str(dst)).graph
    node = next(n for n in graph.node if n.name == down)
    assert node.input[0] == cal.reads[down]  # no Mul, no QuantizeLinear before the fp32 layer
    weight = numpy_helper.to_array(next(i for i in graph.initializer if i.name == node.input[1]))
    assert np.array_equal(weight, cal.weights[down])  # nor scaled weights
    muls = [n for n in graph.node if n.op_type == "Mul" and n.name.startswith("smooth/")]
    assert len(muls) == sum(1 for a in cal.kinds.values() if a == "mul") - 1
    model = load(art, provider="cpu")
    feeds, _ = model.encode(TEXTS)
    names = {i.name for i in graph.input}
    feeds = {k: v for k, v in feeds.items() if k in names}
    ref = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    cos = np.sum(ref * got, -1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1))
    assert cos.min() > 0.9  # a working quantized graph, not a broken fold
