"""optimize: graph rewrites kept only when they pass the gate and are measurably faster; auto's MIN_GAIN."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from toolchain.variants import optimize as omod
from toolchain.variants.gate import GateResult
from toolchain.variants.optimize import MIN_SPEEDUP, REWRITES, Rewrite, optimize
from toolchain.runtime import ToolchainError, load
from toolchain.runtime.manifest import read_manifest, sha256_file
from toolchain.runtime.model import MIN_GAIN, choose_variant

TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate(["films", "books", "food", "music"] * 4)]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _manifest(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def _write_manifest(art: Path, data: dict) -> None:
    (art / "manifest.json").write_text(json.dumps(data))


def _assert_clean(art: Path) -> None:
    """Every listed file matches its record; no unlisted .onnx file and no temp directory is left."""
    data = _manifest(art)
    for name, v in data["variants"].items():
        assert sha256_file(art / v["components"]["model"]["file"]) == v["components"]["model"]["sha256"], name
    assert {p.name for p in art.glob("*.onnx")} == {v["components"]["model"]["file"] for v in data["variants"].values()}
    assert not list(art.glob(".*.tmp-*"))


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


def _timings(base_ms: float, variant_ms: float):
    """A measure_variants stand-in: the base (first name) at base_ms, the rewrite at variant_ms."""
    def fake(manifest, names, runs=30, **kwargs):
        assert len(names) == 2
        return {n: {"batch": 1, "seq": 128, "p50_ms": ms, "p95_ms": ms * 1.1, "items_per_s": 1000 / ms}
                for n, ms in zip(names, (base_ms, variant_ms))}
    return fake


def _timings_by_variant(base_ms: float, variant_ms: dict[str, float]):
    """A measure_variants stand-in: the base (first name) at base_ms, each rewrite at its own time."""
    def fake(manifest, names, runs=30, **kwargs):
        assert len(names) == 2
        return {n: {"batch": 1, "seq": 128, "p50_ms": ms, "p95_ms": ms * 1.1, "items_per_s": 1000 / ms}
                for n, ms in zip(names, (base_ms, variant_ms[names[1]]))}
    return fake


# -- real rewrites, faked timing: one measurably faster (kept), one slower (dropped) -----------------------
OPT_MS = {"ortopt": 5.0, "fused": 12.0}  # against fp32 at 10 ms: 2x faster, and 0.83x (slower)


@pytest.fixture(scope="module")
def optimized(tiny_artifact, calib, tmp_path_factory):
    art = _copy(tiny_artifact("bert"), tmp_path_factory.mktemp("opt") / "art")
    before = _manifest(art)
    messages: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(omod, "measure_variants", _timings_by_variant(10.0, OPT_MS))
        rows = optimize(art, calib=calib, runs=5, progress=messages.append)
    return art, before, rows, messages


def test_one_row_per_rewrite(optimized):
    art, _, rows, messages = optimized
    assert [r["rewrite"] for r in rows] == list(REWRITES) == ["ort-offline", "transformer-fusion"]
    assert [r["variant"] for r in rows] == ["ortopt", "fused"]
    assert [r["kept"] for r in rows] == [True, False]  # 2x faster and within the gate; slower
    assert [r["speedup"] for r in rows] == [2.0, pytest.approx(10 / 12, abs=1e-3)]
    for r in rows:
        assert r["speedup"] == pytest.approx(r["base_p50_ms"] / r["p50_ms"], rel=1e-3)
        assert "cosine to fp32" in r["reason"]  # both built fine on BERT: timed and gated
    assert sum("kept" in m for m in messages) == 1 and sum("dropped" in m for m in messages) == 1


def test_real_timing_follows_the_rule(tiny_artifact, calib, tmp_path):
    """Real rewrites timed on this machine: whatever the clock says, kept == (gate passed and speedup >=
    MIN_SPEEDUP). The rule itself is asserted both ways on faked timings (test_kept_only_when_faster)."""
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    rows = optimize(art, rewrites=["ort-offline"], calib=calib, runs=5)
    (r,) = rows
    assert "cosine to fp32 mean" in r["reason"]  # gated and timed
    assert r["kept"] is (r["variant"] in _manifest(art)["variants"])
    if r["speedup"] < MIN_SPEEDUP:
        assert r["kept"] is False


def test_real_run_manifest(optimized):
    art, before, rows, _ = optimized
    data = _manifest(art)
    assert set(data["variants"]) == {"fp32", "ortopt"}  # the kept one listed, the dropped one not
    assert data["optimize"] == json.loads(json.dumps({r["rewrite"]: r for r in rows}))
    for r in rows:
        if not r["kept"]:
            assert r["variant"] not in data["variants"]
            continue
        v = data["variants"][r["variant"]]
        assert v["passed"] is True and v["precision"] == "fp32"
        assert v["metrics"]["optimization"]["rewrite"] == r["rewrite"]
        assert v["metrics"]["optimization"]["base"] == "fp32"
        assert v["metrics"]["optimization"]["speedup"] >= MIN_SPEEDUP
        assert v["metrics"]["gate"]["mean_cosine"] >= v["metrics"]["gate"]["required_mean"]
        assert v["latency"]["cpu"]["p50_ms"] == r["p50_ms"]
        assert v["tolerance"]["max_drop"] == 0.005
        out = load(art, variant=r["variant"], provider="cpu").embed(TEXTS[:3])
        ref = load(art, variant="fp32", provider="cpu").embed(TEXTS[:3])
        assert np.allclose(out, ref, atol=1e-4)
    assert data["variants"]["fp32"]["components"]["model"]["sha256"] == before["variants"]["fp32"]["components"]["model"]["sha256"]
    _assert_clean(art)


# -- controlled timing: both paths, deterministically ----------------------------------------------------
@pytest.mark.parametrize("base_ms, variant_ms, kept", [
    (10.0, 5.0, True),     # 2x
    (10.5, 10.0, True),    # exactly MIN_SPEEDUP
    (10.0, 9.8, False),    # 1.02x: within the noise margin
    (10.0, 12.0, False),   # slower
])
def test_kept_only_when_faster(tiny_artifact, calib, tmp_path, monkeypatch, base_ms, variant_ms, kept):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    monkeypatch.setattr(omod, "measure_variants", _timings(base_ms, variant_ms))
    (row,) = optimize(art, rewrites=["ort-offline"], calib=calib, runs=3)
    assert row["kept"] is kept
    assert row["speedup"] == pytest.approx(base_ms / variant_ms, abs=1e-3)
    assert f"({base_ms / variant_ms:.2f}x)" in row["reason"]
    data = _manifest(art)
    assert data["optimize"]["ort-offline"]["kept"] is kept
    if kept:
        v = data["variants"]["ortopt"]
        assert v["metrics"]["optimization"] == {"rewrite": "ort-offline", "base": "fp32", "speedup": base_ms / variant_ms}
        assert v["latency"]["cpu"]["p50_ms"] == variant_ms
        assert data["variants"]["fp32"]["latency"]["cpu"]["p50_ms"] == base_ms
        assert (art / v["components"]["model"]["file"]).is_file()
        assert load(art, provider="cpu").info()["variant"] == "ortopt"  # auto takes the kept, faster one
    else:
        assert set(data["variants"]) == {"fp32"}
        assert {p.name for p in art.glob("*.onnx")} == {"model.onnx"}
    _assert_clean(art)


def test_fast_but_failing_gate_is_dropped(tiny_artifact, calib, tmp_path, monkeypatch):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    real_judge = omod.judge

    def failing_judge(*args, **kwargs):
        result, reference = real_judge(*args, **kwargs)
        return GateResult(result.metrics, False, "forced miss"), reference

    monkeypatch.setattr(omod, "judge", failing_judge)
    monkeypatch.setattr(omod, "measure_variants", _timings(10.0, 2.0))
    (row,) = optimize(art, rewrites=["ort-offline"], calib=calib, runs=3)
    assert row["kept"] is False and row["speedup"] == 5.0 and "forced miss" in row["reason"]
    assert "ortopt" not in _manifest(art)["variants"]
    _assert_clean(art)


def _copy_graph(src, dst, manifest):
    shutil.copyfile(src, dst)


def _nudged_graph(src, dst, manifest):
    """The graph with one weight matrix changed by ~1e-3: outputs differ from fp32 by a rounding-sized amount."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2)
    w = numpy_helper.to_array(init)
    noise = np.random.default_rng(0).normal(0, 1e-3, w.shape).astype(w.dtype)
    init.CopyFrom(numpy_helper.from_array(w + noise, init.name))
    onnx.save(model, str(dst))


