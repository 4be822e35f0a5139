"""Export parity covers the tokenizer: an artifact whose tokenizer.json gives other ids than PyTorch's
tokenizer fails export with a ParityError that says the token ids differ."""

from __future__ import annotations

import json

import pytest
import tokenizers

from toolchain.export import export
from toolchain.runtime import ParityError


def _mistokenizing_save(monkeypatch, change):
    """Let tokenizers.Tokenizer.save write tokenizer.json, then CHANGE its JSON (the artifact's copy only;
    the PyTorch side keeps its own tokenizer)."""
    real = tokenizers.Tokenizer.save
    saved = []

    def save(self, path, *args, **kwargs):
        real(self, path, *args, **kwargs)
        data = json.loads(open(path, encoding="utf-8").read())
        change(data)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        saved.append(path)

    monkeypatch.setattr(tokenizers.Tokenizer, "save", save)
    return saved


def _swap_common_ids(data):
    vocab = data["model"]["vocab"]
    vocab["the"], vocab["a"] = vocab["a"], vocab["the"]


def _no_lowercase(data):
    data["normalizer"]["lowercase"] = False


@pytest.mark.parametrize("change", [_swap_common_ids, _no_lowercase], ids=["swapped-ids", "no-lowercase"])
def test_tokenizer_mismatch_fails_export(tiny_model, tmp_path, monkeypatch, change):
    src = tiny_model("bert")
    saved = _mistokenizing_save(monkeypatch, change)
    out = tmp_path / "art"
    with pytest.raises(ParityError, match=r"fp32: .*tokens differ from PyTorch's \(tokenizer ids"):
        export(src, out, task="feature-extraction")
    assert saved, "export no longer saves tokenizer.json through tokenizers.Tokenizer.save; update this test"
    assert not out.exists()  # nothing half-written


def test_same_tokenizer_exports(tiny_model, tmp_path, monkeypatch):
    """The control: the same path with the tokenizer unchanged passes parity."""
    src = tiny_model("bert")
    saved = _mistokenizing_save(monkeypatch, lambda data: None)
    manifest = export(src, tmp_path / "art", task="feature-extraction")
    assert saved and manifest["variants"]["fp32"]["metrics"]["parity"]["tokens_match"] is True
