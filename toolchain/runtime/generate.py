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

from .checks import MAX_PENALTY, MIN_SCALE, check_int, finite, show
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
        """Coerce to plain Python values, or InputError naming the fix. NaN, infinities and scales so small
        that dividing the logits by them overflows never reach the sampler."""
        self.max_new_tokens = check_int("max_new_tokens", self.max_new_tokens, 1, "pass how many tokens to add, such as 64")
        self.top_k = check_int("top_k", self.top_k, 0, "pass 0 to turn it off or a value such as 50")
        t = finite(self.temperature)
        if t is None or t < 0 or 0 < t < MIN_SCALE:
            raise InputError(f"temperature must be >= 0 (0 is greedy): pass 0 or a finite value of at least {MIN_SCALE:g} "
                             f"such as 0.8, got {show(self.temperature)}.")
        p = finite(self.top_p)
        if p is None or not 0 < p <= 1:
            raise InputError(f"top_p must be in (0, 1]: pass 1.0 to turn it off or a value such as 0.9, "
                             f"got {show(self.top_p)}.")
        r = finite(self.repetition_penalty)
        if r is None or not MIN_SCALE <= r <= MAX_PENALTY:
            raise InputError(f"repetition_penalty must be > 0: pass 1.0 to turn it off or a value from {MIN_SCALE:g} to "
                             f"{MAX_PENALTY:g} such as 1.2, got {show(self.repetition_penalty)}.")
        stop = self.stop
        stops = () if stop is None else (stop,) if isinstance(stop, str) else stop
        if not isinstance(stops, (list, tuple)) or not all(isinstance(x, str) and x for x in stops):
            raise InputError(f"stop must be a list of non-empty strings such as ['\\n'], got {show(stop)}.")
        if self.seed is not None:
            self.seed = check_int("seed", self.seed, 0, "pass None for a fresh sample each call or a seed such as 0")
        self.temperature, self.top_p, self.repetition_penalty, self.stop = t, p, r, tuple(stops)


def pick(logits: np.ndarray, seen: list[np.ndarray], s: Sampling, rng: np.random.Generator) -> np.ndarray:
    """Next token per row from last-position logits (B, V): penalty, temperature, top-k, top-p."""
    if s.temperature == 0 and s.repetition_penalty == 1.0:
        return logits.argmax(axis=1)  # greedy: no copy of the (B, V) logits
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