@pytest.mark.parametrize("build, max_drop, kept", [
    (_copy_graph, 0.0, True),      # identical outputs: cosine exactly 1 passes even a zero budget
    (_nudged_graph, 0.0, False),   # any difference misses a zero budget
    (_nudged_graph, None, True),   # ... and passes the default budget (0.005)
])
def test_zero_budget_gate(tiny_artifact, calib, tmp_path, monkeypatch, build, max_drop, kept):
    """A zero budget passes a rewrite only when its outputs are identical to fp32's (controlled graphs)."""
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    monkeypatch.setitem(REWRITES, "controlled", Rewrite("controlled", "ctl", build))
    monkeypatch.setattr(omod, "measure_variants", _timings(10.0, 5.0))
    (row,) = optimize(art, rewrites=["controlled"], calib=calib, max_drop=max_drop, runs=3)
    data = _manifest(art)
    assert row["kept"] is kept, row["reason"]
    if kept:
        gate = data["variants"]["ctl"]["metrics"]["gate"]
        assert (gate["min_cosine"] == 1.0) is (build is _copy_graph)
    else:
        assert "ctl" not in data["variants"] and "cosine to fp32 mean" in row["reason"]
    _assert_clean(art)


def test_every_try_is_recorded_across_runs(tiny_artifact, calib, tmp_path, monkeypatch):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    monkeypatch.setattr(omod, "measure_variants", _timings(10.0, 9.9))
    optimize(art, rewrites=["ort-offline"], calib=calib, runs=3)
    monkeypatch.setattr(omod, "measure_variants", _timings(10.0, 5.0))
    optimize(art, rewrites=["transformer-fusion"], calib=calib, runs=3)
    data = _manifest(art)
    assert set(data["optimize"]) == {"ort-offline", "transformer-fusion"}
    assert data["optimize"]["ort-offline"]["kept"] is False and data["optimize"]["transformer-fusion"]["kept"] is True
    assert set(data["variants"]) == {"fp32", "fused"}
    _assert_clean(art)


