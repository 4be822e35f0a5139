"""int8-static: the smoothing fold is exact, calibration reads real tokens only, the QDQ graph computes what the
ranking simulates and fuses into integer MatMuls, the gate chooses alpha and refuses broken candidates, and the
kept variant is batch-invariant."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolchain.data.texts import read_texts
from toolchain.runtime import load
from toolchain.variants import quantize as qmod
from toolchain.variants import static
from toolchain.variants.invariance import TOLERANCE
from toolchain.variants.rowquant import WEIGHT_FORMATS
from toolchain.variants.smooth import fold, sites

TEXTS = ["ok", "a fine film", "the plot was thin but the actors carried every scene with ease",
         " ".join(["a long and winding sentence"] * 8), "dull", "it was good, really good, i mean it"]


def _fake_timing(manifest, names, **kwargs):
    return {n: {"batch": 1, "seq": 16, "p50_ms": 2.0 if n == "fp32" else 1.0, "p95_ms": 2.0} for n in names}


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(model_or_path, feeds):
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _ln_graph(tmp_path, residual: bool, k=16, n=8):
    """x -> LayerNorm -> two MatMuls (and, with RESIDUAL, an Add reading the LayerNorm too: post-LN BERT's shape)."""
    rng = np.random.default_rng(0)
    gamma = rng.uniform(0.5, 2, k).astype(np.float32)
    gamma[3] = 20.0  # one outlier channel, as LayerNorm outputs have
    inits = [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(rng.normal(size=k).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(size=(k, n)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(k, n)).astype(np.float32), "w2")]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], name="ln", axis=-1),
             helper.make_node("MatMul", ["h", "w1"], ["y1"], name="mm1"),
             helper.make_node("MatMul", ["h", "w2"], ["y2"], name="mm2"),
             helper.make_node("Shape", ["h"], ["shape"], name="shape")]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("y1", "y2")]
    if residual:
        nodes.append(helper.make_node("Add", ["h", "x"], ["r"], name="residual"))
        outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", k])], outs, inits)
    path = tmp_path / f"ln{int(residual)}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return path


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("static") / "calib.txt", TEXTS * 4)


@pytest.fixture(scope="module")
def run(tiny_artifact, calib, tmp_path_factory):
    """int8-static on a copy of the tiny BERT embedder (timing faked: not what these tests are about)."""
    art = tmp_path_factory.mktemp("static") / "art"
    shutil.copytree(tiny_artifact("bert"), art)
    mp = pytest.MonkeyPatch()
    mp.setattr(qmod, "measure_variants", _fake_timing)
    try:
        report = qmod.quantize(art, "int8-static", calib=calib, max_drop=0.02, limit=24, target="avx512-vnni")
    finally:
        mp.undo()
    return art, report


# -- the smoothing fold ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("residual", [False, True])
def test_fold_is_exact_on_a_layernorm(tmp_path, residual):
    path = _ln_graph(tmp_path, residual)
    x = np.random.default_rng(1).normal(size=(2, 5, 16)).astype(np.float32)
    before = _run(path, {"x": x})
    model = onnx.load(str(path))
    (site,) = sites(model.graph)
    assert site.matmuls == ("mm1", "mm2") and site.exclusive is not residual  # Shape reads no values
    s = np.random.default_rng(2).uniform(0.1, 10, 16).astype(np.float32)
    fold(model, {site.activation: s})
    after = _run(model, {"x": x})
    for a, b in zip(before, after):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4)
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert len(norms) == (2 if residual else 1)  # post-LN: a scaled copy feeds the MatMuls, the residual is as it was
    smoothed = {n.input[0] for n in model.graph.node if n.op_type == "MatMul"}
    assert smoothed == {norms[-1].output[0]}


