"""Per-row int8 (rowquant), batch invariance, the measured sensitivity ranking and the plan search."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolchain import cli
from toolchain.data.texts import read_texts
from toolchain.runtime import load
from toolchain.runtime.manifest import Component, Variant, read_manifest
from toolchain.variants import quantize as qmod
from toolchain.variants.invariance import TOLERANCE, batch_invariance
from toolchain.variants.plans import Plan, search
from toolchain.variants.rowquant import WEIGHT_FORMATS, quantize_weight, rowquant, simulate
from toolchain.variants.sensitivity import capture, rank

# lengths from 1 word to ~40: one batch of them is mostly padding for the short ones
TEXTS = ["ok", "a fine film", "the plot was thin but the actors carried every scene with ease",
         " ".join(["a long and winding sentence"] * 8), "dull", "it was good, really good, i mean it"]


def _fake_timing(manifest, names, **kwargs):
    """Instant, fixed timings: fp32 2 ms, every candidate 1 ms."""
    return {n: {"batch": 1, "seq": 16, "p50_ms": 2.0 if n == "fp32" else 1.0, "p95_ms": 2.0} for n in names}


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("rows") / "calib.txt"
    path.write_text("\n".join(TEXTS * 4) + "\n")
    return path


@pytest.fixture(scope="module")
def variants(tiny_artifact, calib, tmp_path_factory):
    """A tiny BERT classifier with every shipped mode's variant (timing skipped: not what these tests are about)."""
    art = tmp_path_factory.mktemp("rows") / "art"
    shutil.copytree(tiny_artifact("bert", "text-classification"), art)
    mp = pytest.MonkeyPatch()
    mp.setattr(qmod, "measure_variants", _fake_timing)
    try:
        for mode in ("int8-dynamic", "int8-static", "int4", "fp16"):
            qmod.quantize(art, mode, calib=calib, max_drop=0.5, limit=24)
    finally:
        mp.undo()
    return art


def _matmul_graph(tmp_path, k=16, n=8):
    """One MatMul (B, T, K) x (K, N) with a constant weight, as a file."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(k, n)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", n])],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return path, w


# -- the graph rewrite ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(WEIGHT_FORMATS))
def test_rowquant_computes_what_simulate_says(tmp_path, fmt):
    src, w = _matmul_graph(tmp_path)
    assert rowquant(src, tmp_path / "q.onnx", WEIGHT_FORMATS[fmt]) == ["proj"]
    x = np.random.default_rng(1).normal(size=(3, 5, 16)).astype(np.float32)
    x[1, 2] *= 50  # one outlier token
    got = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = simulate(x.reshape(-1, 16).astype(np.float64), w.astype(np.float64), WEIGHT_FORMATS[fmt]).reshape(3, 5, 8)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4)
    exact = x @ w
    rel = np.abs(got - exact).max(axis=-1) / np.abs(exact).max(axis=-1)
    assert rel.max() < 0.05  # the outlier token costs the others nothing: each row has its own scale
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    assert [n.op_type for n in graph.node if n.op_type.startswith("MatMul")] == ["MatMulIntegerToFloat"]
    assert "w" not in {i.name for i in graph.initializer}  # the fp32 weight is gone


def test_rowquant_rows_do_not_depend_on_each_other(tmp_path):
    src, _ = _matmul_graph(tmp_path)
    rowquant(src, tmp_path / "q.onnx", WEIGHT_FORMATS["u8s8"])
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).normal(size=(2, 4, 16)).astype(np.float32)
    alone = session.run(None, {"x": x[:1, :2]})[0]
    y = x.copy()
    y[1] *= 1000  # another text, far larger, and padding rows after the first two tokens
    y[0, 2:] = 0
    together = session.run(None, {"x": y})[0]
    assert np.array_equal(together[:1, :2], alone)


def test_weight_formats():
    w = np.random.default_rng(3).normal(size=(32, 4)).astype(np.float32)
    q, scale = quantize_weight(w, WEIGHT_FORMATS["u8s8"])
    assert q.dtype == np.int8 and np.abs(q).max(axis=0).tolist() == [127] * 4
    q7, _ = quantize_weight(w, WEIGHT_FORMATS["u8s8-7bit"])
    assert np.abs(q7).max() == 63 and WEIGHT_FORMATS["u8s8-7bit"].reduce_range
    qu, scale_u = quantize_weight(w, WEIGHT_FORMATS["u8u8"])
    assert qu.dtype == np.uint8 and np.array_equal(qu.astype(np.int16) - 128, q) and np.array_equal(scale_u, scale)
    assert np.allclose((qu.astype(np.float32) - 128) * scale_u, w, atol=scale_u.max())


# -- batch invariance ---------------------------------------------------------------------------------------
def test_every_variant_claiming_invariance_is_invariant(variants):
    data = json.loads((variants / "manifest.json").read_text())["variants"]
    claims = {name: v["metrics"]["batch_invariance"]["invariant"] for name, v in data.items() if name != "fp32"}
    assert set(claims) == {"int8", "int8-static", "int4", "fp16"}
    assert claims["int8"] is True and claims["int8-static"] is True  # per-row and static scales
    for name, claimed in claims.items():
        model = load(variants, variant=name, provider="cpu")
        assert model.info()["batch_invariant"] is claimed
        together = model.scores(TEXTS)  # one padded batch of mixed lengths
        alone = np.stack([model.scores([t])[0] for t in TEXTS])
        if claimed:
            assert np.abs(together - alone).max() <= TOLERANCE, name
        else:  # said so, with the batching its gate ran under
            assert "as served" in data[name]["metrics"]["batch_invariance"]["gated_with"]
    assert load(variants, variant="fp32", provider="cpu").info()["batch_invariant"] is None  # never measured


def test_probe_catches_per_tensor_int8(tiny_artifact, tmp_path):
    """onnxruntime's quantize_dynamic (one activation scale per batch) is what the probe must catch."""
    from onnxruntime.quantization import quantize_dynamic

    art = tmp_path / "art"
    shutil.copytree(tiny_artifact("bert"), art)
    quantize_dynamic(str(art / "model.onnx"), str(art / "per-tensor.onnx"), op_types_to_quantize=["MatMul"])
    manifest = read_manifest(art)
    manifest.variants["per-tensor"] = Variant("per-tensor", precision="int8",
                                              components={"model": Component.of(art, "per-tensor.onnx")})
    texts = read_texts(_write(tmp_path / "t.txt", TEXTS))
    got = batch_invariance(manifest, "per-tensor", texts)
    assert got["invariant"] is False and got["max_abs_diff"] > 5 * TOLERANCE and got["texts"] == 5
    got.pop("gated_with")
    rowquant(art / "model.onnx", art / "per-row.onnx", WEIGHT_FORMATS["u8s8"])
    manifest.variants["per-row"] = Variant("per-row", precision="int8",
                                           components={"model": Component.of(art, "per-row.onnx")})
    assert batch_invariance(manifest, "per-row", texts) == {**got, "invariant": True, "max_abs_diff": 0.0}


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


