"""The GPU run's artifacts built on CPU (no GPU needed): the fused fp16 candidate is really fused, is listed as a
variant not passed (auto never serves it), and computes what fp32 computes (ONNX Runtime's CPU kernels run it)."""

from __future__ import annotations

import collections

import numpy as np
import onnx

from toolchain.runtime import load, read_manifest

from .artifacts import FUSED, with_fused_fp16

TEXTS = ["A man is playing a guitar.", "ok", "The new movie is awesome, with a script that keeps surprising you."]


def test_fused_fp16_candidate(tiny_artifact, tmp_path):
    import shutil

    art = tmp_path / "bert"
    shutil.copytree(tiny_artifact("bert"), art)
    with_fused_fp16(art)
    variant = read_manifest(art).variants[FUSED]
    assert variant.precision == "fp16" and variant.passed is False
    assert load(art, variant="auto").info()["variant"] != FUSED
    graph = onnx.load(str(read_manifest(art).verify(FUSED)), load_external_data=False).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["Attention"] == 2 and ops["SkipLayerNormalization"] >= 2 and ops["LayerNormalization"] == 0, ops
    assert len(graph.node) < 40, ops
    assert {t.data_type for t in graph.initializer if t.dims and len(t.dims) == 2} == {onnx.TensorProto.FLOAT16}
    fused = load(art, variant=FUSED).embed(TEXTS)
    fp32 = load(art, variant="fp32").embed(TEXTS)
    cos = (fused * fp32).sum(1) / np.linalg.norm(fused, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cos.min() >= 0.999
    with_fused_fp16(art)  # built once
    assert list(read_manifest(art).variants).count(FUSED) == 1
