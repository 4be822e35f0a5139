"""Text generation over a KV-cache decoder graph (optimum's text-generation-with-past export).

One graph serves the prompt (empty past) and every decode step. The cache never leaves ONNX
Runtime between steps: two buffers per cache tensor are allocated once per call and bound by pointer
(IO binding), the past read from one and the present written into the other, and only the last
position's logits are copied out. Text is decoded
incrementally (tokenizers' DecodeStream), never by re-decoding the whole sequence.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .errors import InputError
from .text import as_texts

NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass
class Sampling:
    """How to pick the next token; temperature 0 is greedy. Checks itself."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1, "max_new_tokens must be an int >= 1"),
            (isinstance(self.temperature, (int, float)) and self.temperature >= 0, "temperature must be >= 0 (0 is greedy)"),
            (isinstance(self.top_k, int) and self.top_k >= 0, "top_k must be an int >= 0 (0 turns it off)"),
            (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0, "repetition_penalty must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"{message}; got {self!r}.")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        if not all(isinstance(s, str) and s for s in self.stop):
            raise InputError(f"stop must be a list of non-empty strings, got {self.stop!r}.")
        self.stop = tuple(self.stop)


def pick(logits: np.ndarray, seen: list[np.ndarray], s: Sampling, rng: np.random.Generator) -> np.ndarray:
    """Next token per row from last-position logits (B, V): penalty, temperature, top-k, top-p."""
    logits = logits.astype(np.float64, copy=True)
    if s.repetition_penalty != 1.0:
        for row, ids in zip(logits, seen):
            ids = np.unique(ids)
            vals = row[ids]
            row[ids] = np.where(vals > 0, vals / s.repetition_penalty, vals * s.repetition_penalty)
    if s.temperature == 0:
        return logits.argmax(axis=1)
    logits /= s.temperature
    if s.top_k and s.top_k < logits.shape[1]:
        kth = np.partition(logits, -s.top_k, axis=1)[:, -s.top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if s.top_p < 1.0:
        order = np.argsort(-probs, axis=1)
        sorted_p = np.take_along_axis(probs, order, axis=1)
        keep_sorted = np.cumsum(sorted_p, axis=1) - sorted_p < s.top_p  # always keeps the top token
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probs])


