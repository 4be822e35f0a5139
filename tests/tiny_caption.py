"""A tiny captioner for the image-to-text tests: a VisionEncoderDecoderModel (ViT + GPT-2) built from configs with
the training stage's own word-level caption tokenizer and a ViT image processor, its exported artifact, and a small
captioned shapes table. Import the fixtures by name.

The decoder's weights are drawn wider than GPT-2's default (initializer_range 0.4) so that random logits are far
apart: greedy parity then compares real decisions, not near-ties."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_vision import shapes_table

SIDE = 32  # the tiny model's image side: the 64x64 shapes are resized on the way in
CAPTIONS = ["a small red circle above a large blue square", "a medium green star left of a small yellow triangle",
            "a large purple square below a medium orange circle right of"]


def build_tiny_captioner(out: Path, side: int = SIDE, seed: int = 0) -> Path:
    """Save a randomly initialised tiny ViT + GPT-2 captioner, its tokenizer and its image processor into OUT."""
    import torch
    import transformers

    from toolchain.train.caption_stage import caption_tokenizer

    torch.manual_seed(seed)
    tok = caption_tokenizer(CAPTIONS, 32)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
           "decoder_start_token_id": tok.bos_token_id}
    encoder = transformers.ViTConfig(image_size=side, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64)
    decoder = transformers.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                      is_decoder=True, add_cross_attention=True, initializer_range=0.4, **ids)
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    for key, value in ids.items():
        setattr(config, key, value)
    model = transformers.VisionEncoderDecoderModel(config=config).eval()
    for key, value in ids.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    processor = transformers.ViTImageProcessor(size={"height": side, "width": side}, image_mean=[0.5, 0.4, 0.3],
                                               image_std=[0.2, 0.25, 0.3])
    processor.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_captioner(tmp_path_factory) -> Path:
    return build_tiny_captioner(tmp_path_factory.mktemp("captioner") / "captioner")


@pytest.fixture(scope="session")
def caption_artifact(tiny_captioner, tmp_path_factory) -> Path:
    from toolchain.export.core import export

    out = tmp_path_factory.mktemp("captionart") / "captioner"
    export(tiny_captioner, out, task="image-to-text")
    return out


@pytest.fixture(scope="session")
def captions_dev(tmp_path_factory) -> Path:
    return shapes_table(tmp_path_factory.mktemp("captions"), 16)
