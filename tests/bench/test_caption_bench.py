"""`toolchain bench` on a captioner: greedy caption latency per batch for the variant and for PyTorch generate()
on the same pixel values, with the ratio, and latency records for variant='auto'."""

from __future__ import annotations

import shutil

from toolchain.bench.core import BENCHES, bench, format_table
from toolchain.runtime import read_manifest


def test_caption_latency_against_generate(caption_artifact, tmp_path):
    art = shutil.copytree(caption_artifact, tmp_path / "captioner")
    report = bench(art, batches=(1, 2), runs=1, vs_pytorch=True)
    assert report["task"] == "image-to-text" and set(report["rows"]) == {"fp32", "pytorch"}
    fp32, torch_row = report["rows"]["fp32"]["shapes"], report["rows"]["pytorch"]["shapes"]
    assert [s["batch"] for s in fp32] == [1, 2] and all(s["seq"] == 32 for s in fp32)
    # the same images, greedy, up to the same number of new tokens: both engines write the same number of tokens
    assert [s["new_tokens"] for s in fp32] == [s["new_tokens"] for s in torch_row]
    assert all(s["p50_vs_pytorch"] > 0 for s in fp32) and "captions/s" in " ".join(report["notes"])
    assert "pytorch" in format_table(report) and "cpu" in read_manifest(art).variant("fp32").latency
    assert BENCHES["caption"].__name__ == "_bench_captions"
