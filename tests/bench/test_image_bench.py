"""`toolchain bench` on an image classifier: images/s per batch for each variant and PyTorch eager on the same
pixel values, an end-to-end pass over PNG bytes, and the latency `auto` reads."""

from __future__ import annotations

import json
import shutil

from tiny_vision import tiny_vit, vit_artifact  # noqa: F401  (fixtures)
from toolchain.bench.core import bench, format_table
from toolchain.runtime import read_manifest


def test_images_per_second_against_pytorch(vit_artifact, tmp_path):
    art = shutil.copytree(vit_artifact, tmp_path / "vit")
    report = bench(art, batches=(1, 8), runs=3, vs_pytorch=True, real=True)
    on_disk = json.loads((art / "bench.json").read_text())
    assert on_disk == json.loads(json.dumps(report)) and set(report["rows"]) == {"fp32", "pytorch"}
    for row in report["rows"].values():
        assert [(s["batch"], s["seq"]) for s in row["shapes"]] == [(1, 32), (8, 32)]  # seq: the image side
        assert all(s["p50_ms"] > 0 and s["items_per_s"] > 0 for s in row["shapes"])
        assert row["images_per_s_end_to_end"] > 0 and row["peak_rss_mb"] > 0
    assert all("p50_vs_pytorch" in s for s in report["rows"]["fp32"]["shapes"])
    assert report["reference_shape"] == {"batch": 1, "seq": 32}
    assert any(n.startswith("end to end (64 PNGs") for n in report["notes"])
    assert read_manifest(art).variant("fp32").latency["cpu"]["batch"] == 1  # what auto ranks by
    table = format_table(report)
    assert "pytorch" in table and "items/s = images/s" in table
