"""The runtime against sentence-transformers and PyTorch; batching, truncation and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import minilm_dir
from toolchain.runtime import InputError, ToolchainError, load

UNEVEN = [
    "A man is playing a guitar.",
    "ok",
    "The new movie is awesome, with a script that keeps surprising you until the very last scene.",
    "",
    "Ünïcödé and emoji 🙂 survive tokenization.",
    " ".join(["Several sentences of filler text that go on for a while."] * 12),
]


@pytest.fixture(scope="module")
def minilm(minilm_artifact):
    return load(minilm_artifact)


@pytest.fixture(scope="module")
def st_model():
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm_dir()), device="cpu")


def test_embed_equals_sentence_transformers_on_uneven_batch(minilm, st_model):
    ours = minilm.embed(UNEVEN)
    ref = st_model.encode(UNEVEN, batch_size=len(UNEVEN))
    assert ours.shape == ref.shape == (len(UNEVEN), 384)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = (ours * ref).sum(axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999, cos


def test_truncation_matches_sentence_transformers_and_warns(minilm, st_model):
    long = " ".join(["word"] * 1000)
    with pytest.warns(UserWarning, match="exceed the model's maximum of 256 tokens"):
        ours = minilm.embed([long, "short"])
    ref = st_model.encode([long, "short"])
    assert float(ours[0] @ ref[0] / np.linalg.norm(ref[0])) > 0.9999


def test_batch_size_and_order_do_not_change_results(minilm_artifact, minilm):
    small = load(minilm_artifact, batch_size=2)
    a = minilm.embed(UNEVEN)
    b = small.embed(UNEVEN)
    np.testing.assert_allclose(a, b, atol=1e-5)
    c = minilm.embed(list(reversed(UNEVEN)))[::-1]
    np.testing.assert_allclose(a, c, atol=1e-5)
    single = np.stack([minilm.embed([t])[0] for t in UNEVEN])  # padding must not leak into results
    np.testing.assert_allclose(a, single, atol=1e-5)


def test_info_reports_provider_in_use(minilm):
    info = minilm.info()
    assert info["variant"] == "fp32" and info["precision"] == "fp32"
    assert info["provider"] in {"cpu", "cuda"}
    assert info["providers"][0] == {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[info["provider"]]
    assert info["file"].endswith("model.onnx")
    if info["provider"] == "cpu" and info["provider_requested"] == "auto":
        # onnxruntime-gpu without a GPU: the fallback is reported with a reason, not hidden.
        assert info["fallback_reason"]


def test_single_string_and_empty_list(minilm):
    assert minilm.embed("hello").shape == (1, 384)
    empty = minilm.embed([])
    assert empty.shape == (0, 384)


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "texts must be a str or a list of str, not NoneType"),
        (42, "not int"),
        ({"a": 1}, "not dict"),
        (["ok", None], "item 1 is NoneType"),
        ([b"bytes"], "item 0 is bytes; decode it"),
        ([["nested"]], "item 0 is list"),
    ],
)
def test_bad_input_is_a_toolchain_error(minilm, classifier_artifact, bad, message):
    with pytest.raises(InputError, match=message):
        minilm.embed(bad)
    with pytest.raises(ToolchainError, match=message):
        load(classifier_artifact).classify(bad)


def test_odd_strings_get_results(minilm):
    odd = ["\x00", "\ud800 lone surrogate", "🙂" * 50, "\t\n\r", "a\u0301" * 10]
    out = minilm.embed(odd)
    assert out.shape == (len(odd), 384) and np.isfinite(out).all()


def test_classify(classifier_artifact):
    model = load(classifier_artifact)
    out = model.classify(["good", "bad", ""])
    assert len(out) == 3
    for r in out:
        assert set(r) == {"label", "score"} and r["label"] in {"negative", "positive"}
        assert 0.5 <= r["score"] <= 1.0
    assert model.classify([]) == []


def test_wrong_method_for_task(minilm, classifier_artifact):
    with pytest.raises(ToolchainError, match=r"classify\(\) is not available for a feature-extraction artifact; use embed"):
        minilm.classify(["x"])
    with pytest.raises(ToolchainError, match=r"use classify\(\)"):
        load(classifier_artifact).embed(["x"])


def test_load_arguments_are_checked(minilm_artifact):
    with pytest.raises(ToolchainError, match="variant 'int8' is not in"):
        load(minilm_artifact, variant="int8")
    with pytest.raises(ToolchainError, match="provider 'tpu' is not known"):
        load(minilm_artifact, provider="tpu")
    with pytest.raises(ToolchainError, match="batch_size must be a positive int"):
        load(minilm_artifact, batch_size=0)
