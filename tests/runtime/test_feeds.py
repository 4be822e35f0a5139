"""The runtime fills each graph input by the rule its manifest records (runtime/feeds.py), pads on the recorded side,
and pools the real tokens whichever side the padding is on (runtime/encoders.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolchain.runtime.encoders import pool
from toolchain.runtime.errors import ArtifactError
from toolchain.runtime.feeds import DEFAULT_FEEDS, RULES, Tokens, plan, read_feeds
from toolchain.runtime.sections import TokenizerInfo
from toolchain.runtime.text import TextEncoder

LEFT = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
RIGHT = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def tokens(mask: np.ndarray) -> Tokens:
    return Tokens(ids=np.arange(mask.size).reshape(mask.shape) + 10, mask=mask, type_ids=np.zeros_like(mask))


@pytest.mark.parametrize("mask", [LEFT, RIGHT], ids=["left", "right"])
def test_positions_number_the_real_tokens_from_zero_on_either_side(mask):
    positions = RULES["positions"](tokens(mask))
    for row, m in zip(positions, mask.astype(bool)):
        assert row[m].tolist() == list(range(m.sum()))
    assert positions.min() >= 0 and positions.max() < mask.shape[1]  # padding stays inside any position table


@pytest.mark.parametrize("mask", [LEFT, RIGHT], ids=["left", "right"])
def test_first_token_marks_each_rows_first_real_token(mask):
    marked = RULES["first_token"](tokens(mask))
    assert marked.sum(axis=1).tolist() == [1, 1]
    assert [int(r.argmax()) for r in marked] == [int(m.argmax()) for m in mask]


def test_feeds_section_defaults_and_refusals(tmp_path):
    where = tmp_path / "manifest.json"
    assert read_feeds(None, where) == DEFAULT_FEEDS  # manifests written before the section
    assert read_feeds({"position_ids": "positions"}, where) == {"position_ids": "positions"}
    with pytest.raises(ArtifactError, match="rules \\['guess'\\]"):
        read_feeds({"position_ids": "guess"}, where)
    with pytest.raises(ArtifactError, match="map input names"):
        read_feeds(["positions"], where)
    with pytest.raises(ArtifactError, match="'global_attention_mask'.*re-export"):
        plan(DEFAULT_FEEDS, ["input_ids", "attention_mask", "global_attention_mask"])  # never guessed


def _tokenizer_file(tmp_path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate("a b c d e f".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_text_encoder_pads_left_fills_positions_and_pads_to_a_multiple(tmp_path):
    feeds = {"input_ids": "ids", "attention_mask": "mask", "position_ids": "positions", "token_type_ids": "type_ids"}
    enc = TextEncoder(_tokenizer_file(tmp_path), 16, 0, "[PAD]", list(feeds), feeds=feeds, padding_side="left",
                      pad_to_multiple_of=4)
    out, mask = enc.encode(["a b c d e", "f"])
    assert out["input_ids"].shape == (2, 8)  # 5 tokens padded to the next multiple of 4
    assert mask[1].tolist() == [0] * 7 + [1] and out["input_ids"][1, -1] == 7  # padded on the left
    assert out["position_ids"][1, -1] == 0 and out["position_ids"][0, -5:].tolist() == [0, 1, 2, 3, 4]
    assert not out["token_type_ids"].any()  # zeros where the tokenizer gives none


@pytest.mark.parametrize("mask", [LEFT, RIGHT], ids=["left", "right"])
def test_last_and_cls_pooling_take_real_tokens_on_either_side(mask):
    hidden = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    last = pool(hidden, mask, "last")
    first = pool(hidden, mask, "cls")
    for i, m in enumerate(mask.astype(bool)):
        real = hidden[i][m]
        assert np.array_equal(last[i], real[-1]) and np.array_equal(first[i], real[0])
    with pytest.raises(ArtifactError, match="use mean, cls, max, last"):
        pool(hidden, mask, "first")


def test_tokenizer_section_checks_its_padding_fields():
    defaults = TokenizerInfo(padding_side="right", pad_to_multiple_of=None, pad_batches=True)
    assert TokenizerInfo.from_dict(None) == defaults
    for bad in ({"padding_side": "middle"}, {"pad_to_multiple_of": 0}, {"pad_to_multiple_of": "8"}):
        with pytest.raises(ArtifactError, match="re-run 'toolchain export'"):
            TokenizerInfo.from_dict(bad)
    assert json.dumps(TokenizerInfo(padding_side="left").to_dict())  # written as plain JSON