def test_fold_is_exact_on_bert(tiny_artifact, calib):
    art = tiny_artifact("bert")
    src = art / "model.onnx"
    cal = static.calibrate(src, art, read_texts(calib), limit=8)
    assert set(cal.smoothable) and all(len(m) >= 1 for m in cal.smoothable.values())
    feeds, _ = load(art, provider="cpu").encode(TEXTS)
    model = onnx.load(str(src))
    names = {i.name for i in model.graph.input}
    feeds = {k: v for k, v in feeds.items() if k in names}
    before = _run(src, feeds)[0]
    scales = cal.scales(0.75)
    assert any(np.abs(s - 1).max() > 0.1 for s in scales.values())  # a real smoothing, not s = 1
    fold(model, scales)
    assert np.allclose(_run(model, feeds)[0], before, rtol=1e-4, atol=1e-4)


# -- calibration ---------------------------------------------------------------------------------------------
def test_calibration_reads_real_tokens_only(tiny_artifact, calib, tmp_path):
    """Texts of mixed lengths calibrated together give the statistics of the texts calibrated one by one: padding
    (which a batch of these texts is mostly made of) is never counted."""
    art = tiny_artifact("bert")
    together = static.calibrate(art / "model.onnx", art, read_texts(_write(tmp_path / "all.txt", TEXTS)))
    alone = [static.calibrate(art / "model.onnx", art, read_texts(_write(tmp_path / f"{i}.txt", [t])))
             for i, t in enumerate(TEXTS)]
    tokens = int(load(art, provider="cpu").encode(TEXTS)[1].sum())
    for act, x in together.rows.items():
        assert len(x) == tokens
        ref = np.concatenate([c.rows[act] for c in alone])
        assert np.allclose(np.sort(x, axis=0), np.sort(ref, axis=0), atol=1e-4)
    for act, r in together.ranges(0.5).items():
        joint = static.Calibration({act: np.concatenate([c.rows[act] for c in alone])}, together.weights,
                                   together.reads, together.smoothable, len(TEXTS))
        assert r.scale == pytest.approx(static.Range.of(joint.rows[act] / together.scales(0.5)[act]
                                                        if act in together.smoothable else joint.rows[act],
                                                        r.percentile).scale, rel=1e-4)


def test_range_percentile_chosen_by_output_error():
    """Massive activations (MiniLM's FFN down-projections: a few tokens with one huge channel that carries their
    output): clipping them at 99.99% would wreck those tokens, so the full range is kept; a plain Gaussian
    tensor is clipped (levels are not wasted on its rare tails)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 32)).astype(np.float32)
    x = rng.normal(size=(4000, 64)).astype(np.float32)
    massive = x.copy()
    massive[:3, 5] = 300.0

    def best(rows):
        return static.Calibration({"a": rows}, {"mm": w}, {"mm": "a"}, {}, 1).ranges(0.0)["a"]

    def error(rows, r):
        return np.linalg.norm(rows @ w - r.fake(rows) @ w) / np.linalg.norm(rows @ w)

    chosen = best(massive)
    assert chosen.percentile == 100.0
    assert error(massive, chosen) < 0.5 * error(massive, static.Range.of(massive, 99.99))
    assert best(x).percentile == 99.99


# -- the QDQ graph ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(WEIGHT_FORMATS))
def test_qdq_computes_what_the_ranking_simulates(tmp_path, fmt):
    path = _ln_graph(tmp_path, residual=True)
    x = np.random.default_rng(3).normal(size=(4, 6, 16)).astype(np.float32)
    (y1, y2, _), model = _run(path, {"x": x}), onnx.load(str(path))
    probe = onnx.load(str(path))
    probe.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, None))
    h = _run(probe, {"x": x})[-1].reshape(-1, 16)  # the LayerNorm's output: what calibration captures
    w = {n: numpy_helper.to_array(i) for n, i in zip(("mm1", "mm2"), (model.graph.initializer[2], model.graph.initializer[3]))}
    cal = static.Calibration({"h": h}, w, {"mm1": "h", "mm2": "h"}, {"h": ("mm1", "mm2")}, 4)
    dst = tmp_path / "q.onnx"
    assert static.write_qdq(path, dst, cal, 0.5, WEIGHT_FORMATS[fmt]) == ["mm1", "mm2"]
    got = _run(dst, {"x": x})
    s, r = cal.scales(0.5)["h"], cal.ranges(0.5)["h"]
    from toolchain.variants.rowquant import quantize_weight

    for i, node in enumerate(("mm1", "mm2")):
        wq, ws = quantize_weight(w[node] * s[:, None], WEIGHT_FORMATS[fmt])
        want = r.fake(h / s) @ ((wq.astype(np.float32) - (0 if WEIGHT_FORMATS[fmt].signed else 128)) * ws)
        assert np.allclose(got[i].reshape(-1, 8), want, rtol=1e-3, atol=1e-3)
    assert np.array_equal(got[2], _run(path, {"x": x})[2])  # the residual stream is untouched
    assert float(np.abs(got[0] - y1).max()) < 0.1 * float(np.abs(y1).max())
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "MatMul" not in ops and ops.count("MatMulIntegerToFloat") == 2  # ONNX Runtime fused the QDQ pairs


# -- the search ----------------------------------------------------------------------------------------------
def _two_sites(seed=4):
    """Two activations read by three MatMuls: one with an outlier channel (smoothing pays), one without."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(300, 16)).astype(np.float32)
    x[:, 3] *= 40
    w = {f"mm{i}": rng.normal(size=(16, 8)).astype(np.float32) for i in range(3)}
    return static.Calibration({"a": x, "b": y}, w, {"mm0": "a", "mm1": "a", "mm2": "b"},
                              {"a": ("mm0", "mm1"), "b": ("mm2",)}, 1)