class _Row:
    """One prompt's output text: incremental decoding, stop strings, and what is safe to stream."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]):
        from tokenizers.decoders import DecodeStream

        self._tok, self._stream = tokenizer, DecodeStream(skip_special_tokens=True)
        self.stop, self.text, self.sent, self.done, self.ids = stop, "", 0, False, []
        self._hold = max((len(x) for x in stop), default=1) - 1

    def add(self, token: int) -> None:
        self.ids.append(int(token))
        piece = self._stream.step(self._tok, int(token))
        if piece:
            self.text += piece
            for s in self.stop:
                at = self.text.find(s)
                if at >= 0:
                    self.text, self.done = self.text[:at], True
                    self.ids = []  # cut at a stop string: the text is final as it is

    def finish(self) -> None:
        """End of generation: bytes the stream still holds (an unfinished UTF-8 character) become text
        exactly as a full decode would render them; one decode per sequence, not per step."""
        if self.ids:
            full = self._tok.decode(self.ids, skip_special_tokens=True)
            if full.startswith(self.text):
                self.text = full
        self.done, self.ids = True, []

    def fresh(self) -> str:
        """Text not yet streamed, holding back a tail that could still become a stop string."""
        upto = len(self.text) if self.done else max(self.sent, len(self.text) - self._hold)
        out, self.sent = self.text[self.sent : upto], upto
        return out


class Generator:
    """Runs the KV-cache graph. Stateless between calls, so one instance serves many threads."""

    def __init__(self, session: Any, tokenizer: Any, manifest_data: dict[str, Any], device: str = "cpu"):
        self.session, self.tok, self.device = session, tokenizer, device
        tokenizer.no_padding()
        tokenizer.no_truncation()
        gen = manifest_data.get("generation") or {}
        self.context = int(manifest_data["max_length"])
        self.eos = set(gen.get("eos_token_ids") or [])
        self.pad_id = int((manifest_data.get("tokenizer") or {}).get("pad_id", 0))
        inputs = {i.name: i for i in session.get_inputs()}
        self.past = [n for n in inputs if n.startswith("past_key_values.")]
        self.present = [o.name for o in session.get_outputs() if o.name.startswith("present")]
        first = inputs[self.past[0]]
        self.kv_heads, self.head_dim = first.shape[1], first.shape[3]
        self.kv_type = NP_TYPES.get(first.type, np.float32)
        self.takes_positions = "position_ids" in inputs
        logits = next(o for o in session.get_outputs() if o.name == "logits")
        self.vocab = int(logits.shape[-1]) if isinstance(logits.shape[-1], int) else len(tokenizer.get_vocab())

    def prompt_logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Logits (B, T, V) of a prompt with an empty cache: what parity compares with PyTorch."""
        empty = np.zeros((ids.shape[0], self.kv_heads, 0, self.head_dim), dtype=self.kv_type)
        feeds = {"input_ids": ids, "attention_mask": mask, **{n: empty for n in self.past}}
        if self.takes_positions:
            feeds["position_ids"] = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        return self.session.run(["logits"], feeds)[0]

    # -- the loop ------------------------------------------------------------------------------------
    def run(self, prompts: list[str], s: Sampling, stats: dict[str, Any] | None = None) -> Iterator[tuple[int, str]]:
        """Yield (row, text piece) as text becomes final; rows finish on EOS, a stop string or the limit.

        ``stats`` (optional) receives steps run and seconds to the first token, for benchmarks."""
        import time


        started = time.perf_counter()
        stats = {} if stats is None else stats

        ids, mask = self._prompt_ids(prompts, s.max_new_tokens)
        batch = len(prompts)
        rng = np.random.default_rng(s.seed)
        rows = [_Row(self.tok, s.stop) for _ in prompts]
        seen = [r[m.astype(bool)] for r, m in zip(ids, mask)]
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        binding = self.session.io_binding()
        cache = _KVCache(self, batch, ids.shape[1] + s.max_new_tokens)
        step_ids = ids
        for step in range(s.max_new_tokens):
            binding.bind_cpu_input("input_ids", np.ascontiguousarray(step_ids, dtype=np.int64))
            binding.bind_cpu_input("attention_mask", np.ascontiguousarray(mask, dtype=np.int64))
            if self.takes_positions:
                binding.bind_cpu_input("position_ids", np.ascontiguousarray(positions, dtype=np.int64))
            logits = cache.bind_logits(binding, step_ids.shape[1])
            written = cache.bind(binding, step_ids.shape[1])
            self.session.run_with_iobinding(binding)
            logits = logits() if callable(logits) else logits[:, -1, :]
            cache.advance(written)
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
            tokens = pick(logits, seen, s, rng)
            stats["steps"] = step + 1
            stats.setdefault("first_token_s", time.perf_counter() - started)
            for i, (row, token) in enumerate(zip(rows, tokens)):
                if row.done:
                    continue
                if int(token) in self.eos:
                    row.finish()
                else:
                    row.add(token)
                    seen[i] = np.append(seen[i], token)
                piece = row.fresh()
                if piece:
                    yield i, piece
            if all(r.done for r in rows):
                return
            step_ids = tokens[:, None]
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=mask.dtype)], axis=1)
            positions = positions[:, -1:] + 1
        for i, row in enumerate(rows):
            row.finish()
            piece = row.fresh()
            if piece:
                yield i, piece

    def _prompt_ids(self, prompts: list[str], max_new: int) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded prompt ids and mask; prompts longer than the context allows keep their end."""
        if max_new >= self.context:
            raise InputError(f"max_new_tokens {max_new} leaves no room for the prompt in the model's context of "
                             f"{self.context} tokens; ask for fewer than {self.context}.")
        room = self.context - max_new
        encoded = [e.ids for e in self.tok.encode_batch(prompts, add_special_tokens=True)]
        if any(not e for e in encoded):
            raise InputError("a prompt encodes to no tokens; give at least one character of text.")
        if any(len(e) > room for e in encoded):
            warnings.warn(f"a prompt is longer than the {room} tokens that fit with max_new_tokens={max_new} in the "
                          f"context of {self.context}; its beginning was cut.", stacklevel=4)
            encoded = [e[-room:] for e in encoded]
        width = max(len(e) for e in encoded)
        ids = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        for i, e in enumerate(encoded):
            ids[i, width - len(e):] = e
            mask[i, width - len(e):] = 1
        return ids, mask


class _KVCache:
    """The KV cache in two buffers per tensor, allocated once for the whole generation and used in turn:
    each step ONNX Runtime reads the past from one and writes the present (one position longer) into the
    other, both bound by pointer, so no cache memory is allocated or copied out per step."""

    def __init__(self, gen: Generator, batch: int, max_len: int):
        import onnxruntime as ort

        self.gen, self.length, self.turn = gen, 0, 0
        self.row = (batch, gen.kv_heads)
        size = batch * gen.kv_heads * max_len * gen.head_dim
        self.buffers = [[ort.OrtValue.ortvalue_from_shape_and_type([size], self.gen.kv_type, gen.device, 0)
                         for _ in gen.present] for _ in range(2)]
        self.vocab = gen.vocab
        self.logits = np.empty(batch * max_len * self.vocab, dtype=np.float32) if gen.device == "cpu" else None

    def bind_logits(self, binding: Any, tokens: int):
        """On CPU the logits land in a buffer allocated once (returned as the step's view); on a device
        ONNX Runtime allocates them and a callable copies the last position back."""
        gen, (batch, _) = self.gen, self.row
        shape = [batch, tokens, self.vocab]
        if gen.device == "cpu":
            view = self.logits[: batch * tokens * self.vocab].reshape(shape)
            binding.bind_output("logits", "cpu", 0, np.float32, shape, view.ctypes.data)
            return view
        binding.bind_output("logits", gen.device)
        return lambda: binding.get_outputs()[0].numpy()[:, -1, :]

    def bind(self, binding: Any, new_tokens: int) -> int:
        """Bind past (current length) and present (length + new_tokens); return the new length."""
        gen, read, write = self.gen, self.buffers[self.turn], self.buffers[1 - self.turn]
        grown = self.length + new_tokens
        for past, present, src, dst in zip(gen.past, gen.present, read, write):
            binding.bind_input(past, gen.device, 0, gen.kv_type, [*self.row, self.length, gen.head_dim], src.data_ptr())
            binding.bind_output(present, gen.device, 0, gen.kv_type, [*self.row, grown, gen.head_dim], dst.data_ptr())
        return grown

    def advance(self, length: int) -> None:
        self.length, self.turn = length, 1 - self.turn


def generate(generator: Generator, prompt: Any, stream: bool, **sampling: Any):
    """The public behaviour of Model.generate: str in -> str out, list in -> list out, or a stream."""
    s = Sampling(**sampling)
    single = isinstance(prompt, str)
    prompts = as_texts(prompt)
    if not prompts:
        return iter(()) if stream else []
    if stream:
        if not single:
            raise InputError("stream=True takes one prompt (a str); call once per prompt or use stream=False.")
        return (piece for _, piece in generator.run(prompts, s))
    texts = [""] * len(prompts)
    for i, piece in generator.run(prompts, s):
        texts[i] += piece
    return texts[0] if single else texts
