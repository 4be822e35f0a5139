"""The text2text-generation runtime class: an encoder and a decoder graph behind ``translate()``.

The graphs keep the contract of runtime/seq2seq_io.py; the decoding loop (greedy, beam search, the
preallocated buffers bound by pointer) is in runtime/seq2seq.py.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator

import numpy as np

from .base import register_runtime
from .checks import show
from .errors import ArtifactError, InputError
from .generate import TextRow
from .seq2seq import Search, Seq2Seq
from .seq2seq_io import DECODER, ENCODER, SOURCE_IDS, SOURCE_MASK
from .twograph import TwoGraphModel
from .text import as_texts, load_tokenizer


class Translator(TwoGraphModel):
    """A text2text-generation artifact (encoder + decoder): ``translate(texts, ...)``.

    ``source_ids()`` and ``decode_ids()`` are the steps ``translate()`` is made of, for parity checks and
    benches; ``seq2seq`` is the loop over the two sessions. Thread-safe: nothing of a call is kept on the
    instance."""

    components = (ENCODER, DECODER)
    main_component = DECODER  # providers are negotiated on the decoder; the encoder opens with the same

    def _prepare(self) -> None:
        gen = self.manifest.generation
        where = self.manifest.root / "manifest.json"
        if gen.bos_token_id is None:
            raise ArtifactError(f"{where} has no generation.bos_token_id (the decoder's start token); "
                                "re-export the artifact.")
        if not gen.eos_token_ids:
            raise ArtifactError(f"{where} has no generation.eos_token_ids; re-export the artifact.")
        self._io = None  # the loop binds its own inputs, states and logits (seq2seq.py)
        tok = load_tokenizer(self.manifest.root / self.manifest.tokenizer.file)
        tok.no_padding()
        tok.enable_truncation(max_length=self.manifest.max_length)  # keeps the special tokens it adds
        self._tok = tok
        device = "cuda" if self._negotiated.provider == "cuda" else "cpu"
        self._seq2seq = Seq2Seq(self._sessions[ENCODER], self._sessions[DECODER], gen.bos_token_id,
                                gen.eos_token_ids, tok.get_vocab_size(), device, max_positions=gen.max_positions)

    # -- the task's method ----------------------------------------------------------------------------
    def translate(self, texts: Any, max_new_tokens: int = 64, beam_size: int = 1, length_penalty: float = 1.0,
                  stream: bool = False):
        """Translate TEXTS: a str -> str, a list or tuple of str -> list of str (batch_size sources at a time,
        sorted by length so batches pad little; the order is restored).

        beam_size 1 is greedy decoding; a wider beam searches as Hugging Face does (score: sum of token
        log-probabilities / length ** length_penalty) and also keeps the greedy path as a candidate, so its
        result never scores below greedy's (seq2seq.BeamSearch). Decoding stops at the manifest's EOS ids or
        after max_new_tokens. Sources longer than the manifest's max_length are cut, with one warning.
        stream=True (one str, greedy) returns an iterator of text pieces whose concatenation is the text."""
        search = self._seq2seq.check(Search(max_new_tokens, beam_size, length_penalty))
        if not isinstance(stream, (bool, np.bool_)):
            raise InputError(f"stream must be True or False, got {show(stream)}.")
        single = isinstance(texts, str)
        items = as_texts(texts)
        for i, text in enumerate(items):
            if not text.strip():
                raise InputError(f"text {i} is empty; give each text at least one character to translate, "
                                 "or leave it out.")
        self._count_call()
        if stream:
            if not single:
                raise InputError("stream=True takes one text (a str); call once per text or use stream=False.")
            if search.beam_size != 1:
                raise InputError("stream=True decodes greedily; pass beam_size=1 to stream, or stream=False to search.")
            return self._stream(items[0], search.max_new_tokens)
        out = self._translate(items, search)
        return out[0] if single else out

    def _translate(self, items: list[str], search: Search) -> list[str]:
        encoded = self._tokenize(items)
        order = sorted(range(len(items)), key=lambda i: len(encoded[i]))
        results = [""] * len(items)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            ids, mask = self._pad([encoded[i] for i in idx])
            feeds = {SOURCE_IDS: ids, SOURCE_MASK: mask}
            texts = self._tok.decode_batch(self._seq2seq.decode(feeds, search), skip_special_tokens=True)
            for i, text in zip(idx, texts):
                results[i] = text
        return results

    def _stream(self, text: str, max_new: int) -> Iterator[str]:
        """Greedy decoding of one text, yielding each piece of text as soon as it is final (DecodeStream)."""
        ids, mask = self._pad(self._tokenize([text]))
        row = TextRow(self._tok, ())
        for tokens in self._seq2seq.greedy_steps({SOURCE_IDS: ids, SOURCE_MASK: mask}, max_new):
            token = int(tokens[0])
            if token in self._seq2seq.eos:
                break
            row.add(token)
            piece = row.fresh()
            if piece:
                yield piece
        row.finish()
        piece = row.fresh()
        if piece:
            yield piece

    # -- the steps, public for parity checks and benches ------------------------------------------------
    def source_ids(self, texts: Any) -> tuple[np.ndarray, np.ndarray]:
        """TEXTS tokenized as the encoder takes them: (ids, attention_mask), int64 (n, longest), right-padded
        with the tokenizer's pad id; sources over max_length are cut, with one warning."""
        return self._pad(self._tokenize(as_texts(texts)))

    def decode_ids(self, ids: Any, mask: Any, max_new_tokens: int = 64, beam_size: int = 1,
                   length_penalty: float = 1.0) -> list[list[int]]:
        """Generated token ids per row of (IDS, MASK) (as source_ids gives them), as one batch, without the
        start token and without EOS."""
        search = self._seq2seq.check(Search(max_new_tokens, beam_size, length_penalty))
        ids, mask = np.asarray(ids), np.asarray(mask)
        if ids.ndim != 2 or ids.shape != mask.shape or not ids.size or not np.issubdtype(ids.dtype, np.integer) \
                or not np.issubdtype(mask.dtype, np.integer):
            raise InputError(f"ids and mask must be integer arrays of the same (rows, length) shape, as source_ids() "
                             f"returns them, got shapes {ids.shape} and {mask.shape}.")
        self._count_call()
        return self._seq2seq.decode({SOURCE_IDS: ids.astype(np.int64), SOURCE_MASK: mask.astype(np.int64)}, search)

    def encode(self, texts: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The encoder's feeds (input_ids, attention_mask) and the mask."""
        ids, mask = self.source_ids(texts)
        return {SOURCE_IDS: ids, SOURCE_MASK: mask}, mask

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The decoder's first-step logits (rows, vocab) after the start token: the encoder and one decoder step."""
        return self._seq2seq.first_logits(feeds)

    def _tokenize(self, items: list[str]) -> list[list[int]]:
        encodings = self._tok.encode_batch(items, add_special_tokens=True)
        for i, e in enumerate(encodings):
            if not e.ids:
                raise InputError(f"text {i} encodes to no tokens; give it text the tokenizer knows.")
        cut = sum(1 for e in encodings if e.overflowing)
        if cut:
            warnings.warn(f"{cut} of {len(items)} texts exceed the model's maximum of {self.manifest.max_length} "
                          "tokens and were truncated.", stacklevel=4)
        return [e.ids for e in encodings]

    def _pad(self, encoded: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max((len(e) for e in encoded), default=0)
        ids = np.full((len(encoded), width), self.manifest.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        for i, e in enumerate(encoded):
            ids[i, : len(e)], mask[i, : len(e)] = e, 1
        return ids, mask


register_runtime("text2text-generation", Translator)