@pytest.mark.parametrize("passes, gated, chosen", [
    ("per", 1, "per"),  # the per-activation choice passes: nothing else is gated, no layer kept
    (0.75, 2, 0.75),  # it misses, the first fallback passes: the search stops there
    (None, 2, 0.75),  # nothing passes: the best score (0.75's) is searched, keeping layers in fp32
])
def test_search_tries_per_activation_alphas_first(passes, gated, chosen):
    cal = _two_sites()
    per = cal.alphas(WEIGHT_FORMATS["u8s8"])
    key = lambda alpha: "per" if isinstance(alpha, dict) else alpha  # noqa: E731
    scores, seen, said = {"per": 0.5, 0.75: 0.9}, [], []

    def attempt(plan) -> bool:
        seen.append(plan)
        return key(plan.alpha) == passes or len(plan.exclude) >= 2

    rankings = static.search_plans(cal, ["u8s8"], attempt, lambda: scores[key(seen[-1].alpha)], said.append)
    first = seen[:gated]
    assert [key(p.alpha) for p in first] == ["per", *static.FALLBACK_ALPHAS][:gated] and not any(p.exclude for p in first)
    assert first[0].alpha == per and "alpha per activation" in first[0].label
    assert any(static._named(per if chosen == "per" else chosen) in line for line in said)
    later = seen[gated:]
    assert bool(later) is (passes is None)  # a pass at k = 0 needs no search
    assert all(key(p.alpha) == chosen and p.calibration is cal and p.exclude for p in later)
    if later:
        assert later[0].exclude[0] == rankings["u8s8"][0]["node"]


def test_alpha_per_activation_is_the_one_with_the_least_output_error():
    """Each activation gets the alpha of ALPHAS that minimizes its own MatMuls' per-token output error (static range,
    quantized weights): the outlier channel is smoothed, and the choice differs between activations."""
    cal = _two_sites()
    fmt = WEIGHT_FORMATS["u8s8-7bit"]
    chosen = cal.alphas(fmt)

    def error(act, alpha):  # the same quantity, computed here from the public pieces
        s, r = cal.scales(alpha)[act], cal.ranges(alpha)[act]
        x = cal.rows[act]
        total = 0.0
        for node in [n for n, a in cal.reads.items() if a == act]:
            exact = x @ cal.weights[node]
            got = r.fake(x / s) @ static.dequantized(cal.weights[node] * s[:, None], fmt)
            total += float(np.mean(np.linalg.norm(exact - got, axis=1) / np.linalg.norm(exact, axis=1)))
        return total

    for act in ("a", "b"):
        errors = {alpha: error(act, alpha) for alpha in static.ALPHAS}
        assert errors[chosen[act]] == pytest.approx(min(errors.values()), rel=1e-6)
    assert chosen["a"] >= 0.5 and chosen["a"] != chosen["b"]
    assert error("a", chosen["a"]) < 0.5 * error("a", 0.0)  # smoothing the outlier channel pays


