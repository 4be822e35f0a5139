"""Schema v2: variants made of components (each file and its external data verified at load), typed
sections, and version-1 artifacts that still load and are upgraded when next written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from damage import flip_middle_byte
from toolchain.artifact.manifest_writes import add_variant, update_manifest
from toolchain.runtime import ArtifactError, Embedder, load, read_manifest
from toolchain.runtime.manifest import SCHEMA_VERSION, Component, Generation, TokenizerInfo, Variant, sha256_file

FIXTURE = Path(__file__).parent / "fixtures" / "manifest_v1.json"


@pytest.fixture
def art(tiny_artifact, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(tiny_artifact("bert"), dst)
    return dst


@pytest.fixture
def v1_art(art):
    """The tiny artifact with its manifest replaced by the checked-in v1 fixture (sha256 and size made real)."""
    data = json.loads(FIXTURE.read_text())
    assert data["schema_version"] == 1 and "components" not in data["variants"]["fp32"]
    data["variants"]["fp32"].update(sha256=sha256_file(art / "model.onnx"), bytes=(art / "model.onnx").stat().st_size)
    (art / "manifest.json").write_text(json.dumps(data))
    return art


def _manifest(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def test_export_writes_v2_with_components(art):
    data = _manifest(art)
    assert data["schema_version"] == SCHEMA_VERSION == 2
    model = data["variants"]["fp32"]["components"]["model"]
    assert model == {"file": "model.onnx", "sha256": sha256_file(art / "model.onnx"),
                     "bytes": (art / "model.onnx").stat().st_size}
    assert not {"file", "sha256", "bytes"} & set(data["variants"]["fp32"])  # one place per fact


def test_v1_artifact_loads_and_runs(v1_art, tiny_artifact):
    m = read_manifest(v1_art)
    assert m.schema_version == 1
    v = m.variant("fp32")
    assert set(v.components) == {"model"} and v.file == "model.onnx"
    assert v.sha256 == sha256_file(v1_art / "model.onnx") and v.bytes == (v1_art / "model.onnx").stat().st_size
    model = load(v1_art)
    assert isinstance(model, Embedder)
    np.testing.assert_allclose(model.embed(["a v1 artifact"]), load(tiny_artifact("bert")).embed(["a v1 artifact"]),
                               atol=1e-6)


def test_v1_damaged_file_is_still_refused(v1_art):
    flip_middle_byte(v1_art / "model.onnx")
    with pytest.raises(ArtifactError, match=r"model\.onnx does not match the sha256"):
        load(v1_art)


def test_writing_a_v1_artifact_upgrades_it(v1_art):
    update_manifest(v1_art, lambda d: d.setdefault("bench", {}))
    data = _manifest(v1_art)
    assert data["schema_version"] == 2 and data["variants"]["fp32"]["components"]["model"]["file"] == "model.onnx"
    assert "file" not in data["variants"]["fp32"]
    assert data["variants"]["fp32"]["latency"]["cpu"]["p50_ms"] == 1.0  # what v1 knew is kept
    assert load(v1_art).info()["variant"] == "fp32"


def test_add_variant_to_a_v1_artifact_upgrades_it(v1_art, tmp_path):
    built = tmp_path / "built.onnx"
    shutil.copy(v1_art / "model.onnx", built)
    add_variant(v1_art, "int8", built, {"precision": "int8", "passed": True, "metrics": {}, "latency": {}})
    data = _manifest(v1_art)
    assert data["schema_version"] == 2
    assert set(data["variants"]) == {"fp32", "int8"}
    assert all(set(v["components"]) == {"model"} for v in data["variants"].values())
    assert data["variants"]["int8"]["components"]["model"]["file"] == "model.int8.onnx"
    assert load(v1_art, variant="int8").info()["variant"] == "int8"


def _with_external_data(art: Path) -> Path:
    """Re-save model.onnx with its weights in model.onnx_data and record both in the manifest."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(art / "model.onnx"))
    onnx.save(model, str(art / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx_data", size_threshold=0)
    data = _manifest(art)
    data["variants"]["fp32"]["components"]["model"] = Component.of(art, "model.onnx").to_dict()
    (art / "manifest.json").write_text(json.dumps(data))
    return art / "model.onnx_data"


def test_external_data_is_listed_and_verified(art):
    extra = _with_external_data(art)
    v = read_manifest(art).variant("fp32")
    (listed,) = v.components["model"].external_data
    assert listed.file == "model.onnx_data" and listed.sha256 == sha256_file(extra)
    assert v.bytes == (art / "model.onnx").stat().st_size + extra.stat().st_size
    assert load(art).embed(["weights outside the graph"]).shape == (1, 32)
    flip_middle_byte(extra)
    with pytest.raises(ArtifactError, match=r"model\.onnx_data does not match the sha256"):
        load(art)


def test_missing_external_data_is_refused(art):
    _with_external_data(art).unlink()
    with pytest.raises(ArtifactError, match=r"model\.onnx_data is missing although manifest\.json lists it"):
        load(art)


def test_every_component_is_verified(art):
    shutil.copy(art / "model.onnx", art / "decoder.onnx")
    data = _manifest(art)
    data["variants"]["fp32"]["components"]["decoder"] = Component.of(art, "decoder.onnx").to_dict()
    (art / "manifest.json").write_text(json.dumps(data))
    m = read_manifest(art)
    assert m.verify_components("fp32") == {"model": art / "model.onnx", "decoder": art / "decoder.onnx"}
    (art / "decoder.onnx").write_bytes(b"\x00")
    with pytest.raises(ArtifactError, match=r"decoder\.onnx does not match the sha256"):
        m.verify_components("fp32")
    with pytest.raises(ArtifactError, match=r"decoder\.onnx does not match the sha256"):
        load(art)


def test_a_variant_without_a_model_component_names_its_components(art):
    data = _manifest(art)
    comps = data["variants"]["fp32"]["components"]
    comps["encoder"] = comps.pop("model")
    (art / "manifest.json").write_text(json.dumps(data))
    m = read_manifest(art)
    assert set(m.verify_components("fp32")) == {"encoder"}
    with pytest.raises(ArtifactError, match="has components encoder, not one 'model' graph"):
        m.verify("fp32")


@pytest.mark.parametrize("edit, message", [
    (lambda v: v.update(components={}), "variant 'fp32' lists no components"),
    (lambda v: v.pop("components"), "variant 'fp32' lacks components"),
    (lambda v: v["components"]["model"].update(bytes="4 MB"),
     r"variants\.fp32\.components\.model\.bytes should be a positive integer"),
    (lambda v: v["components"]["model"].update(external_data=[{"file": "x"}]),
     r"variant 'fp32' \(external data of 'model'\) lacks sha256, bytes"),
])
def test_malformed_components_are_refused(art, edit, message):
    data = _manifest(art)
    edit(data["variants"]["fp32"])
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        load(art)


def test_typed_sections_and_their_defaults(art):
    m = read_manifest(art)
    assert m.tokenizer == TokenizerInfo("tokenizer.json", m.tokenizer.pad_id, m.tokenizer.pad_token)
    assert m.generation == Generation() and Generation().padding_side == "left"
    assert [t.name for t in m.inputs][:2] == ["input_ids", "attention_mask"]
    assert m.exporter == m.exporter_info.name == "optimum"
    for section in (m.tokenizer, m.pooling, m.source, Generation(eos_token_ids=(2,), padding_side="right")):
        assert type(section).from_dict(section.to_dict()) == section
    data = _manifest(art)
    data.pop("tokenizer")
    (art / "manifest.json").write_text(json.dumps(data))
    assert read_manifest(art).tokenizer == TokenizerInfo()  # the defaults: tokenizer.json, pad id 0, [PAD]
    v = read_manifest(art).variant("fp32")
    assert Variant.from_dict("fp32", v.to_dict(), art).to_dict() == v.to_dict()
