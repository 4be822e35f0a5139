"""The encoder-decoder gate: exact match against the targets may drop by at most max_drop (CER beside it);
without targets, agreement with fp32's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolchain.data.texts import TextSet, read_texts
from toolchain.variants.gate import GATES, gate_for

JUDGE = gate_for("text2text-generation").judge


def strings(*xs: str) -> np.ndarray:
    return np.array(xs, dtype=object)


def pairs(targets: list[str] | None) -> TextSet:
    return TextSet(Path("dev.tsv"), [f"source {i}" for i in range(4)], None, targets)


def test_the_exact_match_drop_is_judged_against_the_budget():
    ref = strings("2021-03-03", "1205", "2026-11-25", "wrong")
    got = strings("2021-03-03", "1206", "2026-11-25", "wrong")  # one right answer lost: drop 1/4
    data = pairs(["2021-03-03", "1205", "2026-11-25", "1999-01-01"])
    passed = JUDGE(ref, got, data, 0.25)
    assert passed.passed and passed.metrics["exact_match"] == 0.5 and passed.metrics["fp32_exact_match"] == 0.75
    assert passed.metrics["exact_match_drop"] == 0.25
    assert 0 < passed.metrics["cer"] and passed.metrics["cer"] > passed.metrics["fp32_cer"]
    missed = JUDGE(ref, got, data, 0.24)
    assert not missed.passed and "drop +0.2500" in missed.summary


def test_a_variant_that_fixes_answers_is_not_penalised():
    data = pairs(["a", "b", "c", "d"])
    assert JUDGE(strings("x", "b", "c", "d"), strings("a", "b", "c", "d"), data, 0.0).passed


def test_without_targets_agreement_with_fp32_decides():
    ref = strings("a", "b", "c", "d")
    assert JUDGE(ref, strings("a", "b", "c", "x"), pairs(None), 0.25).passed
    result = JUDGE(ref, strings("a", "b", "y", "x"), pairs(None), 0.25)
    assert not result.passed and result.metrics["agreement"] == 0.5


def test_the_gate_is_registered_with_a_one_point_default():
    assert GATES["text2text-generation"].default_max_drop == 0.01


def test_a_pairs_file_reads_with_its_targets(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("source\ttarget\nMarch 3, 2021\t2021-03-03\none thousand\t1000\n", encoding="utf-8")
    data = read_texts(path)
    assert data.texts == ["March 3, 2021", "one thousand"] and data.targets == ["2021-03-03", "1000"]
    assert read_texts(path, limit=1).targets == ["2021-03-03"]


@pytest.mark.parametrize("targets", [None])
def test_a_text_file_has_no_targets(tmp_path, targets):
    path = tmp_path / "texts.txt"
    path.write_text("one\ntwo\n", encoding="utf-8")
    assert read_texts(path).targets is targets