class TextRow:
    """One prompt's output text: incremental decoding, stop strings, and what is safe to stream."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]):
        from tokenizers.decoders import DecodeStream

        self._tok, self._stream = tokenizer, DecodeStream(skip_special_tokens=True)
        self.stop, self.text, self.sent, self.done, self.ids = stop, "", 0, False, []
        self._hold = max((len(x) for x in stop), default=1) - 1
        self.count, self.reason = 0, "length"  # tokens generated (EOS not counted); "stop" on EOS or a stop string

    def add(self, token: int) -> None:
        self.count += 1
        self.ids.append(int(token))
        piece = self._stream.step(self._tok, int(token))
        if piece:
            self.text += piece
            self._cut()

    def _cut(self) -> None:
        for s in self.stop:
            at = self.text.find(s)
            if at >= 0:
                self.text, self.done, self.reason = self.text[:at], True, "stop"
                self.ids = []  # cut at a stop string: the text is final as it is

    def finish(self) -> None:
        """End of generation: bytes the stream still holds (an unfinished UTF-8 character) become text
        exactly as a full decode would render them; one decode per sequence, not per step."""
        if self.ids:
            full = self._tok.decode(self.ids, skip_special_tokens=True)
            if full.startswith(self.text):
                self.text = full
                self._cut()  # the held bytes may render as a stop string (e.g. U+FFFD)
        self.done, self.ids = True, []

    def fresh(self) -> str:
        """Text not yet streamed, holding back a tail that could still become a stop string."""
        upto = len(self.text) if self.done else max(self.sent, len(self.text) - self._hold)
        out, self.sent = self.text[self.sent : upto], upto
        return out


class Generator:
    """Runs the KV-cache graph. Stateless between calls, so one instance serves many threads."""

    def __init__(self, session: Any, tokenizer: Any, manifest: Any, device: str = "cpu"):
        """MANIFEST: the artifact's Manifest (its max_length, generation and tokenizer sections)."""
        self.session, self.tok, self.device = session, tokenizer, device
        tokenizer.no_padding()
        tokenizer.no_truncation()
        gen = manifest.generation  # checked: padding_side is left or right
        self.context = manifest.max_length
        self.eos = set(gen.eos_token_ids)
        self.pad_id = manifest.tokenizer.pad_id
        inputs = {i.name: i for i in session.get_inputs()}
        self.past = [n for n in inputs if n.startswith("past_key_values.")]
        self.present = [o.name for o in session.get_outputs() if o.name.startswith("present")]
        first = inputs[self.past[0]]
        self.kv_heads, self.head_dim = first.shape[1], first.shape[3]
        self.kv_type = NP_TYPES.get(first.type, np.float32)
        self.takes_positions = "position_ids" in inputs
        # "left": optimum's graphs (left-padded prompts, positions from the mask); "right": graphs whose
        # attention (GroupQueryAttention) reads each row's length from the mask sum, so every row's tokens
        # and cache entries start at 0 and the prompt is right-padded.
        self.padding_side = gen.padding_side
        # GroupQueryAttention graphs read the past from and write the present into one buffer of the full
        # length (each row's length comes from the mask), so the cache is bound once per call.
        self.shared_kv = gen.shared_kv_buffer
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
        ``stats`` (optional) receives steps run and seconds to the first token, for benchmarks, and per prompt
        its ``prompt_tokens``, ``completion_tokens`` (EOS not counted) and ``finish_reasons`` ("stop": EOS or a
        stop string; "length": max_new_tokens reached), as an OpenAI-style server reports them."""
        import time

        started = time.perf_counter()
        stats = {} if stats is None else stats
        ids, mask = self.prompt_ids(prompts, s.max_new_tokens)
        rows = [TextRow(self.tok, s.stop) for _ in prompts]
        stats["prompt_tokens"] = [int(n) for n in mask.sum(axis=1)]
        try:
            yield from self._loop(ids, mask, rows, s, stats, started)
        finally:  # also when a stream is closed early: the counts so far
            stats["completion_tokens"] = [r.count for r in rows]
            stats["finish_reasons"] = [r.reason for r in rows]

    def _loop(self, ids: np.ndarray, mask: np.ndarray, rows: list["TextRow"], s: Sampling, stats: dict[str, Any],
              started: float) -> Iterator[tuple[int, str]]:
        """run()'s decoding steps over the prompt IDS and MASK, one TextRow per prompt."""
        import time

        batch, width = ids.shape
        lengths = mask.sum(axis=1)
        right = self.padding_side == "right"
        rng = np.random.default_rng(s.seed)
        seen = [r[m.astype(bool)] for r, m in zip(ids, mask)] if s.repetition_penalty != 1.0 else [None] * batch
        # Every step's attention mask is a prefix of one array built here: left-padded rows keep their
        # padding at the start and attend to every new token; right-padded rows count their tokens from 0.
        span = np.arange(width + s.max_new_tokens)
        masks = None if right else np.concatenate([mask, np.ones((batch, s.max_new_tokens), dtype=np.int64)], axis=1)
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        binding = self.session.io_binding()
        cache = _KVCache(self, batch, width + s.max_new_tokens)
        step_ids, step_mask, live = ids, mask, list(range(batch))
        for step in range(s.max_new_tokens):
            binding.bind_cpu_input("input_ids", step_ids)
            binding.bind_cpu_input("attention_mask", step_mask)
            if self.takes_positions:
                binding.bind_cpu_input("position_ids", positions)
            logits = cache.bind_logits(binding, step_ids.shape[1])
            written = cache.bind(binding, step_ids.shape[1])
            self.session.run_with_iobinding(binding)
            if callable(logits):
                logits = logits()
            elif step == 0 and right:
                logits = logits[np.arange(batch), lengths - 1]
            else:
                logits = logits[:, -1, :]
            cache.advance(written)
            if not cache.shared:  # shared: the cache stays bound; inputs and logits are re-bound by name
                binding.clear_binding_inputs()
                binding.clear_binding_outputs()
            tokens = pick(logits, seen, s, rng)
            stats["steps"] = step + 1
            stats.setdefault("first_token_s", time.perf_counter() - started)
            yield from self._take(tokens, rows, live, seen)
            live = [i for i in live if not rows[i].done]
            if not live:
                return
            step_ids = tokens[:, None].astype(np.int64, copy=False)
            grown = width + step + 1
            if right:
                step_mask = (span[:grown] < (lengths + step + 1)[:, None]).astype(np.int64)
            else:
                step_mask = np.ascontiguousarray(masks[:, :grown])
            positions = positions[:, -1:] + 1
        for i in live:
            rows[i].finish()
            piece = rows[i].fresh()
            if piece:
                yield i, piece

    def _take(self, tokens: np.ndarray, rows: list["TextRow"], live: list[int], seen: list[Any]) -> list[tuple[int, str]]:
        """Add one step's tokens to the live rows; return the (row, text piece) pairs now safe to stream."""
        out = []
        for i in live:
            row, token = rows[i], int(tokens[i])
            if token in self.eos:
                row.reason = "stop"
                row.finish()
            else:
                row.add(token)
                if seen[i] is not None:
                    seen[i] = np.append(seen[i], token)
            piece = row.fresh()
            if piece:
                out.append((i, piece))
        return out

    def prompt_ids(self, prompts: list[str], max_new: int) -> tuple[np.ndarray, np.ndarray]:
        """Padded prompt ids and mask (on the side the graph wants); prompts longer than the context
        allows keep their end."""
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
            at = slice(0, len(e)) if self.padding_side == "right" else slice(width - len(e), width)
            ids[i, at] = e
            mask[i, at] = 1
        return ids, mask


