"""Image classifiers' variants: int8 gated on accuracy against the labels of an image table, validated again,
benched for auto; a text calibration file is refused in one sentence."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from tiny_vision import shapes_dev, tiny_vit, vit_artifact  # noqa: F401  (fixtures)
from toolchain.data.texts import read_texts
from toolchain.runtime import ToolchainError, load, read_manifest
from toolchain.variants.gate import GATES, judge
from toolchain.variants.quantize import quantize
from toolchain.variants.validate import validate


@pytest.fixture(scope="module")
def quantized(vit_artifact, shapes_dev, tmp_path_factory):
    art = shutil.copytree(vit_artifact, tmp_path_factory.mktemp("q") / "vit")
    report = quantize(art, "int8-dynamic", calib=shapes_dev, limit=24)
    return art, report


def test_int8_is_gated_on_accuracy_against_the_labels(quantized, shapes_dev):
    art, report = quantized
    assert report.passed and report.variant == "int8"
    gate = read_manifest(art).variant("int8").metrics["gate"]
    assert gate["texts"] == 24 and "accuracy" in gate and "fp32_accuracy" in gate and gate["data"] == str(shapes_dev)
    assert gate["accuracy_drop"] <= gate["max_drop"] == GATES["image-classification"].default_max_drop
    assert "cpu" in read_manifest(art).variant("int8").latency  # timed against fp32, so auto can rank it
    assert load(art, variant="int8").classify(read_texts(shapes_dev, limit=2).images)[0]["label"]


def test_validate_reruns_parity_and_the_image_gate(quantized):
    art, _ = quantized
    checks = {c.variant: c for c in validate(art)}
    assert checks["fp32"].kind == "parity" and checks["int8"].kind == "gate" and all(c.passed for c in checks.values())


def test_the_gate_judges_by_accuracy_drop(vit_artifact, shapes_dev):
    data = read_texts(shapes_dev, limit=16)
    result, ref = judge(read_manifest(vit_artifact), "fp32", data, 0.0)
    assert result.passed and result.metrics["accuracy_drop"] == 0
    perfect = dataclasses.replace(data, labels=[int(i) for i in ref.argmax(axis=1)])  # fp32 is right on every image
    flipped = ref[:, ::-1]  # 4 classes reversed: every prediction changes
    moved = GATES["image-classification"].judge(ref, flipped, perfect, 0.5)
    assert not moved.passed and moved.metrics["accuracy"] == 0 and moved.metrics["fp32_accuracy"] == 1


def test_text_calibration_data_is_refused_in_one_sentence(vit_artifact, tmp_path):
    art = shutil.copytree(vit_artifact, tmp_path / "vit")
    with pytest.raises(ToolchainError, match=r"holds texts, but an image model is gated on images; pass --calib a "
                                             r"\.tsv with an 'image' column"):
        quantize(art, "int8-dynamic")  # the default calibration set is SST-2 sentences
    assert set(read_manifest(art).variants) == {"fp32"}


def test_an_image_table_with_a_missing_file_names_the_line(tmp_path):
    (tmp_path / "t.tsv").write_text("image\tlabel\nnope.png\t0\n")
    with pytest.raises(ToolchainError, match=r"t\.tsv line 2: image 'nope\.png' does not exist"):
        read_texts(tmp_path / "t.tsv")
