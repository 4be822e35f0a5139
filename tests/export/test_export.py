"""Export + parity on tiny models of each family and on the bundled MiniLM; atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_ARCHS
from toolchain.export.core import export
from toolchain.runtime import ParityError, ToolchainError, load, read_manifest
from toolchain.runtime.manifest import Pooling, sha256_file
from toolchain.export.parity import Reference

TASKS = ("feature-extraction", "text-classification")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_tiny_export_has_manifest_and_parity(tiny_artifact, arch, task):
    root = tiny_artifact(arch, task)
    m = read_manifest(root)
    fp32 = m.variants["fp32"]
    assert m.task == task
    assert fp32.file == "model.onnx" and fp32.precision == "fp32"
    assert fp32.sha256 == sha256_file(root / "model.onnx")
    assert fp32.bytes == (root / "model.onnx").stat().st_size
    parity = fp32.metrics["parity"]
    assert parity["max_abs_diff"] <= parity["atol"] == fp32.tolerance["atol"]
    assert parity["tokens_match"] is True
    assert m.opset >= 11
    assert m.source.weights_sha256 and m.source.model_type == arch
    assert {"toolchain", "torch", "transformers", "optimum", "onnx"} <= set(m.versions)
    assert [i.name for i in m.inputs][:2] == ["input_ids", "attention_mask"]
    assert m.outputs[0].name == ("logits" if task == "text-classification" else "last_hidden_state")
    if task == "text-classification":
        assert m.labels == ["negative", "positive"]
    else:
        assert m.labels is None and m.pooling == Pooling(mode="mean", normalize=True)
    # Only what the runtime needs travels with the artifact.
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]


def test_roberta_max_length_excludes_position_offset(tiny_artifact):
    # RoBERTa's positions start after padding_idx: 130 positions hold 128 tokens.
    assert read_manifest(tiny_artifact("roberta")).max_length == 128


def test_minilm_export(minilm_artifact):
    m = read_manifest(minilm_artifact)
    assert m.max_length == 256  # sentence-transformers' max_seq_length, not BERT's 512
    assert m.source.kind == "sentence-transformers"
    assert m.pooling == Pooling(mode="mean", normalize=True)
    assert m.variants["fp32"].metrics["parity"]["max_abs_diff"] < 1e-4


def _noisy_outputs(monkeypatch, noise: float) -> None:
    real = Reference.outputs

    def noisy(self, feeds, output):
        return real(self, feeds, output) + noise

    monkeypatch.setattr(Reference, "outputs", noisy)


def test_parity_miss_fails_export_and_keeps_previous_artifact(tiny_model, tmp_path, monkeypatch):
    src = tiny_model("bert")
    out = tmp_path / "art"
    export(src, out)
    before = (out / "manifest.json").read_bytes()
    model_sha = sha256_file(out / "model.onnx")

    _noisy_outputs(monkeypatch, 1e-2)
    with pytest.raises(ParityError, match=r"max \|onnx - torch\| = 0\.01"):
        export(src, out)

    assert (out / "manifest.json").read_bytes() == before
    assert sha256_file(out / "model.onnx") == model_sha
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temp dirs left behind
    load(out).embed(["still works"])


def test_failure_mid_export_leaves_no_artifact(tiny_model, tmp_path, monkeypatch):
    import toolchain.export.core as ex

    def boom(*a, **k):
        raise RuntimeError("simulated crash while writing the tokenizer")

    monkeypatch.setattr(ex, "_tokenizer", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export(tiny_model("bert"), tmp_path / "art")
    assert list(tmp_path.iterdir()) == []


def test_reexport_replaces_artifact(tiny_model, tmp_path):
    out = tmp_path / "art"
    export(tiny_model("bert"), out)
    (out / "stale.onnx").write_bytes(b"old")
    export(tiny_model("bert", "text-classification"), out, task="text-classification")
    assert read_manifest(out).task == "text-classification"
    assert not (out / "stale.onnx").exists()
    assert oct((out).stat().st_mode & 0o777) != oct(0o700)  # a normal directory, not mkdtemp's private one


def test_refuses_to_overwrite_non_artifact(tiny_model, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(ToolchainError, match="not an artifact"):
        export(tiny_model("bert"), out)
    assert (out / "notes.txt").read_text() == "precious"


def test_custom_tolerance_is_recorded(tiny_model, tmp_path):
    out = tmp_path / "art"
    export(tiny_model("distilbert"), out, atol=1e-3)
    v = json.loads((out / "manifest.json").read_text())["variants"]["fp32"]
    assert v["tolerance"]["atol"] == 1e-3 and v["metrics"]["parity"]["atol"] == 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "translation"}, "task 'translation' is not supported"),
        ({"opset": 3}, "opset 3 is outside"),
        ({"atol": -1.0}, "atol must be positive"),
    ],
)
def test_bad_settings(tiny_model, tmp_path, kwargs, message):
    with pytest.raises(ToolchainError, match=message):
        export(tiny_model("bert"), tmp_path / "x", **kwargs)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(ToolchainError, match="not a model directory|hub could not provide"):
        export(str(tmp_path / "nothing-here"), tmp_path / "x")
    with pytest.raises(ToolchainError, match="hub could not provide it"):
        export("nobody/no-such-model-xyz", tmp_path / "x")


def test_classifier_matches_pytorch_probabilities(classifier_artifact, tiny_model):
    import torch
    import transformers

    src = tiny_model("bert", "text-classification")
    texts = ["great", "a long and winding review of a film that never quite works", "meh"]
    ref = transformers.AutoModelForSequenceClassification.from_pretrained(str(src)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(src))
    with torch.inference_mode():
        probs = ref(**tok(texts, padding=True, return_tensors="pt")).logits.softmax(-1).numpy()
    got = load(classifier_artifact).classify(texts)
    for p, g in zip(probs, got):
        assert g["label"] == ["negative", "positive"][int(np.argmax(p))]
        assert g["score"] == pytest.approx(float(p.max()), abs=1e-5)
