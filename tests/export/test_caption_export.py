"""Export of a vision encoder-decoder for image-to-text: optimum's graphs rewritten to the encoder-decoder contract
(encoder on pixel_values, one decoder step with its self-attention cache), the manifest's tokenizer, generation
and preprocess sections, and parity: greedy caption ids equal PyTorch generate()'s alone and as a batch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from toolchain.export.parity import PARITY, check_variant
from toolchain.export.reference import reference_for
from toolchain.runtime import load, read_manifest


def test_two_graphs_under_the_contract(caption_artifact):
    encoder = onnx.load(str(caption_artifact / "encoder.onnx")).graph
    decoder = onnx.load(str(caption_artifact / "decoder.onnx")).graph
    dims = [d.dim_param or d.dim_value for d in encoder.input[0].type.tensor_type.shape.dim]
    assert [i.name for i in encoder.input] == ["pixel_values"] and dims == ["batch", 3, 32, 32]
    assert [o.name for o in encoder.output] == ["last_hidden_state"]
    inputs = {i.name for i in decoder.input}
    assert inputs == {"input_ids", "last_hidden_state", "past.0.key", "past.0.value", "past.1.key", "past.1.value"}
    assert {o.name for o in decoder.output} == {"logits", "present.0.key", "present.0.value", "present.1.key",
                                                "present.1.value"}
    past = next(i for i in decoder.input if i.name == "past.0.key")
    assert [d.dim_param or d.dim_value for d in past.type.tensor_type.shape.dim] == ["batch", 2, "past_sequence", 16]


def test_the_manifest_ships_tokenizer_generation_and_preprocess(caption_artifact, tiny_captioner):
    m = read_manifest(caption_artifact)
    assert m.task == "image-to-text" and m.exporter == "optimum-seq2seq" and m.labels is None
    assert (m.generation.bos_token_id, tuple(m.generation.eos_token_ids)) == (1, (2,))  # [BOS], [EOS] of caption_tokenizer
    assert m.tokenizer.pad_id == 0 and m.max_length == 32
    assert (m.preprocess.height, m.preprocess.mean) == (32, (0.5, 0.4, 0.3))
    assert m.variant("fp32").metrics["parity"]["tokens_match"] is True


def test_parity_compares_greedy_ids_with_generate(caption_artifact, tiny_captioner):
    reference = reference_for("transformers", tiny_captioner, "image-to-text")
    result = check_variant(caption_artifact, "fp32", reference, 1e-3)
    assert result.passed and result.tokens_match and result.max_abs_diff < 1e-4 and result.texts == 9
    assert PARITY["image-to-text"] is not PARITY["image-classification"]


def test_parity_fails_when_the_runtime_decodes_differently(caption_artifact, tiny_captioner, monkeypatch):
    """A captioner whose loop drops a step's token no longer equals generate(): parity says so."""
    model = load(caption_artifact, provider="cpu")
    reference = reference_for("transformers", tiny_captioner, "image-to-text")
    real = type(model).decode_pixels

    def skipping(self, pixels, *args, **kwargs):
        return [row[1:] for row in real(self, pixels, *args, **kwargs)]

    monkeypatch.setattr(type(model), "decode_pixels", skipping)
    result = PARITY["image-to-text"](model, "fp32", reference, 1e-3)
    assert not result.passed and not result.tokens_match and "generate()" in result.mismatch


def test_first_step_logits_equal_pytorch(caption_artifact, tiny_captioner):
    import torch

    model = load(caption_artifact)
    reference = reference_for("transformers", tiny_captioner, "image-to-text")
    feeds, _ = model.encode([np.full((40, 50, 3), 90, np.uint8), np.zeros((32, 32, 3), np.uint8)])
    start = torch.full((2, 1), 1)
    with torch.inference_mode():
        theirs = reference.model(pixel_values=torch.from_numpy(feeds["pixel_values"]), decoder_input_ids=start)
    assert np.abs(model.run_feeds(feeds) - theirs.logits[:, 0].numpy()).max() < 1e-4
