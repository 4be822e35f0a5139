"""Captioners' variants: int8 gated on caption exact match and BLEU-4 against an image table's captions (each drop
within the budget of fp32's), validated again; the gate's arithmetic on known captions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from toolchain.data.texts import TextSet, read_texts
from toolchain.runtime import load, read_manifest
from toolchain.variants.gate import GATES
from toolchain.variants.quantize import quantize
from toolchain.variants.validate import validate

GATE = GATES["image-to-text"]


@pytest.fixture(scope="module")
def quantized(caption_artifact, captions_dev, tmp_path_factory):
    art = shutil.copytree(caption_artifact, tmp_path_factory.mktemp("q") / "captioner")
    return art, quantize(art, "int8-dynamic", calib=captions_dev, limit=12)


def test_int8_is_gated_on_exact_match_and_bleu(quantized, captions_dev):
    art, report = quantized
    gate = read_manifest(art).variant(report.variant).metrics["gate"]
    assert {"exact_match", "fp32_exact_match", "bleu4", "fp32_bleu4", "agreement"} <= set(gate)
    assert gate["images"] == 12 and gate["data"] == str(captions_dev) and gate["max_drop"] == 0.02
    assert report.passed == (gate["exact_match_drop"] <= 0.02 and gate["bleu4_drop"] <= 0.02)
    if report.passed:
        assert isinstance(load(art, variant=report.variant).caption(read_texts(captions_dev, limit=1).images[0]), str)


def test_validate_reruns_parity_and_the_caption_gate(quantized):
    art, report = quantized
    checks = {c.variant: c for c in validate(art)} if report.passed else {}
    if checks:
        assert checks["fp32"].kind == "parity" and checks[report.variant].kind == "gate"


def table(tmp_path, captions):
    path = tmp_path / "t.tsv"
    path.write_text("image\tcaption\n" + "".join(f"{i}.png\t{c}\n" for i, c in enumerate(captions)), encoding="utf-8")
    names = [f"{i}.png" for i in range(len(captions))]
    return TextSet(path, names, images=names)


REFS = ["a small red circle", "a large blue square above a small green star", "a medium yellow triangle",
        "a small purple star left of a large orange circle"]


def test_the_gate_passes_within_budget_and_fails_past_it(tmp_path):
    data = table(tmp_path, REFS)
    fp32 = np.array(REFS, dtype=object)
    same = GATE.judge(fp32, fp32.copy(), data, 0.02)
    assert same.passed and same.metrics["exact_match"] == 1.0 and same.metrics["bleu4"] == pytest.approx(1.0)
    one_wrong = fp32.copy()
    one_wrong[1] = "a large blue square below a small green star"
    worse = GATE.judge(fp32, one_wrong, data, 0.02)
    assert not worse.passed and worse.metrics["exact_match_drop"] == pytest.approx(0.25)
    assert worse.metrics["bleu4_drop"] > 0 and "BLEU-4" in worse.summary
    assert GATE.judge(fp32, one_wrong, data, 0.3).passed  # both drops (0.25 and BLEU's) within a 0.3 budget


def test_bleu_counts_even_where_exact_match_does_not_move(tmp_path):
    data = table(tmp_path, REFS)
    fp32 = np.array(["a small red square", *REFS[1:]], dtype=object)  # caption 0 nearly right
    worse = fp32.copy()
    worse[0] = "a"  # still wrong, now far from it: exact match is the same, BLEU-4 lower
    result = GATE.judge(fp32, worse, data, 0.02)
    assert result.metrics["exact_match_drop"] == 0 and result.metrics["bleu4_drop"] > 0.02 and not result.passed


def test_without_captions_the_gate_compares_with_fp32(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("image\tlabel\n0.png\t1\n1.png\t2\n", encoding="utf-8")
    data = TextSet(path, ["0.png", "1.png"], images=["0.png", "1.png"])
    fp32 = np.array(["a b", "c d"], dtype=object)
    assert GATE.judge(fp32, fp32.copy(), data, 0.02).passed
    result = GATE.judge(fp32, np.array(["a b", "x"], dtype=object), data, 0.02)
    assert not result.passed and "no caption column" in result.summary