# -- quantize: gate, alpha, manifest, invariance ---------------------------------------------------------------
def test_alpha_is_chosen_by_the_gate_and_recorded(run):
    art, report = run
    v = json.loads((art / "manifest.json").read_text())["variants"]["int8-static"]
    q = v["metrics"]["quantization"]
    first = [t for t in q["tried"] if t["plan"].endswith("all layers quantized")]
    assert isinstance(first[0]["alpha"], dict) and "alpha per activation" in first[0]["plan"]  # per activation first
    assert [t["alpha"] for t in first[1:]] == list(static.FALLBACK_ALPHAS)[: len(first) - 1]
    assert all(not t["passed"] for t in first[:-1])  # a fallback is gated only after a miss
    score = lambda t: (t["passed"], t["mean_cosine"] + t["min_cosine"])  # noqa: E731
    best = max(first, key=score)
    assert all(t["alpha"] == best["alpha"] for t in q["tried"][len(first):])  # the search runs at the chosen alpha
    rec = q["static"]
    kept = q["tried"][[t["plan"] for t in q["tried"]].index(q["plan"])]["alpha"]
    assert rec["alpha"] == ("per activation, by output error" if isinstance(kept, dict) else kept)
    assert sum(rec["alphas"].values()) == len(kept) if isinstance(kept, dict) else len(rec["alphas"]) == 1
    assert set(rec["smoothed_activations"]) <= {"norm", "value", "mul"}
    assert rec["activation_scales"] == "static" and sum(rec["percentiles"].values()) > 0
    assert q["mode"] == "int8-static" and q["weights"] == "u8s8" and set(q["sensitivity"]) == {"u8s8"}
    graph = onnx.load(str(art / v["components"]["model"]["file"])).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    assert report.passed is v["passed"]


def test_static_variant_is_batch_invariant(run):
    art, _ = run
    inv = json.loads((art / "manifest.json").read_text())["variants"]["int8-static"]["metrics"]["batch_invariance"]
    assert inv["invariant"] is True and inv["max_abs_diff"] <= TOLERANCE
    model = load(art, variant="int8-static", provider="cpu")
    assert model.info()["batch_invariant"] is True
    together = model.embed(TEXTS)  # one padded batch of mixed lengths
    alone = np.stack([model.embed([t])[0] for t in TEXTS])
    assert np.abs(together - alone).max() <= TOLERANCE


def test_gate_refuses_a_broken_candidate(tiny_artifact, calib, tmp_path, monkeypatch):
    """Weights written 50x too large (the tiny model's layers add little to its residual stream, so a smaller fault
    would not show): every plan that quantizes a layer misses the gate, and auto keeps fp32."""
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact("bert"), art)
    monkeypatch.setattr(qmod, "measure_variants", _fake_timing)
    good = static.quantize_weight

    def broken(w, fmt):
        q, scale = good(w, fmt)
        return q, scale * 50

    monkeypatch.setattr(static, "quantize_weight", broken)
    report = qmod.quantize(art, "int8-static", calib=calib, limit=24, target="avx512-vnni")
    quantized = [t for t in report.tried if "all layers quantized" in t["plan"] or "kept in fp32" in t["plan"]]
    ranked = len(report.sensitivity["u8s8"])
    partial = [t for t in quantized if not t["plan"].split(": ")[-1].startswith(f"{ranked} ")]
    assert partial and not any(t["passed"] for t in partial)
    if not report.passed:
        assert load(art, provider="cpu").info()["variant"] == "fp32"
