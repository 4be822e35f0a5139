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
from .feeds import DEFAULT_FEEDS, Tokens, plan


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
    """Turns a batch of strings into the int64 arrays the ONNX graph takes, each input filled by the rule the
    manifest's feeds section names for it (feeds.py), padded on ``padding_side`` to the batch's longest item (or
    the next multiple of ``pad_to_multiple_of``)."""

    def __init__(self, path: Path, max_length: int, pad_id: int, pad_token: str, input_names: Sequence[str],
                 feeds: dict[str, str] | None = None, padding_side: str = "right",
                 pad_to_multiple_of: int | None = None):
        tok = load_tokenizer(path)
        tok.no_padding()
        tok.enable_truncation(max_length=max_length)
        tok.enable_padding(pad_id=pad_id, pad_token=pad_token, direction=padding_side,  # to each batch's longest
                           pad_to_multiple_of=pad_to_multiple_of)
        self._tok = tok
        self.max_length = max_length
        self.input_names = list(input_names)
        self._fill = plan(DEFAULT_FEEDS if feeds is None else feeds, self.input_names)

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
        width = max((len(e.ids) for e in encodings), default=0)  # an empty batch is (0, 0), not (0,)

        def column(values: list[list[int]]) -> np.ndarray:
            return np.asarray(values, dtype=np.int64).reshape(len(texts), width)

        tokens = Tokens(column([e.ids for e in encodings]), column([e.attention_mask for e in encodings]),
                        column([e.type_ids for e in encodings]))
        return {name: fill(tokens) for name, fill in self._fill.items()}, tokens.mask
