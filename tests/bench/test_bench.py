"""bench: per-variant latency in child processes, PyTorch comparison, JSON + chart + manifest records."""

from __future__ import annotations

import json
import shutil

import pytest

from toolchain.bench.core import bench, format_table
from toolchain.runtime import ToolchainError, load

FAST = {"runs": 3, "batches": (1, 2), "seqs": (8, 16)}
SHAPES = [(1, 8), (1, 16), (2, 8), (2, 16)]


def _copy(src, dst, fake_int8=False):
    shutil.copytree(src, dst)
    if fake_int8:
        path = dst / "manifest.json"
        data = json.loads(path.read_text())
        data["variants"]["int8"] = dict(data["variants"]["fp32"])
        path.write_text(json.dumps(data))
    return dst


@pytest.fixture(scope="module")
def benched(tiny_artifact, tmp_path_factory):
    """One full bench of a tiny BERT copy with two variants, PyTorch and the real-sentences scenario."""
    art = _copy(tiny_artifact("bert"), tmp_path_factory.mktemp("bench") / "art", fake_int8=True)
    messages = []
    report = bench(art, real=True, progress=messages.append, **FAST)
    return art, report, messages


def test_json_structure(benched):
    art, report, messages = benched
    on_disk = json.loads((art / "bench.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert set(on_disk["rows"]) == {"fp32", "int8", "pytorch"}
    assert on_disk["provider"] == "cpu" and on_disk["runs"] == 3 and on_disk["threads"] >= 1
    assert on_disk["reference_shape"] == {"batch": 1, "seq": 8}  # (1, 128) not measured: the first shape
    for row in on_disk["rows"].values():
        assert row["bytes"] > 0 and row["peak_rss_mb"] > 0
        assert [(s["batch"], s["seq"]) for s in row["shapes"]] == SHAPES
        for s in row["shapes"]:
            assert s["p50_ms"] > 0 and s["p95_ms"] >= s["p50_ms"] and s["items_per_s"] > 0
    assert any("fp32" in m for m in messages) and any("pytorch" in m for m in messages)


def test_pytorch_ratios(benched):
    _, report, _ = benched
    torch_row = report["rows"]["pytorch"]
    assert torch_row["engine"] == "pytorch"
    for name in ("fp32", "int8"):
        for mine, ref in zip(report["rows"][name]["shapes"], torch_row["shapes"]):
            assert mine["p50_vs_pytorch"] == pytest.approx(mine["p50_ms"] / ref["p50_ms"])
    assert "pytorch" in format_table(report)


def test_real_sentences(benched):
    _, report, _ = benched
    for name in ("fp32", "int8", "pytorch"):
        real = report["rows"][name]["real"]
        assert real["texts"] == 256 and real["sentences_per_s"] > 0
    assert report["rows"]["fp32"]["real"]["speedup_vs_pytorch"] > 0
    assert "sentences/s" in format_table(report)


def test_chart_is_png(benched):
    art, _, _ = benched
    assert (art / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(art.glob(".bench*tmp*"))


def test_manifest_latency_and_auto(benched):
    art, report, _ = benched
    data = json.loads((art / "manifest.json").read_text())
    p50 = {}
    for name in ("fp32", "int8"):
        entry = data["variants"][name]["latency"]["cpu"]
        assert (entry["batch"], entry["seq"]) == (1, 8) and entry["p50_ms"] > 0 and entry["p95_ms"] > 0
        assert entry["threads"] == report["threads"] and entry["measured"]
        p50[name] = entry["p50_ms"]
    assert data["bench"]["cpu"]["json"] == "bench.json" and data["bench"]["cpu"]["chart"] == "bench.png"
    from toolchain.runtime.model import MIN_GAIN

    # auto: the lossy variant only when it is the fastest by at least MIN_GAIN, else the exact fp32
    expected = "int8" if p50["int8"] * MIN_GAIN <= p50["fp32"] else "fp32"
    assert load(art, provider="cpu").info()["variant"] == expected


def test_named_variant_no_pytorch_outside_paths(tiny_artifact, tmp_path):
    art = _copy(tiny_artifact("bert", "text-classification"), tmp_path / "art", fake_int8=True)
    out = tmp_path / "out"
    report = bench(art, variants=["int8"], vs_pytorch=False, real=False, json_path=out / "b.json",
                   chart_path=out / "b.png", runs=2, batches=(1,), seqs=(128, 8))
    assert set(report["rows"]) == {"int8"} and report["rows"]["int8"]["real"] is None
    assert (out / "b.json").is_file() and (out / "b.png").is_file()
    data = json.loads((art / "manifest.json").read_text())
    assert data["variants"]["int8"]["latency"]["cpu"]["seq"] == 128  # the reference shape when measured
    assert data["variants"]["fp32"]["latency"] == {}
    assert data["bench"]["cpu"]["json"] == str(out / "b.json")


def test_missing_source_skips_pytorch(tiny_artifact, tmp_path):
    art = _copy(tiny_artifact("bert"), tmp_path / "art")
    data = json.loads((art / "manifest.json").read_text())
    data["source"]["path"] = str(tmp_path / "gone")
    (art / "manifest.json").write_text(json.dumps(data))
    report = bench(art, real=False, runs=2, batches=(1,), seqs=(8,))
    assert "pytorch" not in report["rows"]
    assert any("PyTorch skipped" in n and "gone" in n for n in report["notes"])
    assert "PyTorch skipped" in format_table(report)


@pytest.mark.parametrize("kwargs, match", [
    ({"batches": ()}, "batches must be a non-empty list of positive integers"),
    ({"batches": (1, 0)}, "batches must be"),
    ({"batches": (1.5,)}, "batches must be"),
    ({"seqs": (-1,)}, "seqs must be"),
    ({"seqs": (100000,)}, "exceeds the model's max_length; use lengths from 1 to"),
    ({"provider": "tpu"}, "use one of cpu, cuda"),
    ({"variants": ["nope"]}, "'nope' is not in .*choose from fp32"),
    ({"runs": 0}, "runs must be a positive integer"),
    ({"threads": 0}, "threads must be"),
])
def test_bad_arguments(tiny_artifact, kwargs, match):
    art = tiny_artifact("bert")  # rejected before anything is measured or written
    with pytest.raises(ToolchainError, match=match):
        bench(art, **kwargs)
    assert not (art / "bench.json").exists()


def _child_peak(job):
    from toolchain.bench.harness import peak_rss_mb

    return {"peak": peak_rss_mb()}


def test_peak_memory_is_the_childs_own_not_the_parents():
    """ru_maxrss survives exec, so a child spawned by a big parent would report the parent's peak."""
    from toolchain.bench.harness import in_child

    ballast = bytearray(400 << 20)  # 400 MB, touched so it is resident
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    peak = in_child(_child_peak, {})["peak"]
    assert 0 < peak < 300, peak
    del ballast


def test_best_pass_keeps_each_shapes_faster_pass():
    from toolchain.bench.harness import best_pass

    slow = {"shapes": [{"p50_ms": 9.0, "seq": 16}, {"p50_ms": 4.0, "seq": 128}], "real": {"sentences_per_s": 10.0},
            "peak_rss_mb": 100.0, "provider_used": "cpu"}
    fast = {"shapes": [{"p50_ms": 5.0, "seq": 16}, {"p50_ms": 6.0, "seq": 128}], "real": {"sentences_per_s": 12.0},
            "peak_rss_mb": 90.0, "provider_used": "cpu"}
    best = best_pass([slow, fast])
    assert [s["p50_ms"] for s in best["shapes"]] == [5.0, 4.0]
    assert best["real"]["sentences_per_s"] == 12.0 and best["peak_rss_mb"] == 100.0 and best["passes"] == 2