# -- sensitivity and the search --------------------------------------------------------------------------------
def test_sensitivity_ranking(tiny_artifact, calib):
    art = tiny_artifact("bert")
    data = read_texts(calib)
    rows = capture(art / "model.onnx", art, data, limit=6)
    tokens = int(load(art, provider="cpu").encode(TEXTS)[1].sum())
    assert {x.shape[0] for x in rows.values()} == {tokens}  # real tokens only, padding left out
    ranked = rank(art / "model.onnx", art, data, [WEIGHT_FORMATS["u8s8"], WEIGHT_FORMATS["u8s8-7bit"]])
    full, seven = ranked["u8s8"], {s.node: s.error for s in ranked["u8s8-7bit"]}
    assert [s.error for s in full] == sorted((s.error for s in full), reverse=True)
    assert all(0 < s.error < 0.2 for s in full)
    assert all(seven[s.node] > s.error for s in full)  # one bit less weight precision: more error, every layer


@pytest.mark.parametrize("needed, expected", [
    (0, [0]),  # all quantized passes: nothing more is built
    (3, [0, 1, 2, 4, 3]),  # double to the first pass, bisect back to the fewest
    (5, [0, 1, 2, 4, 8, 6, 5]),
    (13, [0, 1, 2, 4, 8, 12]),  # never passes: stops with every layer kept
])
def test_search_keeps_fewest_most_sensitive(needed, expected):
    ranked = [f"n{i}" for i in range(12)]
    seen: list[Plan] = []

    def attempt(plan: Plan) -> bool:
        seen.append(plan)
        return plan.exclude == ranked[: len(plan.exclude)] and len(plan.exclude) >= needed

    assert search(ranked, attempt, "u8s8") == expected
    assert [len(p.exclude) for p in seen] == expected and all(p.weights == "u8s8" for p in seen)
    assert seen[0].label == "u8s8: all layers quantized"


def test_search_stops_at_its_budget():
    assert search([f"n{i}" for i in range(100)], lambda plan: False, None, max_gated=3) == [0, 1, 2]


def test_cli_explain(tiny_artifact, calib, tmp_path, capsys, monkeypatch):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact("bert"), art)
    monkeypatch.setattr(qmod, "measure_variants", _fake_timing)
    assert cli.main(["quantize", str(art), "--mode", "int8-dynamic", "--calib", str(calib), "--limit", "12",
                     "--target", "avx2", "--explain"]) == 0
    out = capsys.readouterr().out
    q = json.loads((art / "manifest.json").read_text())["variants"]["int8"]["metrics"]["quantization"]
    for fmt in ("u8u8", "u8s8-7bit"):
        assert f"sensitivity ({fmt} weights)" in out
        assert q["sensitivity"][fmt][0]["node"] in out
    assert "plans tried:" in out and all(t["plan"] in out for t in q["tried"])
    assert "batch-invariant: True" in out


def test_decoders_get_the_measured_search(tiny_decoder, tmp_path, monkeypatch):
    """A decoder's graph (KV-cache inputs) is ranked with an empty cache, its gate is next-token agreement."""
    _, src = tiny_decoder("llama")
    art = tmp_path / "art"
    shutil.copytree(src, art)
    calib = _write(tmp_path / "lm.txt", ["the film was a delight from start to finish", "actors shine in a witty script"] * 6)
    monkeypatch.setattr(qmod, "measure_variants", _fake_timing)
    report = qmod.quantize(art, "int8-dynamic", calib=calib, max_drop=0.5, limit=12, target="avx512-vnni")
    ranking = report.sensitivity["u8s8"]
    graph = onnx.load(str(art / "model.onnx")).graph
    from toolchain.variants.rowquant import quantizable

    assert sorted(r["node"] for r in ranking) == sorted(n.name for n in quantizable(graph)) and len(ranking) > 4
    assert report.passed and "token_agreement" in report.gate.metrics
    assert report.batch_invariance["invariant"] is None  # a decoder's gate output is not one row per text
    assert load(art, variant="int8").generate("the film", max_new_tokens=3)
