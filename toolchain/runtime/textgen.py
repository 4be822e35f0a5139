"""The text-generation runtime class: a KV-cache decoder graph behind ``generate()`` (loop in generate.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .base import Model, register_runtime
from .checks import show
from .errors import InputError, ProviderError
from .generate import Generator, Sampling
from .generate import generate as generate_text
from .text import as_texts, load_tokenizer


class TextGenerator(Model):
    """A text-generation artifact: ``generate(prompt, ...)``; ``generator`` is its loop for benches and parity."""

    def _prepare(self) -> None:
        on_cuda = self._negotiated.provider == "cuda"
        if on_cuda and self._device_id != 0:
            raise ProviderError("text generation on CUDA keeps its cache on device 0; pass device_id=0 and pick the "
                                "GPU with CUDA_VISIBLE_DEVICES=N instead.")
        self._io = None  # the loop binds its own inputs, cache and logits (generate.py)
        tokenizer = load_tokenizer(self.manifest.root / self.manifest.tokenizer.file)
        self._generator = Generator(self._session, tokenizer, self.manifest, "cuda" if on_cuda else "cpu")

    @property
    def io_binding(self) -> bool:
        return True  # decoders always run through IO binding (generate.py)

    @property
    def generator(self) -> Generator:
        """The generation loop over this model's session (``run()``, ``prompt_ids()``, ``prompt_logits()``,
        ``context``, ``eos``, ``pad_id``) for benches and parity checks."""
        return self._generator

    def generate(self, prompt: Any, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, stop: Any = (), seed: int | None = None,
                 stream: bool = False, usage: dict | None = None):
        """Continue PROMPT (a str -> str, or a list of str -> list of str, batched). temperature=0 is greedy.

        stream=True (one prompt) returns an iterator of text pieces whose concatenation is the text.
        Stops at EOS, at any of ``stop`` (not included), or after max_new_tokens.
        usage: a dict to fill with lists, one entry per prompt: ``prompt_tokens``, ``completion_tokens`` (EOS
        not counted) and ``finish_reasons`` ("stop" or "length"); a stream fills it when it ends.
        """
        s = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                     repetition_penalty=repetition_penalty, stop=stop, seed=seed)
        if usage is not None and not isinstance(usage, dict):
            raise InputError(f"usage must be a dict to fill (or None), got {show(usage)}.")
        if not isinstance(stream, (bool, np.bool_)):
            raise InputError(f"stream must be True or False, got {show(stream)}.")
        self._count_call()
        if stream or not isinstance(prompt, (list, tuple)) or len(prompt) <= self.batch_size:
            return generate_text(self._generator, prompt, bool(stream), s, usage)
        # A long list runs batch_size prompts at a time, so the KV cache stays bounded. The first batch keeps
        # the seed (short lists sample as before); later ones get seeds derived from it, still reproducible.
        prompts, out = as_texts(prompt), []
        for k, start in enumerate(range(0, len(prompts), self.batch_size)):
            seed_k = s.seed
            if k and seed_k is not None:
                seed_k = int(np.random.SeedSequence([seed_k, k]).generate_state(1)[0])
            part: dict = {}
            out += generate_text(self._generator, prompts[start : start + self.batch_size], False,
                                 dataclasses.replace(s, seed=seed_k), part)
            for key in ("prompt_tokens", "completion_tokens", "finish_reasons") if usage is not None else ():
                usage[key] = usage.get(key, []) + part[key]
        return out

    def encode(self, texts: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Left-padded (or right-padded, as the graph wants) prompt ids cut to the context, and their mask."""
        items = as_texts(texts)
        if not items:
            empty = np.zeros((0, 0), np.int64)
            return {"input_ids": empty, "attention_mask": empty.copy()}, empty.copy()
        ids, mask = self._generator.prompt_ids(items, 0)
        return {"input_ids": ids, "attention_mask": mask}, mask

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The prompt's logits with an empty cache (what parity compares with PyTorch)."""
        return self._generator.prompt_logits(feeds["input_ids"], feeds["attention_mask"])


register_runtime("text-generation", TextGenerator)
