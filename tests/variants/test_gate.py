"""The accuracy gate on synthetic outputs: cosine for embeddings, accuracy / agreement for classifiers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from toolchain.data.texts import TextSet
from toolchain.variants.gate import GATES, gate_for, judge
from toolchain.runtime import ToolchainError
from toolchain.runtime.manifest import read_manifest

EMBED = GATES["feature-extraction"].judge
CLASSIFY = GATES["text-classification"].judge


def _data(n, labels=None):
    return TextSet(Path("synthetic.tsv"), [f"text {i}" for i in range(n)], labels)


def _unit(rng, n=50, d=32, scale=1.0):
    x = rng.standard_normal((n, d)) * scale
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _logits(preds, classes=2):
    out = np.zeros((len(preds), classes), dtype=np.float32)
    out[np.arange(len(preds)), preds] = 1.0
    return out


def _rotate_row(v, cos):
    """A unit vector at exactly ``cos`` to unit vector ``v``."""
    w = np.zeros_like(v, dtype=np.float64)
    w[np.argmin(np.abs(v))] = 1.0
    w -= w.dot(v) * v
    w /= np.linalg.norm(w)
    return cos * v + np.sqrt(1 - cos**2) * w


# -- embeddings ---------------------------------------------------------------------------------
def test_registry_defaults():
    assert {"feature-extraction", "text-classification", "text-generation", "text2text-generation"} <= set(GATES)
    assert GATES["feature-extraction"].default_max_drop == 0.005 and GATES["text-classification"].default_max_drop == 0.01
    assert GATES["text-generation"].default_max_drop == 0.02
    with pytest.raises(ToolchainError, match="no gate for task 'translate'"):
        gate_for("translate")


@pytest.mark.parametrize("scale", [1.0, 1e-3, 37.0])
def test_embed_identical_passes_even_with_zero_budget(scale):
    ref = _unit(np.random.default_rng(0), n=64, d=384, scale=1) * scale
    r = EMBED(ref, ref.copy(), _data(64), 0.0)
    assert r.passed is True
    assert r.metrics["mean_cosine"] == 1.0 and r.metrics["min_cosine"] == 1.0
    assert r.metrics["texts"] == 64
    assert r.metrics["required_mean"] == 1.0 and r.metrics["required_min"] == 1.0


def test_embed_cosine_never_above_one():
    rng = np.random.default_rng(1)
    ref = (rng.standard_normal((40, 97)) * 123).astype(np.float32)
    got = ref * np.float32(1.0000001)  # same direction, rounding differs
    r = EMBED(ref, got, _data(40), 1e-9)
    assert r.metrics["mean_cosine"] <= 1.0 and r.metrics["min_cosine"] <= 1.0
    assert r.metrics["min_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert r.passed  # parallel vectors: cosine 1 up to float64 rounding (float32 would miss by ~1e-7)


def test_embed_perturbed_fails():
    rng = np.random.default_rng(2)
    ref = _unit(rng)
    got = ref + 0.5 * rng.standard_normal(ref.shape).astype(np.float32)
    r = EMBED(ref, got, _data(len(ref)), 0.005)
    assert r.passed is False
    assert r.metrics["mean_cosine"] < 0.995
    assert "cosine to fp32 mean" in r.summary and "0.9950" in r.summary


def test_embed_tiny_noise_passes_default_but_not_zero_budget():
    rng = np.random.default_rng(3)
    ref = _unit(rng)
    got = ref + 1e-3 * rng.standard_normal(ref.shape).astype(np.float32)
    assert EMBED(ref, got, _data(len(ref)), 0.005).passed is True
    assert EMBED(ref, got, _data(len(ref)), 0.0).passed is False


def test_embed_boundaries_mean_and_worst():
    """mean must be >= 1 - d, the worst text >= 1 - 4d: one outlier can fail a good mean."""
    rng = np.random.default_rng(4)
    ref = _unit(rng, n=10, d=16).astype(np.float64)
    d = 0.01
    # every text at cosine 0.995 except one at 0.97 (> 1 - 4d = 0.96): mean 0.9925 >= 0.99 -> pass
    cos = [0.995] * 9 + [0.97]
    got = np.stack([_rotate_row(v, c) for v, c in zip(ref, cos)])
    r = EMBED(ref, got, _data(10), d)
    assert r.passed is True
    assert r.metrics["min_cosine"] == pytest.approx(0.97)
    assert r.metrics["mean_cosine"] == pytest.approx(np.mean(cos))
    # the outlier at 0.95 (< 0.96) fails although the mean (0.9905) is within budget
    cos = [0.995] * 9 + [0.95]
    got = np.stack([_rotate_row(v, c) for v, c in zip(ref, cos)])
    r = EMBED(ref, got, _data(10), d)
    assert r.metrics["mean_cosine"] >= 1 - d and r.passed is False
    # every text at 0.985: worst fine, mean below 0.99 -> fail
    got = np.stack([_rotate_row(v, 0.985) for v in ref])
    assert EMBED(ref, got, _data(10), d).passed is False
    # every text at 0.991: pass
    got = np.stack([_rotate_row(v, 0.991) for v in ref])
    assert EMBED(ref, got, _data(10), d).passed is True


def test_embed_zero_vector_fails():
    ref = _unit(np.random.default_rng(5), n=4)
    got = ref.copy()
    got[2] = 0
    r = EMBED(ref, got, _data(4), 0.1)
    assert r.passed is False and r.metrics["min_cosine"] == 0.0


def test_embed_nan_fails():
    ref = _unit(np.random.default_rng(6), n=4)
    got = ref.copy()
    got[0, 0] = np.nan
    assert EMBED(ref, got, _data(4), 0.5).passed is False


# -- classifiers ----------------------------------------------------------------------------------
def test_classify_identical_with_labels():
    preds = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1]
    gold = [0, 1, 1, 0, 1, 0, 0, 1, 0, 0]
    r = CLASSIFY(_logits(preds), _logits(preds), _data(10, gold), 0.0)
    assert r.passed is True
    assert r.metrics["accuracy"] == r.metrics["fp32_accuracy"] == 0.8
    assert r.metrics["accuracy_drop"] == 0.0 and r.metrics["agreement"] == 1.0
    assert r.metrics["max_drop"] == 0.0


def test_classify_accuracy_drop_boundary():
    """fp32 right on 8 of 10, the variant on 7: a drop of exactly 0.1 passes a 0.1 budget, fails 0.09."""
    gold = [0] * 10
    ref = _logits([0] * 8 + [1] * 2)
    got = _logits([1] + [0] * 7 + [1] * 2)
    r = CLASSIFY(ref, got, _data(10, gold), 0.1)
    assert r.metrics["fp32_accuracy"] == 0.8 and r.metrics["accuracy"] == 0.7
    assert r.metrics["accuracy_drop"] == pytest.approx(0.1)
    assert r.passed is True
    assert CLASSIFY(ref, got, _data(10, gold), 0.09).passed is False
    assert "drop +0.1000" in r.summary


def test_classify_variant_better_than_fp32_passes():
    gold = [0, 0, 0, 0]
    r = CLASSIFY(_logits([1, 1, 0, 0]), _logits([0, 0, 0, 0]), _data(4, gold), 0.0)
    assert r.passed is True and r.metrics["accuracy_drop"] == -0.5
    assert r.metrics["agreement"] == 0.5  # labels decide, not agreement


def test_classify_accuracy_drop_fails():
    gold = [0, 1] * 10
    r = CLASSIFY(_logits(gold), _logits([0] * 20), _data(20, gold), 0.01)
    assert r.passed is False and r.metrics["accuracy_drop"] == 0.5


def test_classify_agreement_without_labels():
    ref = _logits([0, 1] * 50)
    got_preds = [0, 1] * 50
    got_preds[0] = 1  # one of 100 flipped: agreement 0.99
    got = _logits(got_preds)
    r = CLASSIFY(ref, got, _data(100), 0.01)
    assert r.passed is True
    assert r.metrics["agreement"] == 0.99 and r.metrics["required_agreement"] == 0.99
    assert "accuracy" not in r.metrics and "no labels" in r.summary
    assert CLASSIFY(ref, got, _data(100), 0.0).passed is False
    assert CLASSIFY(ref, ref, _data(100), 0.0).passed is True


@pytest.mark.parametrize("n, flipped, budget", [(20, 1, 0.05), (40, 1, 0.025), (100, 3, 0.03), (10, 3, 0.3), (10, 7, 0.7)])
def test_classify_agreement_exact_budget_passes(n, flipped, budget):
    ref = _logits([0] * n)
    got = _logits([1] * flipped + [0] * (n - flipped))
    assert CLASSIFY(ref, got, _data(n), budget).passed is True
    assert CLASSIFY(ref, got, _data(n), budget * 0.99).passed is False


@pytest.mark.parametrize("gold", [[0, 2, 1], [-1, 0, 1]])
def test_classify_labels_outside_classes(gold):
    with pytest.raises(ToolchainError, match=r"labels outside 0\.\.1, the model's 2 classes"):
        CLASSIFY(_logits([0, 1, 0]), _logits([0, 1, 0]), _data(3, gold), 0.01)


# -- judge() on a real artifact (fp32 against itself) ------------------------------------------------
@pytest.fixture
def art(tiny_artifact, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(tiny_artifact("bert"), dst)
    data = json.loads((dst / "manifest.json").read_text())
    data["variants"]["copy"] = dict(data["variants"]["fp32"])  # same file under another name
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst


def test_judge_identical_variant(art):
    manifest = read_manifest(art)
    data = _data(12)
    result, reference = judge(manifest, "copy", data, 0.0)
    assert result.passed is True and result.metrics["mean_cosine"] == 1.0
    assert result.metrics["max_drop"] == 0.0 and result.metrics["data"] == "synthetic.tsv"
    assert reference.shape[0] == 12
    again, same = judge(manifest, "copy", data, None, reference)
    assert same is reference
    assert again.metrics["max_drop"] == GATES["feature-extraction"].default_max_drop  # the budget applied is recorded


@pytest.mark.parametrize("bad", [1.0, -0.01, 2])
def test_judge_rejects_budget_outside_range(art, bad):
    with pytest.raises(ToolchainError, match=r"max-drop must be in \[0, 1\)"):
        judge(read_manifest(art), "copy", _data(2), bad)
