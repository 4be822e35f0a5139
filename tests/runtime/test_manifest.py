"""Damaged artifacts are refused at load with an error that names the file and the fix."""

from __future__ import annotations

import json
import shutil

import pytest

from damage import flip_middle_byte
from toolchain.runtime import ArtifactError, load


@pytest.fixture
def art(tiny_artifact, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(tiny_artifact("bert"), dst)
    return dst


def _edit(art, fn):
    path = art / "manifest.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_flipped_byte_is_refused(art):
    model = art / "model.onnx"
    flip_middle_byte(model)
    with pytest.raises(ArtifactError, match=r"model\.onnx does not match the sha256"):
        load(art)


def test_missing_variant_file(art):
    (art / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"model\.onnx is missing"):
        load(art)


def test_missing_manifest(art):
    (art / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest\.json is missing"):
        load(art)


def test_malformed_manifest(art):
    (art / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot be read as JSON"):
        load(art)


def test_newer_schema(art):
    _edit(art, lambda d: d.update(schema_version=99))
    with pytest.raises(ArtifactError, match="newer than this toolchain's 2; upgrade"):
        load(art)


def test_variant_without_sha(art):
    _edit(art, lambda d: d["variants"]["fp32"]["components"]["model"].pop("sha256"))
    with pytest.raises(ArtifactError, match="lacks sha256"):
        load(art)


def test_not_a_directory(tmp_path):
    with pytest.raises(ArtifactError, match="is not an artifact directory"):
        load(tmp_path / "missing")


def test_variant_escaping_the_artifact(art, tmp_path):
    shutil.copy(art / "model.onnx", tmp_path / "outside.onnx")
    _edit(art, lambda d: d["variants"]["fp32"]["components"]["model"].update(file="../outside.onnx"))
    with pytest.raises(ArtifactError, match="outside the artifact"):
        load(art)


def test_failed_variants_are_not_auto(art):
    def add_failed(d):
        v = dict(d["variants"]["fp32"], passed=False, latency={"cpu": {"p50_ms": 0.001}})
        d["variants"]["int8"] = v
    _edit(art, add_failed)
    assert load(art).info()["variant"] == "fp32"
    assert load(art, variant="int8").info()["variant"] == "int8"  # kept for inspection


def test_auto_picks_fastest_passed_variant(art):
    def add(d):
        d["variants"]["fp32"]["latency"] = {"cpu": {"p50_ms": 5.0}}
        d["variants"]["int8"] = dict(d["variants"]["fp32"], latency={"cpu": {"p50_ms": 2.0}})
    _edit(art, add)
    assert load(art, provider="cpu").info()["variant"] == "int8"