def test_rewrite_failures_are_rows_not_crashes(tiny_artifact, calib, tmp_path, monkeypatch):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    data = _manifest(art)
    data["source"]["model_type"] = "gpt-neo"
    _write_manifest(art, data)

    def broken(src, dst, manifest):
        dst.write_bytes(b"half a graph")
        raise RuntimeError("optimizer blew up")

    monkeypatch.setitem(REWRITES, "broken", Rewrite("broken", "broken", broken))
    rows = optimize(art, rewrites=["transformer-fusion", "broken"], calib=calib, runs=3)
    assert [r["kept"] for r in rows] == [False, False]
    assert "no transformer fusions for model type 'gpt-neo'" in rows[0]["reason"]
    assert rows[1]["reason"] == "failed: optimizer blew up"
    after = _manifest(art)
    assert set(after["variants"]) == {"fp32"} and set(after["optimize"]) == {"transformer-fusion", "broken"}
    _assert_clean(art)


def test_other_base_variant(tiny_artifact, calib, tmp_path, monkeypatch):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    data = _manifest(art)
    data["variants"]["int8"] = dict(data["variants"]["fp32"], precision="int8")  # stands in for a quantized one
    _write_manifest(art, data)
    monkeypatch.setattr(omod, "measure_variants", _timings(10.0, 5.0))
    (row,) = optimize(art, base="int8", rewrites=["ort-offline"], calib=calib, runs=3)
    assert row["variant"] == "int8-ortopt" and row["kept"] is True
    v = _manifest(art)["variants"]["int8-ortopt"]
    assert v["precision"] == "int8" and v["metrics"]["optimization"]["base"] == "int8"


