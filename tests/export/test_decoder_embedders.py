"""Decoder-based embedders under feature-extraction (Qwen3-Embedding, gte-Qwen2, e5-mistral style): the runtime
numbers positions from the attention mask where the graph takes position_ids, the artifact records the pooling
(last token by default for decoders; a sentence-transformers config's where there is one) and the side the
tokenizer pads on, and the runtime's embeddings match PyTorch's on each text alone (cosine >= 0.9999)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import optimum_sweep  # noqa: E402
import tiny_text_models  # noqa: E402

TEXTS = ["Hi.", "The quick brown fox jumps over the lazy dog.", "a dull and lifeless story " * 4]


def decoder(model_type: str, out: Path, padding_side: str = "right") -> Path:
    src = tiny_text_models.build(model_type, "feature-extraction", out)
    config = json.loads((src / "tokenizer_config.json").read_text())
    (src / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": padding_side}))
    return src


def sentence_transformers_dir(model_dir: Path, root: Path, pooling_key: str) -> Path:
    """A sentence-transformers layout around MODEL_DIR: Transformer at the root's 0_Transformer, then Pooling."""
    import shutil

    shutil.copytree(model_dir, root / "0_Transformer")
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64, pooling_key: True}))
    modules = [{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (root / "modules.json").write_text(json.dumps(modules))
    return root


@pytest.mark.parametrize("model_type,side", [("llama", "right"), ("qwen2", "left"), ("gpt2", "left")])
def test_decoder_embeds_like_pytorch_with_last_token_pooling(model_type, side, tmp_path):
    from toolchain.export.core import export
    from toolchain.runtime import load

    src = decoder(model_type, tmp_path / "m", side)
    manifest = export(src, tmp_path / "art", task="feature-extraction")
    assert manifest["pooling"] == {"mode": "last", "normalize": True}
    assert manifest["feeds"]["position_ids"] == "positions" and manifest["tokenizer"]["padding_side"] == side
    model = load(tmp_path / "art")
    _, mask = model.encode(TEXTS)
    assert (mask[:, 0 if side == "left" else -1] == 0).any()  # the batch really is padded on that side
    assert optimum_sweep.min_cosine(src, model, TEXTS) >= 0.9999


def test_sentence_transformers_pooling_is_read_from_its_config(tmp_path):
    from toolchain.export.core import export

    src = sentence_transformers_dir(decoder("qwen3", tmp_path / "m", "left"), tmp_path / "st", "pooling_mode_lasttoken")
    manifest = export(src, tmp_path / "art", task="feature-extraction")
    assert manifest["pooling"] == {"mode": "last", "normalize": False}  # no Normalize module in modules.json
    assert manifest["tokenizer"]["padding_side"] == "left"

    mean = sentence_transformers_dir(decoder("qwen3", tmp_path / "m2"), tmp_path / "st2", "pooling_mode_mean_tokens")
    assert export(mean, tmp_path / "art2", task="feature-extraction")["pooling"]["mode"] == "mean"


def test_parity_catches_positions_that_ignore_the_padding(tmp_path, monkeypatch):
    """Left-padded rows numbered 0..T-1 instead of from their first real token: the export must fail (GPT-2's learned
    absolute positions; rotary ones would not notice a shift that is the same for every token of a row)."""
    import numpy as np

    from toolchain.export.core import export
    from toolchain.runtime import feeds
    from toolchain.runtime.errors import ParityError

    src = decoder("gpt2", tmp_path / "m", "left")
    monkeypatch.setitem(feeds.RULES, "positions",
                        lambda t: np.broadcast_to(np.arange(t.mask.shape[1]), t.mask.shape).copy())
    with pytest.raises(ParityError, match="padded batch differs from each item alone"):
        export(src, tmp_path / "art", task="feature-extraction")
