"""Text in, model feeds out: input checking and tokenization with the `tokenizers` library.

Batches are padded to their longest item; items over the model's maximum are truncated (keeping
the special tokens) with one warning per call.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ArtifactError, InputError


def as_texts(texts: Any) -> list[str]:
    """Return ``texts`` as a list of str, or raise InputError saying which item is wrong and why."""
    if isinstance(texts, str):
        return [_clean(texts)]
    if not isinstance(texts, (list, tuple)):
        raise InputError(f"texts must be a str or a list of str, not {type(texts).__name__}.")
    out = []
    for i, item in enumerate(texts):
        if isinstance(item, str):
            out.append(_clean(item))
        elif isinstance(item, (bytes, bytearray)):
            raise InputError(f"item {i} is bytes; decode it to str first (for example item.decode('utf-8')).")
        else:
            raise InputError(f"item {i} is {type(item).__name__}, not str; pass a list of strings.")
    return out


def _clean(text: str) -> str:
    """Replace lone surrogates (which cannot be encoded as UTF-8) with U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def load_tokenizer(path: Path):
    """A `tokenizers.Tokenizer` from the artifact's tokenizer.json, or ArtifactError naming the fix."""
    from tokenizers import Tokenizer  # light, torch-free

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises bare Exception on a bad file
        raise ArtifactError(f"{path} cannot be loaded as a tokenizers file ({exc}); re-export the artifact.") from None


class TextEncoder:
    """Turns a batch of strings into the int64 arrays the ONNX graph takes."""

    def __init__(self, path: Path, max_length: int, pad_id: int, pad_token: str, input_names: Sequence[str]):
        tok = load_tokenizer(path)
        tok.no_padding()
        tok.enable_truncation(max_length=max_length)
        tok.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the longest item of each batch
        self._tok = tok
        self.max_length = max_length
        self.input_names = list(input_names)

    def encode(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Tokenize ``texts`` (already checked by as_texts): (feeds for the graph, attention mask)."""
        encodings = self._tok.encode_batch(texts, add_special_tokens=True)
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            warnings.warn(
                f"{truncated} of {len(texts)} inputs exceed the model's maximum of {self.max_length} tokens "
                "and were truncated.",
                stacklevel=4,
            )
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        width = max((len(e.ids) for e in encodings), default=0)  # an empty batch is (0, 0), not (0,)
        feeds = {}
        for name in self.input_names:
            if name not in columns:
                raise ArtifactError(f"the model takes an input {name!r} that text models do not provide; re-export it.")
            feeds[name] = np.asarray(columns[name], dtype=np.int64).reshape(len(texts), width)
        return feeds, np.asarray(columns["attention_mask"], dtype=np.int64).reshape(len(texts), width)