@pytest.mark.parametrize("kwargs, match", [
    ({"rewrites": ["ort-offline", "nope"]}, r"rewrite 'nope' is not known; use one of ort-offline, transformer-fusion"),
    ({"base": "int9"}, r"variant 'int9' is not in"),
    ({"max_drop": 1.5}, r"max-drop must be in \[0, 1\)"),
])
def test_bad_input(tiny_artifact, calib, tmp_path, monkeypatch, kwargs, match):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    monkeypatch.setattr(omod, "measure_variants", _timings(10.0, 5.0))
    before = (art / "manifest.json").read_bytes()
    with pytest.raises(ToolchainError, match=match):
        optimize(art, calib=calib, runs=3, **kwargs)
    assert (art / "manifest.json").read_bytes() == before
    _assert_clean(art)


# -- auto and MIN_GAIN --------------------------------------------------------------------------------
@pytest.fixture
def two_variants(tiny_artifact, tmp_path):
    """A copy with a passed 'int8' entry (the fp32 file under another name) and editable latencies."""
    art = _copy(tiny_artifact("bert"), tmp_path / "art")

    def set_latency(fp32_ms, int8_ms, int8_passed=True):
        data = _manifest(art)
        data["variants"]["fp32"]["latency"] = {"cpu": {"p50_ms": fp32_ms}}
        data["variants"]["int8"] = dict(data["variants"]["fp32"], precision="int8", passed=int8_passed,
                                        latency={"cpu": {"p50_ms": int8_ms}})
        _write_manifest(art, data)
        return read_manifest(art)

    return art, set_latency


@pytest.mark.parametrize("int8_ms, chosen", [
    (9.8, "fp32"),         # 2% faster: not worth its error
    (10.0 / MIN_GAIN + 0.01, "fp32"),
    (10.0 / 1.06, "int8"),
    (8.0, "int8"),         # 20% faster
    (12.0, "fp32"),
])
def test_auto_needs_min_gain(two_variants, int8_ms, chosen):
    art, set_latency = two_variants
    manifest = set_latency(10.0, int8_ms)
    assert choose_variant(manifest, "auto", "cpu") == chosen
    assert load(art, provider="cpu").info()["variant"] == chosen


def test_auto_ignores_failed_and_other_provider(two_variants):
    art, set_latency = two_variants
    assert choose_variant(set_latency(10.0, 1.0, int8_passed=False), "auto", "cpu") == "fp32"
    manifest = set_latency(10.0, 8.0)
    assert choose_variant(manifest, "auto", "cuda") == "fp32"  # nothing measured on cuda: the reference
    assert choose_variant(manifest, "int8", "cpu") == "int8"
    with pytest.raises(ToolchainError, match=r"variant 'int9' is not in"):
        choose_variant(manifest, "int9", "cpu")


def test_auto_picks_fastest_of_several(two_variants):
    art, set_latency = two_variants
    set_latency(10.0, 8.0)
    data = _manifest(art)
    data["variants"]["fp16"] = dict(data["variants"]["fp32"], precision="fp16", latency={"cpu": {"p50_ms": 6.0}})
    _write_manifest(art, data)
    assert choose_variant(read_manifest(art), "auto", "cpu") == "fp16"
