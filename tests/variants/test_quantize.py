"""quantize: gated variants on tiny artifacts, manifest records, atomic replacement, bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from toolchain.variants import quantize as qmod
from toolchain.variants.hardware import preset_for
from toolchain.variants.quantize import MODES, candidates, quantize
from toolchain.variants.rowquant import WEIGHT_FORMATS, quantizable
from toolchain.runtime import ToolchainError, load
from toolchain.runtime.manifest import sha256_file

SUBJECTS = ["the film", "this book", "our trip", "the concert", "that meal"]
VERDICTS = ["was wonderful", "felt far too long", "made me laugh", "was a waste of time",
            "surprised everyone", "left me cold", "is worth seeing twice", "dragged badly"]
SENTENCES = [f"{s} {v}" for s in SUBJECTS for v in VERDICTS]  # 40 short sentences
LIMIT = 24


# -- helpers ----------------------------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _manifest(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def _tmp_dirs(art: Path) -> list[Path]:
    return sorted(art.glob(".*.tmp-*"))


def _onnx_files(art: Path) -> set[str]:
    return {p.name for p in art.glob("*.onnx")}


def _listed_files(art: Path) -> set[str]:
    return {v["components"]["model"]["file"] for v in _manifest(art)["variants"].values()}


def _assert_consistent(art: Path) -> None:
    """Every variant file exists with its recorded sha256 and size, and no file is unlisted or left over."""
    data = _manifest(art)
    for name, v in data["variants"].items():
        path = art / v["components"]["model"]["file"]
        assert path.is_file(), name
        assert sha256_file(path) == v["components"]["model"]["sha256"], name
        assert path.stat().st_size == v["components"]["model"]["bytes"], name
    assert _onnx_files(art) == _listed_files(art)
    assert _tmp_dirs(art) == []


def _gate_agrees(metrics: dict, passed: bool) -> None:
    if "mean_cosine" in metrics:
        expected = metrics["mean_cosine"] >= metrics["required_mean"] and metrics["min_cosine"] >= metrics["required_min"]
    elif "accuracy_drop" in metrics:
        expected = metrics["accuracy_drop"] <= metrics["max_drop"]
    else:
        expected = metrics["agreement"] >= metrics["required_agreement"]
    assert passed is expected


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("calib")
    txt = root / "calib.txt"
    txt.write_text("\n".join(SENTENCES) + "\n")
    tsv = root / "calib.tsv"
    tsv.write_text("label\tsentence\n" + "".join(f"{i % 2}\t{s}\n" for i, s in enumerate(SENTENCES)))
    bad = root / "badlabels.tsv"
    bad.write_text("label\tsentence\n" + "".join(f"{i % 3}\t{s}\n" for i, s in enumerate(SENTENCES)))
    empty = root / "empty.txt"
    empty.write_text("\n\n")
    return {"txt": txt, "tsv": tsv, "bad": bad, "empty": empty}


def _fake_measure(manifest, names, **kwargs):
    """Deterministic, instant timings: fp32 2 ms, candidates 1.00, 1.01, ... ms in the order given."""
    out = {}
    for i, name in enumerate(names):
        p50 = 2.0 if name == "fp32" else 1.0 + 0.01 * (i - 1)
        out[name] = {"batch": 1, "seq": 128, "p50_ms": p50, "p95_ms": p50 * 1.1, "items_per_s": 1000 / p50}
    return out


@pytest.fixture
def fast_timing(monkeypatch):
    """Tests that are not about timing skip the real A/B timing (and get a deterministic choice)."""
    monkeypatch.setattr(qmod, "measure_variants", _fake_measure)


@pytest.fixture(scope="module")
def int8_runs(tiny_artifact, calib, tmp_path_factory):
    """int8-dynamic once per task on a copy of the tiny BERT artifact (shared by the tests below)."""
    runs = {}
    for task in ("feature-extraction", "text-classification"):
        src = tiny_artifact("bert", task)
        art = _copy(src, tmp_path_factory.mktemp("q") / "art")
        before = _manifest(art)
        messages: list[str] = []
        report = quantize(art, "int8-dynamic", calib=calib["txt"], limit=LIMIT, progress=messages.append)
        runs[task] = (art, before, report, messages)
    return runs


# -- int8-dynamic: the happy path ---------------------------------------------------------------------
@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
def test_int8_variant_written_and_listed(int8_runs, task):
    art, before, report, _ = int8_runs[task]
    data = _manifest(art)
    assert report.variant == "int8" and set(data["variants"]) == {"fp32", "int8"}
    v = data["variants"]["int8"]
    path = art / v["components"]["model"]["file"]
    assert path.is_file() and v["components"]["model"]["file"] != before["variants"]["fp32"]["components"]["model"]["file"]
    assert v["components"]["model"]["sha256"] == sha256_file(path) and v["components"]["model"]["bytes"] == path.stat().st_size
    assert v["precision"] == "int8" and v["passed"] is report.passed
    assert report.bytes == v["components"]["model"]["bytes"] and report.fp32_bytes == before["variants"]["fp32"]["components"]["model"]["bytes"]
    # quantized: int8 initializers and integer ops, smaller than fp32
    graph = onnx.load(str(path)).graph
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)
    assert any(n.op_type == "MatMulIntegerToFloat" for n in graph.node)  # per-row int8 (rowquant.py)
    assert v["components"]["model"]["bytes"] < before["variants"]["fp32"]["components"]["model"]["bytes"]
    _assert_consistent(art)


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
def test_fp32_untouched(int8_runs, task):
    art, before, _, _ = int8_runs[task]
    old, new = before["variants"]["fp32"], _manifest(art)["variants"]["fp32"]
    for key in ("components", "precision", "passed", "tolerance", "metrics"):
        assert new[key] == old[key], key
    assert sha256_file(art / new["components"]["model"]["file"]) == old["components"]["model"]["sha256"]


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
def test_int8_manifest_metrics(int8_runs, task):
    art, _, report, _ = int8_runs[task]
    v = _manifest(art)["variants"]["int8"]
    gate, q = v["metrics"]["gate"], v["metrics"]["quantization"]
    assert gate["texts"] == LIMIT and gate["data"].endswith("calib.txt")
    if task == "feature-extraction":
        assert {"mean_cosine", "min_cosine", "required_mean", "required_min"} <= set(gate)
        assert gate["required_mean"] == pytest.approx(0.995) and gate["required_min"] == pytest.approx(0.98)
    else:
        assert "agreement" in gate and "accuracy" not in gate  # the .txt has no labels
        assert gate["required_agreement"] == pytest.approx(0.99)
    _gate_agrees(gate, v["passed"])
    assert v["tolerance"]["max_drop"] == (0.005 if task == "feature-extraction" else 0.01)  # the default applied
    target = preset_for(None)
    assert q["mode"] == "int8-dynamic" and q["target"] == target.target and q["per_channel"] == target.per_channel
    assert q["weights"] in target.row_weights and q["reduce_range"] == WEIGHT_FORMATS[q["weights"]].reduce_range
    # the measured search: per weight format a ranking of every projection, then plans keeping its head in fp32
    assert set(q["sensitivity"]) == {t["weights"] for t in q["tried"]}
    graph = onnx.load(str(art / "model.onnx")).graph
    for fmt, ranking in q["sensitivity"].items():
        assert sorted(r["node"] for r in ranking) == sorted(n.name for n in quantizable(graph))
        assert [r["error"] for r in ranking] == sorted((r["error"] for r in ranking), reverse=True)
        rows = [t for t in q["tried"] if t["weights"] == fmt]
        assert rows[0]["plan"] == f"{fmt}: all layers quantized"
    assert q["tried"] == report.tried
    for t in q["tried"]:
        assert isinstance(t["passed"], bool) and t["bytes"] > 0
        assert ("p50_ms" in t) is t["passed"]
    assert q["plan"] == report.plan and q["plan"] in [t["plan"] for t in q["tried"]]
    top = [r["node"] for r in q["sensitivity"][q["weights"]]]
    assert q["kept_nodes"] == top[: len(q["kept_nodes"])]  # the most sensitive first
    assert q["why"] == report.why and q["why"]
    inv = v["metrics"]["batch_invariance"]
    assert inv == report.batch_invariance and inv["invariant"] is True and inv["max_abs_diff"] <= inv["tolerance"]


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
def test_int8_latency_and_choice(int8_runs, task):
    art, _, report, messages = int8_runs[task]
    data = _manifest(art)
    v = data["variants"]["int8"]
    q = v["metrics"]["quantization"]
    assert any("building int8" in m for m in messages)
    if not report.passed:
        assert v["latency"] == {} and report.p50_ms is None
        return
    assert v["latency"]["cpu"]["p50_ms"] > 0 and data["variants"]["fp32"]["latency"]["cpu"]["p50_ms"] > 0
    assert (v["latency"]["cpu"]["batch"], v["latency"]["cpu"]["seq"]) == (1, min(128, data["max_length"]))
    assert report.p50_ms == v["latency"]["cpu"]["p50_ms"]
    assert report.fp32_p50_ms == data["variants"]["fp32"]["latency"]["cpu"]["p50_ms"]
    from toolchain.variants.quantize import SAME_SPEED

    passed = [t for t in q["tried"] if t["passed"]]
    fastest = min(t["p50_ms"] for t in passed)  # within noise of the fastest, the smallest file is kept
    chosen = min((t for t in passed if t["p50_ms"] <= fastest * SAME_SPEED), key=lambda t: (t["bytes"], t["p50_ms"]))
    assert q["plan"] == chosen["plan"] and report.p50_ms == chosen["p50_ms"]


def test_int8_embed_loads_and_runs(int8_runs):
    art, _, report, _ = int8_runs["feature-extraction"]
    texts = SENTENCES[:5]
    model = load(art, variant="int8", provider="cpu")
    assert model.info()["variant"] == "int8" and model.info()["precision"] == "int8"
    got = model.embed(texts)
    ref = load(art, variant="fp32", provider="cpu").embed(texts)
    assert got.shape == ref.shape == (5, 32)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    cos = (got * ref).sum(axis=1)
    assert cos.min() > 0.98 and not np.array_equal(got, ref)
    if report.passed:
        assert load(art, provider="cpu").info()["variant"] in ("fp32", "int8")


def test_int8_classify_loads_and_runs(int8_runs):
    art, _, _, _ = int8_runs["text-classification"]
    out = load(art, variant="int8", provider="cpu").classify(SENTENCES[:3])
    assert len(out) == 3
    assert all(o["label"] in ("negative", "positive") and 0.5 <= o["score"] <= 1 for o in out)


# -- the gate really rejects ----------------------------------------------------------------------------
def test_zero_budget_rejects_int8_but_keeps_it(tiny_artifact, calib, tmp_path):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    report = quantize(art, "int8-dynamic", calib=calib["txt"], max_drop=0.0, limit=16)
    assert report.passed is False and report.p50_ms is None
    assert report.gate.metrics["mean_cosine"] < 1.0
    data = _manifest(art)
    v = data["variants"]["int8"]
    assert v["passed"] is False and v["latency"] == {} and v["tolerance"]["max_drop"] == 0.0
    assert (art / v["components"]["model"]["file"]).is_file()  # kept for inspection
    _gate_agrees(v["metrics"]["gate"], False)
    tried = v["metrics"]["quantization"]["tried"]
    ranked = len(quantizable(onnx.load(str(art / "model.onnx")).graph))
    counts = [0, 1, 2, 4, 8, 16, 32][: 1 + next(i for i, k in enumerate([0, 1, 2, 4, 8, 16, 32]) if k >= ranked)]
    per_format = [0 if "all layers" in t["plan"] else int(t["plan"].split(": ")[1].split()[0]) for t in tried]
    assert per_format == (counts[:-1] + [ranked]) * len(v["metrics"]["quantization"]["sensitivity"])
    assert not any(t["passed"] for t in tried)
    score = {t["plan"]: t["mean_cosine"] + t["min_cosine"] for t in tried}  # rounded to 5 places in the rows
    assert score[v["metrics"]["quantization"]["plan"]] >= max(score.values()) - 2e-5  # the closest one is kept
    _assert_consistent(art)

    assert load(art, provider="cpu").info()["variant"] == "fp32"
    assert load(art, variant="int8", provider="cpu").embed(["hello there"]).shape == (1, 32)
    # not chosen by auto even when it is recorded as much faster
    data["variants"]["fp32"]["latency"] = {"cpu": {"p50_ms": 10.0}}
    data["variants"]["int8"]["latency"] = {"cpu": {"p50_ms": 1.0}}
    (art / "manifest.json").write_text(json.dumps(data))
    assert load(art, provider="cpu").info()["variant"] == "fp32"


# -- classifiers: labels, agreement -----------------------------------------------------------------------
def test_classifier_with_labelled_tsv(tiny_artifact, calib, tmp_path, fast_timing):
    art = _copy(tiny_artifact("bert", "text-classification"), tmp_path / "art")
    report = quantize(art, "int8-dynamic", calib=calib["tsv"], max_drop=0.05, limit=LIMIT)
    gate = _manifest(art)["variants"]["int8"]["metrics"]["gate"]
    assert {"accuracy", "fp32_accuracy", "accuracy_drop", "agreement"} <= set(gate)
    assert gate["max_drop"] == 0.05 and gate["texts"] == LIMIT
    assert 0 <= gate["accuracy"] <= 1 and 0 <= gate["fp32_accuracy"] <= 1
    assert gate["accuracy_drop"] == pytest.approx(gate["fp32_accuracy"] - gate["accuracy"])
    _gate_agrees(gate, report.passed)
    assert all("accuracy_drop" in t for t in report.tried)
    assert "accuracy" in report.gate.summary
    _assert_consistent(art)


def test_classifier_labels_outside_classes(tiny_artifact, calib, tmp_path):
    art = _copy(tiny_artifact("bert", "text-classification"), tmp_path / "art")
    before = (art / "manifest.json").read_bytes()
    with pytest.raises(ToolchainError, match=r"badlabels\.tsv has labels outside 0\.\.1, the model's 2 classes"):
        quantize(art, "int8-dynamic", calib=calib["bad"], limit=LIMIT)
    assert (art / "manifest.json").read_bytes() == before
    _assert_consistent(art)


# -- the other modes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, op", [("fp16", None), ("int4", "MatMulNBits"), ("int8-static", "QuantizeLinear")])
def test_other_modes_make_loadable_variants(tiny_artifact, calib, tmp_path, fast_timing, mode, op):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    report = quantize(art, mode, calib=calib["txt"], limit=16)
    spec = MODES[mode]
    assert report.variant == spec.variant
    v = _manifest(art)["variants"][spec.variant]
    assert v["precision"] == {"fp16": "fp16", "int4": "int4", "int8-static": "int8"}[mode]
    assert v["passed"] is report.passed
    if not spec.measured:  # int8-static's measured search: tests/variants/test_static.py
        assert len(v["metrics"]["quantization"]["tried"]) == len(candidates(spec, art / "model.onnx"))
    graph = onnx.load(str(art / v["components"]["model"]["file"])).graph
    if mode == "fp16":
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
        assert v["metrics"]["quantization"]["plan"] == "as converted"
    else:
        assert any(n.op_type == op for n in graph.node)
    model = load(art, variant=spec.variant, provider="cpu")
    assert model.info()["precision"] == v["precision"]
    out = model.embed(SENTENCES[:2])
    assert out.shape == (2, 32) and np.isfinite(out).all()
    _assert_consistent(art)


def test_candidates_per_mode(tiny_artifact):
    src = tiny_artifact("bert") / "model.onnx"
    assert [p.label for p in candidates(MODES["fp16"], src)] == ["as converted"]
    plans = candidates(MODES["int4"], src)
    assert [len(p.exclude) for p in plans] == [0, 2, 4] and {p.keep for p in plans} == {"fp32"}
    plans = candidates(MODES["int8-dynamic"], src, preset_for("avx2"))  # two weight formats x the ladder
    assert [(p.weights, len(p.exclude)) for p in plans] == [(f, k) for f in ("u8u8", "u8s8-7bit") for k in (0, 2, 4)]


# -- replacing and crashing --------------------------------------------------------------------------------
def test_requantize_replaces_variant(tiny_artifact, calib, tmp_path, fast_timing):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    shas, files = [], []
    for target in ("avx512-vnni", "avx2", "avx512-vnni"):
        quantize(art, "int8-dynamic", calib=calib["txt"], target=target, limit=16)
        data = _manifest(art)
        assert sorted(data["variants"]) == ["fp32", "int8"]
        v = data["variants"]["int8"]
        q = v["metrics"]["quantization"]
        assert q["target"] == target and q["weights"] in preset_for(target).row_weights
        shas.append(v["components"]["model"]["sha256"])
        files.append(v["components"]["model"]["file"])
        assert _onnx_files(art) == {"model.onnx", v["components"]["model"]["file"]}  # the replaced file is gone
        _assert_consistent(art)
    assert shas[0] != shas[1]  # uint8 or 7-bit weights for avx2: a different file
    assert shas[2] == shas[0]  # the same settings give the same bytes again
    assert files[0] != files[1] and files[1] != files[2]  # a new file never overwrites the one still listed


def test_crash_in_add_variant_leaves_artifact_as_it_was(tiny_artifact, calib, tmp_path, fast_timing, monkeypatch):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    quantize(art, "int8-dynamic", calib=calib["txt"], limit=16)
    before = (art / "manifest.json").read_bytes()
    old = _manifest(art)["variants"]["int8"]

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(qmod, "add_variant", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        quantize(art, "int8-dynamic", calib=calib["txt"], target="avx2", limit=16)
    assert (art / "manifest.json").read_bytes() == before
    assert not list(art.glob(".int8.tmp-*"))
    _assert_consistent(art)
    assert load(art, variant="int8", provider="cpu").info()["file"] == str(art / old["components"]["model"]["file"])


@pytest.mark.parametrize("exc", [RuntimeError("onnx says no"), KeyboardInterrupt()])
def test_crash_mid_build_leaves_no_trace(tiny_artifact, calib, tmp_path, fast_timing, monkeypatch, exc):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    before = (art / "manifest.json").read_bytes()
    spec = MODES["int8-dynamic"]
    calls = []

    def flaky(src, dst, preset, plan):
        calls.append(plan.label)
        if len(calls) == 2:  # after one candidate was built and gated
            raise exc
        spec.build(src, dst, preset, plan)

    monkeypatch.setitem(MODES, "int8-dynamic", dataclasses.replace(spec, build=flaky))
    expected = ToolchainError if isinstance(exc, Exception) else KeyboardInterrupt
    with pytest.raises(expected) as err:
        quantize(art, "int8-dynamic", calib=calib["txt"], limit=16, target="avx2")  # 2 formats: 2 builds at least
    if expected is ToolchainError:
        assert "int8-dynamic quantization failed on" in str(err.value) and "onnx says no" in str(err.value)
    assert len(calls) == 2
    assert (art / "manifest.json").read_bytes() == before
    assert not list(art.glob(".int8.tmp-*"))
    _assert_consistent(art)


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "int3"}, r"mode 'int3' is not known; use one of int8-dynamic, int8-static, fp16, int4"),
    ({"target": "tpu"}, r"target 'tpu' is not known; use one of avx2"),
    ({"calib": "missing"}, r"missing\.txt does not exist"),
    ({"calib": "empty"}, r"empty\.txt holds no texts"),
    ({"max_drop": 1.0}, r"max-drop must be in \[0, 1\), got 1\.0"),
    ({"max_drop": -0.1}, r"max-drop must be in \[0, 1\), got -0\.1"),
    ({"limit": 0}, r"limit must be a positive number"),
])
def test_bad_input(tiny_artifact, calib, tmp_path, fast_timing, kwargs, match):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    before = (art / "manifest.json").read_bytes()
    kwargs = dict(kwargs)
    mode = kwargs.pop("mode", "int8-dynamic")
    if kwargs.get("calib") == "missing":
        kwargs["calib"] = tmp_path / "missing.txt"
    else:
        kwargs["calib"] = calib[kwargs.get("calib", "txt")]
    kwargs.setdefault("limit", 8)
    with pytest.raises(ToolchainError, match=match):
        quantize(art, mode, **kwargs)
    assert (art / "manifest.json").read_bytes() == before
    _assert_consistent(art)


def test_not_an_artifact(tmp_path, calib):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "model.onnx").write_bytes(b"not really")
    with pytest.raises(ToolchainError, match=r"manifest\.json is missing; .* is not a complete artifact"):
        quantize(tmp_path / "plain", "int8-dynamic", calib=calib["txt"])
    with pytest.raises(ToolchainError, match="is not an artifact directory"):
        quantize(tmp_path / "nowhere", "int8-dynamic", calib=calib["txt"])
    assert not list((tmp_path / "plain").glob(".*tmp*"))
