"""quantize --mode fp16: fp32 inputs and outputs, overflow-prone ops kept in fp32, gated like every variant,
and timed on CPU only, so `auto` on CUDA does not take it until it is benched there."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from toolchain.variants import quantize as qmod
from toolchain.variants.quantize import FP16_KEEP_FP32_OPS, quantize
from toolchain.runtime import load
from toolchain.runtime.manifest import read_manifest
from toolchain.runtime.model import choose_variant

TEXTS = [f"{s} {v}" for s in ("the film", "this book", "our trip", "the meal")
         for v in ("was wonderful", "felt far too long", "made me laugh", "left me cold")]


def _fake_measure(manifest, names, **kwargs):
    return {n: {"batch": 1, "seq": 128, "p50_ms": 2.0 if n == "fp32" else 3.0, "p95_ms": 3.3, "items_per_s": 300.0}
            for n in names}


@pytest.fixture(scope="module")
def fp16_art(tiny_artifact, tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16")
    calib = root / "calib.txt"
    calib.write_text("\n".join(TEXTS) + "\n")
    art = shutil.copytree(tiny_artifact("bert"), root / "art")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qmod, "measure_variants", _fake_measure)  # fp16 on CPU: slower, as it usually is
        report = quantize(art, "fp16", calib=calib, limit=16)
    return art, report


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    out = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    out.update({i.name: i.data_type for i in g.initializer})
    return out


def test_io_stays_fp32_and_overflow_prone_ops_run_in_fp32(fp16_art):
    art, _ = fp16_art
    v = json.loads((art / "manifest.json").read_text())["variants"]["fp16"]
    model = onnx.load(str(art / v["components"]["model"]["file"]))
    g = model.graph
    assert all(t.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.FLOAT) for t in g.input)
    assert all(t.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for t in g.output)
    types = _types(model)
    kept = [n for n in g.node if n.op_type in FP16_KEEP_FP32_OPS]
    assert kept, "the tiny BERT has LayerNorm / Softmax / Erf nodes"
    for n in kept:
        assert types.get(n.input[0]) == onnx.TensorProto.FLOAT, (n.op_type, n.name)
    matmuls = [n for n in g.node if n.op_type == "MatMul"]
    assert matmuls and all(types.get(n.input[0]) == onnx.TensorProto.FLOAT16 for n in matmuls)


def test_fp16_is_gated_and_benched_on_cpu_only(fp16_art):
    art, report = fp16_art
    v = json.loads((art / "manifest.json").read_text())["variants"]["fp16"]
    assert v["precision"] == "fp16" and v["passed"] is report.passed
    assert "mean_cosine" in v["metrics"]["gate"] and v["metrics"]["quantization"]["mode"] == "fp16"
    if report.passed:
        assert set(v["latency"]) == {"cpu"}
    m = read_manifest(art)
    assert choose_variant(m, "auto", "cuda") == "fp32"  # not benched on cuda: fp32 there
    assert choose_variant(m, "auto", "cpu") == "fp32"  # benched slower on CPU
    fp32 = load(art, variant="fp32", provider="cpu").embed(TEXTS)
    fp16 = load(art, variant="fp16", provider="cpu").embed(TEXTS)
    assert fp16.dtype == np.float32 and float((fp32 * fp16).sum(axis=1).min()) > 0.999


def test_fp16_decoder_loads_and_generates_like_fp32(tiny_decoder, tmp_path):
    """RMSNorm reads the residual stream twice in fp32: the converter's duplicate Casts must not break the graph."""
    _, src_art = tiny_decoder("llama")
    art = shutil.copytree(src_art, tmp_path / "art")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qmod, "measure_variants", _fake_measure)
        quantize(art, "fp16", calib=None, limit=16)
    v = json.loads((art / "manifest.json").read_text())["variants"]["fp16"]
    names = [n.name for n in onnx.load(str(art / v["components"]["model"]["file"])).graph.node if n.name]
    assert len(names) == len(set(names))
    prompts = ["ROMEO:", "the film was"]
    fp16 = load(art, variant="fp16", provider="cpu")
    assert fp16.generate(prompts, max_new_tokens=8) == load(art, variant="fp32", provider="cpu").generate(prompts, max_new_tokens=8)
