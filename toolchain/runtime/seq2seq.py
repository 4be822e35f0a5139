"""The decoding loop of an encoder-decoder artifact (the two graphs of runtime/seq2seq_io.py): greedy and beam search.

Search settings and beam bookkeeping live in runtime/beam.py. The encoder runs once per call. The decoder
then runs once per output token through IO binding, with every buffer allocated once per call and bound by
pointer:

- per ``past.<x>`` state, two flat buffers sized for the call's maximum (rows x the state's fixed dims, and
  on a ``past_sequence`` axis its first length plus max_new_tokens). ONNX Runtime reads the past from one
  and writes the present into the other (a view of the buffer's head with the present's shape), and the
  two swap each step. Beam search reorders rows by gathering the present's rows into the other buffer
  (``np.take(..., out=...)``) instead of swapping: no state is allocated or copied out per step.
- the step's ``input_ids`` (rows, 1), written in place each step; the encoder's non-state outputs and its
  attention mask, expanded to the decoder's rows once per call; the logits (rows, vocab).

The buffers are host memory. On CUDA that stays correct, and ONNX Runtime copies the bound inputs to the
device and the outputs back on each step (a cost a device-resident cache would avoid; beam reordering
would then need a gather on the device).

Nothing is kept on the loop object between calls: each call builds its own ``DecoderRun``, so one
``Seq2Seq`` serves many threads.
The encoder's feeds come by name (``sources``: ids and mask for a translator, pixel_values for a captioner,
whose decoder then takes no encoder_attention_mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .beam import MAX_BEAMS, BeamSearch, Search
from .errors import ArtifactError, InputError
from .seq2seq_io import LOGITS, MEMORY_MASK, PAST, PAST_AXIS, SOURCE_IDS, SOURCE_MASK, STEP_IDS, present_name

DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
FIX = "re-export the artifact so its encoder and decoder keep the contract of runtime/seq2seq_io.py"


@dataclass(frozen=True)
class State:
    """One ``past.<x>`` state: its decoder input, dtype and dims, the index of its growing axis, and whether
    the encoder gives its first value (else it starts as zeros, empty on its growing axis)."""

    past: str
    dtype: Any
    dims: tuple[Any, ...]
    grows: int | None
    from_encoder: bool

    @property
    def present(self) -> str:
        return present_name(self.past)


def _dtype(arg: Any, what: str) -> Any:
    if arg.type not in DTYPES:
        raise ArtifactError(f"{what} {arg.name!r} has type {arg.type}, which the runtime does not bind; {FIX}.")
    return DTYPES[arg.type]


class Seq2Seq:
    """The two sessions and what their graphs say; ``greedy_steps()``, ``decode()`` and ``first_logits()``."""

    def __init__(self, encoder: Any, decoder: Any, bos: int, eos: tuple[int, ...], vocab: int, device: str = "cpu",
                 sources: tuple[str, ...] = (SOURCE_IDS, SOURCE_MASK), max_positions: int | None = None):
        """VOCAB: the tokenizer's size, used only when the graph leaves the logits' last dim unnamed. SOURCES: the
        encoder's inputs, which every call feeds by name (with SOURCE_MASK among them, the decoder takes it).
        MAX_POSITIONS: the decoder's target positions (the manifest's generation.max_positions), which caps
        max_new_tokens: the step after them would index past the position table (None: no table)."""
        self.encoder, self.decoder, self.device = encoder, decoder, device
        self.max_positions = max_positions
        self.bos, self.eos = int(bos), tuple(int(e) for e in eos)
        self.eos_ids = np.array(self.eos, dtype=np.int64)  # for a vectorised "is EOS" (np.isin costs ~10 us a step)
        enc_in = {i.name for i in encoder.get_inputs()}
        if enc_in != set(sources):
            raise ArtifactError(f"the encoder takes {sorted(enc_in)}, not {' and '.join(sources)}; {FIX}.")
        self.sources, self.masked = tuple(sources), SOURCE_MASK in sources
        mask = [MEMORY_MASK] if self.masked else []  # an image has no padding: its decoder takes no mask
        enc_out = [o.name for o in encoder.get_outputs()]
        dec_in = {i.name: i for i in decoder.get_inputs()}
        dec_out = {o.name: o for o in decoder.get_outputs()}
        for name in (STEP_IDS, *mask, *(n for n in enc_out if not n.startswith(PAST))):
            if name not in dec_in:
                raise ArtifactError(f"the decoder does not take the input {name!r}; {FIX}.")
        if LOGITS not in dec_out:
            raise ArtifactError(f"the decoder has no output {LOGITS!r}; {FIX}.")
        self.encoder_outputs, self.memory = enc_out, [n for n in enc_out if not n.startswith(PAST)]
        self.states = [self._state(dec_in[n], dec_out, n in enc_out) for n in dec_in if n.startswith(PAST)]
        taken = {STEP_IDS, *mask, *self.memory, *(s.past for s in self.states)}
        stray = sorted(set(dec_in) - taken) + sorted(n for n in enc_out if n.startswith(PAST) and n not in dec_in)
        if stray:
            raise ArtifactError(f"{stray[0]!r} is neither a decoder input the encoder provides nor a state; {FIX}.")
        logits = dec_out[LOGITS]
        self.logits_type = _dtype(logits, "the decoder output")
        last = logits.shape[-1] if logits.shape else None
        self.vocab = int(last) if isinstance(last, int) and last > 0 else int(vocab)

    @staticmethod
    def _state(arg: Any, outputs: dict[str, Any], from_encoder: bool) -> State:
        if present_name(arg.name) not in outputs:
            raise ArtifactError(f"the decoder takes {arg.name!r} but has no output {present_name(arg.name)!r}; {FIX}.")
        dims = tuple(arg.shape)
        grows = dims.index(PAST_AXIS) if PAST_AXIS in dims else None
        if not from_encoder and not all(isinstance(d, int) for i, d in enumerate(dims) if i not in (0, grows)):
            raise ArtifactError(f"the decoder state {arg.name!r} has dims {list(dims)}: a state the encoder does not "
                                f"give must have fixed dims besides batch and {PAST_AXIS}; {FIX}.")
        return State(arg.name, _dtype(arg, "the decoder input"), dims, grows, from_encoder)

    def check(self, search: Search) -> Search:
        """SEARCH with max_new_tokens capped at the decoder's positions (decoding ends there, as at max_new_tokens),
        or InputError when its beam is wider than this model allows."""
        limit = min(MAX_BEAMS, self.vocab)
        if search.beam_size > limit:
            raise InputError(f"beam_size must be at most {limit} (the smaller of {MAX_BEAMS} and the vocabulary's "
                             f"{self.vocab} tokens): pass a beam width such as 4, got {search.beam_size}.")
        if self.max_positions is not None:
            search.max_new_tokens = min(search.max_new_tokens, self.max_positions)
        return search

    def run_encoder(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The encoder's outputs by name (run once per call) on FEEDS (the sources by name)."""
        outs = self.encoder.run(self.encoder_outputs, {name: feeds[name] for name in self.sources})
        return dict(zip(self.encoder_outputs, outs))

    def run(self, feeds: dict[str, np.ndarray], origin: np.ndarray, max_new: int) -> "DecoderRun":
        """The encoder run on FEEDS, and a DecoderRun whose rows are the sources ORIGIN names."""
        mask = feeds[SOURCE_MASK] if self.masked else None
        return DecoderRun(self, self.run_encoder(feeds), mask, origin, max_new, len(next(iter(feeds.values()))))

    def first_logits(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The first step's logits (rows, vocab) from the start token: a warm-up and a parity probe."""
        rows = len(next(iter(feeds.values())))
        return self.run(feeds, np.arange(rows), 1).step(np.full(rows, self.bos, np.int64)).copy()

    # -- the loops ------------------------------------------------------------------------------------
    def greedy_steps(self, feeds: dict[str, np.ndarray], max_new: int) -> Iterator[np.ndarray]:
        """Yield each step's tokens (rows,), EOS included; a row that has finished yields -1. Stops when
        every row has finished or after MAX_NEW steps. FEEDS: the encoder's sources by name."""
        rows = len(next(iter(feeds.values())))
        run = self.run(feeds, np.arange(rows), max_new)
        tokens = np.full(rows, self.bos, np.int64)
        live = np.ones(rows, dtype=bool)
        for _ in range(max_new):
            out = run.step(tokens).argmax(axis=1)
            out[~live] = -1
            yield out
            live &= ~(out[:, None] == self.eos_ids).any(axis=1)
            if not live.any():
                return
            tokens = np.where(live, out, self.eos[0])

    def decode(self, feeds: dict[str, np.ndarray], search: Search) -> list[list[int]]:
        """Generated ids per row of FEEDS (the encoder's sources by name; without the start token and EOS):
        greedy, or beam search (BeamSearch)."""
        self.check(search)
        batch = len(next(iter(feeds.values())))
        if search.beam_size == 1:
            out: list[list[int]] = [[] for _ in range(batch)]
            for tokens in self.greedy_steps(feeds, search.max_new_tokens):
                for row, token in enumerate(tokens.tolist()):
                    if token >= 0 and token not in self.eos:
                        out[row].append(token)
            return out
        beams = search.beam_size
        # Rows: batch x beams beam rows (source b's beams at b*beams ...), then one greedy row per source.
        origin = np.concatenate([np.repeat(np.arange(batch), beams), np.arange(batch)])
        run = self.run(feeds, origin, search.max_new_tokens)
        state = BeamSearch(batch, search, self.eos, self.vocab)
        tokens = np.full(len(origin), self.bos, np.int64)
        for step in range(search.max_new_tokens):
            logits = run.step(tokens)
            src, tokens = state.advance(step, logits)
            if state.finished:
                break
            run.reorder(src)
        return state.best()


class DecoderRun:
    """One call's decoder: its IO binding and every buffer, allocated once (see the module's docstring)."""

    def __init__(self, loop: Seq2Seq, encoded: dict[str, np.ndarray], mask: np.ndarray | None, origin: np.ndarray,
                 max_new: int, sources: int):
        """ORIGIN: the source row of each decoder row (beam search repeats a source once per beam); SOURCES: how
        many rows the encoder ran on; MASK: the sources' attention mask, None where the decoder takes none."""
        self.loop, self.rows = loop, len(origin)
        self.binding = loop.decoder.io_binding()
        identity = np.array_equal(origin, np.arange(sources))

        def rows_of(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a) if identity else np.ascontiguousarray(a[origin])

        self.tokens = np.empty((self.rows, 1), dtype=np.int64)  # written in place each step
        self.kept = [self.tokens]  # bound by pointer: kept alive
        self._bind(True, STEP_IDS, self.tokens)
        if mask is not None:
            self.kept.append(rows_of(np.asarray(mask, dtype=np.int64)))
            self._bind(True, MEMORY_MASK, self.kept[-1])
        for name in loop.memory:
            self.kept.append(rows_of(encoded[name]))
            self._bind(True, name, self.kept[-1])
        self.logits = np.empty((self.rows, loop.vocab), dtype=loop.logits_type)
        self._bind(False, LOGITS, self.logits)
        self.shapes, self.buffers, self.turn = [], [], 0
        for st in loop.states:
            first = rows_of(encoded[st.past]) if st.from_encoder else None
            shape = list(first.shape) if first is not None else [self.rows, *st.dims[1:]]
            if st.grows is not None and first is None:
                shape[st.grows] = 0
            top = list(shape)
            if st.grows is not None:
                top[st.grows] += max_new
            size = int(np.prod(top))
            pair = (np.empty(size, dtype=st.dtype), np.empty(size, dtype=st.dtype))
            if first is not None:
                pair[0][: first.size] = first.astype(st.dtype, copy=False).ravel()
            else:
                pair[0][: int(np.prod(shape))] = 0
            self.shapes.append(shape)
            self.buffers.append(pair)
        # per state, what step() binds: names, dtype, growing axis and both buffers' addresses (read once)
        self.slots = [(st.past, st.present, st.dtype, st.grows, (pair[0].ctypes.data, pair[1].ctypes.data))
                      for st, pair in zip(loop.states, self.buffers)]

    def _bind(self, is_input: bool, name: str, arr: np.ndarray) -> None:
        bind = self.binding.bind_input if is_input else self.binding.bind_output
        bind(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Run one decoder step on TOKENS (rows,); return the logits buffer (rows, vocab), valid until the next step."""
        self.tokens[:, 0] = tokens
        bind_input, bind_output, turn = self.binding.bind_input, self.binding.bind_output, self.turn
        grown = []
        for (past, present, dtype, grows, addresses), shape in zip(self.slots, self.shapes):
            new = shape
            if grows is not None:
                new = list(shape)
                new[grows] += 1
            bind_input(past, "cpu", 0, dtype, shape, addresses[turn])
            bind_output(present, "cpu", 0, dtype, new, addresses[1 - turn])
            grown.append(new)
        self.loop.decoder.run_with_iobinding(self.binding)
        if self.loop.device != "cpu":
            self.binding.synchronize_outputs()
        self.shapes, self.turn = grown, 1 - self.turn
        return self.logits

    def reorder(self, src: np.ndarray) -> None:
        """Make row i of every state the present's row SRC[i]: gathered into the other buffer, which becomes
        the past (no allocation: np.take writes into a view of the preallocated buffer)."""
        for shape, pair in zip(self.shapes, self.buffers):
            size = int(np.prod(shape))
            now, other = pair[self.turn][:size].reshape(shape), pair[1 - self.turn][:size].reshape(shape)
            np.take(now, src, axis=0, out=other, mode="clip")  # mode="raise" would buffer the output
        self.turn = 1 - self.turn
