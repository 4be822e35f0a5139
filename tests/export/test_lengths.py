"""The longest input an artifact takes (export/lengths.py): the smallest limit the model states, with what states it;
--max-length where nothing does, never past the position table or a family's cap."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from toolchain.export import lengths
from toolchain.runtime.errors import ExportError

NO_LIMIT = int(1e30)  # transformers' placeholder for a tokenizer that names no maximum


def fake(config: dict, tokenizer_max: int = NO_LIMIT, sentence_max: int | None = None):
    """(source, reference) with just what lengths.max_length reads."""
    model = SimpleNamespace(config=SimpleNamespace(**{"model_type": "llama", **config}))
    reference = SimpleNamespace(model=model, tokenizer=SimpleNamespace(model_max_length=tokenizer_max))
    return SimpleNamespace(name="m", max_seq_length=sentence_max), reference


def test_smallest_stated_limit_wins_and_says_what_set_it():
    assert lengths.max_length(*fake({"max_position_embeddings": 2048})) == (2048, lengths.POSITIONS)
    huge_rotary = fake({"max_position_embeddings": 131072}, tokenizer_max=8192)
    assert lengths.max_length(*huge_rotary) == (8192, lengths.TOKENIZER)
    assert lengths.max_length(*fake({"max_position_embeddings": 512}, 512, sentence_max=256)) == (256, lengths.SENTENCE)


def test_roberta_offset_bounds_a_tokenizer_without_a_maximum():
    source, ref = fake({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1})
    assert lengths.max_length(source, ref) == (512, lengths.POSITIONS)
    with pytest.raises(ExportError, match="--max-length 514 is longer than m takes \\(512 tokens"):
        lengths.max_length(source, ref, given=514)


def test_alibi_models_take_their_stated_context_else_ask_for_max_length():
    mpt = fake({"model_type": "mpt", "max_seq_len": 2048})
    assert lengths.max_length(*mpt) == (2048, "config.max_seq_len")
    assert lengths.max_length(*mpt, given=4096) == (4096, lengths.GIVEN)  # ALiBi extrapolates: a soft limit
    bloom = fake({"model_type": "bloom"})
    with pytest.raises(ExportError, match=r"\(bloom\) has no position table.*pass --max-length N"):
        lengths.max_length(*bloom)
    assert lengths.max_length(*bloom, given=1024) == (1024, lengths.GIVEN)
    assert lengths.max_length(*fake({"model_type": "bloom"}, tokenizer_max=2048)) == (2048, lengths.TOKENIZER)


def test_big_bird_is_capped_at_its_full_attention_length():
    config = {"model_type": "big_bird", "max_position_embeddings": 4096, "attention_type": "block_sparse",
              "num_random_blocks": 3, "block_size": 64}
    length, why = lengths.max_length(*fake(config))
    assert length == (5 + 2 * 3) * 64 and "block-sparse" in why
    with pytest.raises(ExportError, match="pass --max-length 704 or less"):
        lengths.max_length(*fake(config), given=1024)
    assert lengths.max_length(*fake({**config, "attention_type": "original_full"}))[0] == 4096
