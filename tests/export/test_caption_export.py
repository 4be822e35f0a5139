"""Export of a vision encoder-decoder for image-to-text: optimum's graphs rewritten to the encoder-decoder contract
(encoder on pixel_values, one decoder step with its self-attention cache), the cross-attention projections of the
encoder's states computed once in the encoder (export/seq2seq_vision.py), the manifest's tokenizer, generation and
preprocess sections, and parity: greedy and beam caption ids equal PyTorch generate()'s alone and as a batch."""

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
    hoisted = [o.name for o in encoder.output]
    assert hoisted and all(name.startswith("cross.") for name in hoisted)
    inputs = {i.name for i in decoder.input}
    assert inputs == {"input_ids", "past.0.key", "past.0.value", "past.1.key", "past.1.value", *hoisted}
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


def _weights(graph) -> set[str]:
    return {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}


def test_the_encoder_projects_the_cross_attention_keys_and_values_once(caption_artifact):
    """The decoder step reads the projected keys / values (encoder outputs), never the encoder's states: no step
    multiplies them by a weight again."""
    encoder = onnx.load(str(caption_artifact / "encoder.onnx")).graph
    decoder = onnx.load(str(caption_artifact / "decoder.onnx")).graph
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in encoder.output}
    assert sum(d == ["batch", 2, "source", 16] for d in dims.values()) >= 4  # K and V heads of both layers
    assert "last_hidden_state" not in {i.name for i in decoder.input}
    assert any("crossattention.c_attn.weight" in w for w in _weights(encoder))
    assert not any("crossattention.c_attn" in w for w in _weights(decoder))
    consts, hoisted = _weights(decoder), set(dims)
    projections = [n.name for n in decoder.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & hoisted
                   and set(n.input) & consts]
    assert not projections


def _generated(rows, eos: int) -> list[list[int]]:
    """generate()'s rows without the start token and from the first EOS on (a batch pads finished rows)."""
    out = []
    for row in rows.tolist():
        row = row[1:]
        out.append(row[: row.index(eos)] if eos in row else row)
    return out


@pytest.mark.parametrize("beams", [1, 3])
def test_greedy_and_beam_captions_equal_generate(caption_artifact, tiny_captioner, beams):
    import torch

    model = load(caption_artifact, provider="cpu")
    reference = reference_for("transformers", tiny_captioner, "image-to-text")
    rng = np.random.default_rng(5)
    feeds, _ = model.encode([rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)])
    ours = model.decode_pixels(feeds["pixel_values"], max_new_tokens=8, beam_size=beams)
    with torch.inference_mode():
        theirs = reference.model.generate(pixel_values=torch.from_numpy(feeds["pixel_values"]), do_sample=False,
                                          num_beams=beams, max_new_tokens=8, length_penalty=1.0, early_stopping=False)
    assert ours == _generated(theirs, 2) and any(ours)
