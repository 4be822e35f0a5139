"""Export of image classifiers: optimum's graph, the manifest's preprocess section from the image processor, and
parity on images (logits within tolerance, each image alone as in the batch, the runtime's pixel values equal to
the image processor's), failing the export on a miss."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiny_vision import LABELS, build_tiny_vit, tiny_vit, vit_artifact  # noqa: F401  (fixtures)
from toolchain.export import vision
from toolchain.export.core import export
from toolchain.export.parity import Reference
from toolchain.runtime import load
from toolchain.runtime.errors import ExportError, ParityError, SourceError


def test_manifest_says_how_images_become_pixels(vit_artifact):
    m = json.loads((vit_artifact / "manifest.json").read_text())
    assert m["task"] == "image-classification" and m["labels"] == LABELS and m["tokenizer"] is None
    assert m["exporter"] == "optimum" and m["max_length"] == (32 // 8) ** 2 + 1
    assert m["preprocess"] == {"height": 32, "width": 32, "resize": True, "resample": "bilinear", "rescale": True,
                               "rescale_factor": pytest.approx(1 / 255), "normalize": True, "mean": [0.5, 0.4, 0.3],
                               "std": [0.2, 0.25, 0.3]}
    assert [i["name"] for i in m["inputs"]] == ["pixel_values"] and m["outputs"][0]["name"] == "logits"
    parity = m["variants"]["fp32"]["metrics"]["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["tokens_match"] and parity["texts"] == len(vision.parity_images())


def test_runtime_scores_equal_pytorch_on_the_processors_pixels(vit_artifact, tiny_vit):
    torch = pytest.importorskip("torch")
    images = vision.parity_images()[:4]
    ref = Reference(tiny_vit, "image-classification")
    with torch.inference_mode():
        logits = ref.model(pixel_values=torch.from_numpy(ref.pixel_values(images))).logits
    assert np.allclose(load(vit_artifact).scores(images), torch.softmax(logits, -1).numpy(), atol=1e-5)


def test_parity_images_cover_resizing_and_modes():
    images = vision.parity_images()
    assert {im.mode for im in images} == {"RGB", "L", "RGBA"} and (97, 61) in {im.size for im in images}


def test_a_graph_that_differs_from_pytorch_fails_the_export(tiny_vit, tmp_path, monkeypatch):
    real = Reference.outputs
    monkeypatch.setattr(Reference, "outputs", lambda self, feeds, output: real(self, feeds, output) + 1e-3)
    with pytest.raises(ParityError, match=r"max \|onnx - torch\| = 0\.001 \(tolerance 0\.0001\)"):
        export(tiny_vit, tmp_path / "out", task="image-classification")
    assert not (tmp_path / "out").exists()


def test_preprocessing_that_drifts_from_the_image_processor_fails_the_export(tiny_vit, tmp_path, monkeypatch):
    real = vision.preprocess_section
    monkeypatch.setattr(vision, "preprocess_section",
                        lambda processor, name: real(processor, name).__class__(
                            **{**real(processor, name).to_dict(), "mean": (0.5, 0.5, 0.5)}))
    with pytest.raises(ParityError, match="pixel values differ from the Hugging Face image processor's"):
        export(tiny_vit, tmp_path / "out", task="image-classification")


def test_processors_the_runtime_cannot_follow_are_refused(tmp_path):
    model = build_tiny_vit(tmp_path / "crop", processor={"size": {"shortest_edge": 32}, "do_center_crop": True})
    with pytest.raises(ExportError, match=r"resizes to \{'shortest_edge': 32\} and crops; the runtime resizes to a "
                                          "fixed height x width only"):
        export(model, tmp_path / "out", task="image-classification")


def test_a_model_without_an_image_processor_is_refused(tiny_vit, tmp_path):
    import shutil

    bare = shutil.copytree(tiny_vit, tmp_path / "bare")
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(SourceError, match=r"has no preprocessor_config.json \(the image processor .* "
                                          r"processor.save_pretrained\(dir\)\.$"):
        export(bare, tmp_path / "out", task="image-classification")


def test_a_text_model_cannot_be_exported_as_an_image_classifier(tiny_model, tmp_path):
    with pytest.raises(SourceError, match="cannot be loaded as AutoModelForImageClassification"):
        export(tiny_model("bert", "text-classification"), tmp_path / "out", task="image-classification")