class _KVCache:
    """The KV cache, allocated once for the whole generation and bound by pointer (IO binding), so no
    cache memory is allocated or copied out per step.

    Two layouts: for graphs that take past and present as separate tensors (optimum's), two buffers per
    tensor used in turn, ONNX Runtime reading the past from one and writing the present (one position
    longer) into the other; for graphs whose attention updates the cache in place (``shared``), one
    buffer of the full length per tensor, bound as both past and present once per call. It is not
    cleared: each row reads only the positions it has written (its length comes from the mask)."""

    def __init__(self, gen: Generator, batch: int, max_len: int):
        import onnxruntime as ort

        self.gen, self.length, self.turn, self.max_len = gen, 0, 0, max_len
        self.shared, self.bound = gen.shared_kv, False
        self.row = (batch, gen.kv_heads)
        size = batch * gen.kv_heads * max_len * gen.head_dim
        self.buffers = [[ort.OrtValue.ortvalue_from_shape_and_type([size], self.gen.kv_type, gen.device, 0)
                         for _ in gen.present] for _ in range(1 if self.shared else 2)]
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
        gen = self.gen
        grown = self.length + new_tokens
        if self.shared:
            if not self.bound:
                full = [*self.row, self.max_len, gen.head_dim]
                for past, present, buf in zip(gen.past, gen.present, self.buffers[0]):
                    binding.bind_input(past, gen.device, 0, gen.kv_type, full, buf.data_ptr())
                    binding.bind_output(present, gen.device, 0, gen.kv_type, full, buf.data_ptr())
                self.bound = True
            return grown
        read, write = self.buffers[self.turn], self.buffers[1 - self.turn]
        for past, present, src, dst in zip(gen.past, gen.present, read, write):
            binding.bind_input(past, gen.device, 0, gen.kv_type, [*self.row, self.length, gen.head_dim], src.data_ptr())
            binding.bind_output(present, gen.device, 0, gen.kv_type, [*self.row, grown, gen.head_dim], dst.data_ptr())
        return grown

    def advance(self, length: int) -> None:
        self.length, self.turn = length, 1 - self.turn


USAGE = ("prompt_tokens", "completion_tokens", "finish_reasons")  # what generate(usage=...) reports per prompt


def generate(generator: Generator, prompt: Any, stream: bool, s: Sampling, usage: dict[str, Any] | None = None):
    """The public behaviour of Model.generate: str in -> str out, list in -> list out, or a stream. USAGE (a
    dict) receives the USAGE lists of Generator.run's stats (a stream's once it ends or is closed)."""
    single = isinstance(prompt, str)
    prompts = as_texts(prompt)
    if not prompts:
        return iter(()) if stream else []
    stats: dict[str, Any] = {}
    if stream:
        if not single:
            raise InputError("stream=True takes one prompt (a str); call once per prompt or use stream=False.")
        return _pieces(generator.run(prompts, s, stats), stats, usage)
    texts = [""] * len(prompts)
    for i, piece in generator.run(prompts, s, stats):
        texts[i] += piece
    _report(stats, usage)
    return texts[0] if single else texts


def _pieces(rows: Iterator[tuple[int, str]], stats: dict[str, Any], usage: dict[str, Any] | None) -> Iterator[str]:
    try:
        for _, piece in rows:
            yield piece
    finally:
        _report(stats, usage)


def _report(stats: dict[str, Any], usage: dict[str, Any] | None) -> None:
    if usage is not None:
        usage.update({key: stats[key] for key in USAGE if key in stats})
