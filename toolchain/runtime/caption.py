"""The image-to-text runtime class: images in (runtime/images.py), an encoder graph on their pixel values and a
one-step decoder graph behind ``caption()``.

    cap = load("dist/captioner-shapes")
    cap.caption("scene.png")                       # -> "a large blue square below a small red circle"
    cap.caption([png_bytes, pil_image, hwc_uint8])  # -> [str, str, str]

The two graphs keep the encoder-decoder contract of runtime/seq2seq_io.py with ``pixel_values`` as the encoder's
one source; decoding (greedy, beam search, the KV-cache buffers bound by pointer) is the loop translate() runs
(runtime/seq2seq.py), not a copy of it. Preprocessing follows the artifact's ``preprocess`` section.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import register_runtime
from .errors import ArtifactError, InputError
from .images import MAX_PIXELS, image_items, load_images, pixel_values
from .seq2seq import Search, Seq2Seq
from .seq2seq_io import DECODER, ENCODER
from .twograph import TwoGraphModel
from .text import load_tokenizer


def one_image(images: Any) -> bool:
    """Whether IMAGES is one image (a path, bytes, a PIL image, an HW/HWC array) rather than a list or an NHWC batch."""
    return not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)


class Captioner(TwoGraphModel):
    """An image-to-text artifact (encoder + decoder): ``caption(images, ...)``.

    ``encode()`` (images -> the encoder's feeds) and ``decode_pixels()`` are the steps ``caption()`` is made of,
    for parity checks and benches; ``seq2seq`` is the loop over the two sessions. Thread-safe: nothing of a call
    is kept on the instance. ``max_pixels`` bounds each decoded image (decompression bombs are refused)."""

    components = (ENCODER, DECODER)
    main_component = DECODER  # providers are negotiated on the decoder; the encoder opens with the same
    max_pixels: int = MAX_PIXELS

    def _prepare(self) -> None:
        gen = self.manifest.generation
        where = self.manifest.root / "manifest.json"
        if gen.bos_token_id is None or not gen.eos_token_ids:
            raise ArtifactError(f"{where} has no generation.bos_token_id or eos_token_ids (the decoder's start and "
                                "end tokens); re-export the artifact with --task image-to-text.")
        self._preprocess = self.manifest.preprocess  # ArtifactError when the manifest has none
        tokenizer = self.manifest.tokenizer_path()
        if tokenizer is None:
            raise ArtifactError(f"{where} names no tokenizer (the captions' vocabulary); re-export the artifact with "
                                "--task image-to-text.")
        self._io = None  # the loop binds its own inputs, states and logits (seq2seq.py)
        self._tok = load_tokenizer(tokenizer)
        inputs = [i.name for i in self._sessions[ENCODER].get_inputs()]
        if len(inputs) != 1:
            raise ArtifactError(f"{self.manifest.root}'s encoder takes {inputs}, but a captioner's encoder takes one "
                                "input (the pixel values); re-export it with --task image-to-text.")
        self._input = inputs[0]
        device = "cuda" if self._negotiated.provider == "cuda" else "cpu"
        self._seq2seq = Seq2Seq(self._sessions[ENCODER], self._sessions[DECODER], gen.bos_token_id,
                                gen.eos_token_ids, self._tok.get_vocab_size(), device, sources=(self._input,),
                                max_positions=gen.max_positions or self.manifest.data.get("max_length"))

    def warmup_input(self) -> Any:
        p = self._preprocess
        return [np.zeros((p.height, p.width, 3), dtype=np.uint8)]

    # -- the task's method ----------------------------------------------------------------------------
    def caption(self, images: Any, max_new_tokens: int = 32, beam_size: int = 1,
                length_penalty: float = 1.0) -> str | list[str]:
        """Caption IMAGES: one image (a path, bytes, a PIL image, an HWC uint8 array) -> str; a list of them, or an
        NHWC array -> list of str (batch_size images per encoder run).

        beam_size 1 is greedy decoding; a wider beam searches as translate() does (runtime/seq2seq.py). Decoding
        stops at the manifest's EOS ids or after max_new_tokens (at most the decoder's positions, max_length)."""
        search = self._search(max_new_tokens, beam_size, length_penalty)
        single = one_image(images)
        items = image_items(images)
        self._count_call()
        out: list[str] = []
        for start in range(0, len(items), self.batch_size):
            batch = load_images(items[start : start + self.batch_size], start, self.max_pixels)
            ids = self._seq2seq.decode({self._input: pixel_values(batch, self._preprocess)}, search)
            out += [text.strip() for text in self._tok.decode_batch(ids, skip_special_tokens=True)]
        return out[0] if single else out

    def _search(self, max_new_tokens: Any, beam_size: Any, length_penalty: Any) -> Search:
        """The checked settings, max_new_tokens capped at the decoder's positions (Seq2Seq.check)."""
        return self._seq2seq.check(Search(max_new_tokens, beam_size, length_penalty))

    # -- the steps, public for parity checks and benches ------------------------------------------------
    def encode(self, images: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Images into the encoder's feeds ({pixel_values: float32 (N, 3, H, W)}) and a mask of ones (N, 1)."""
        pixels = pixel_values(load_images(image_items(images), 0, self.max_pixels), self._preprocess)
        return {self._input: pixels}, np.ones((len(pixels), 1), dtype=np.int64)

    def decode_pixels(self, pixels: Any, max_new_tokens: int = 32, beam_size: int = 1,
                      length_penalty: float = 1.0) -> list[list[int]]:
        """Generated token ids per row of PIXELS (float32 (N, 3, H, W), as encode() gives them), as one batch,
        without the start token and without EOS."""
        search = self._search(max_new_tokens, beam_size, length_penalty)
        pixels = np.asarray(pixels)
        p = self._preprocess
        if pixels.shape[1:] != (3, p.height, p.width) or not len(pixels) or pixels.dtype.kind != "f":
            raise InputError(f"pixels must be a float array (N, 3, {p.height}, {p.width}), as encode() returns it, "
                             f"got {pixels.dtype} {pixels.shape}.")
        self._count_call()
        return self._seq2seq.decode({self._input: np.ascontiguousarray(pixels, dtype=np.float32)}, search)

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The decoder's first-step logits (rows, vocab) after the start token: the encoder and one decoder step."""
        return self._seq2seq.first_logits(feeds)


register_runtime("image-to-text", Captioner)
