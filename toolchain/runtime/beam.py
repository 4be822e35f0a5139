"""Decoding settings (Search) and beam-search bookkeeping for the encoder-decoder loop of runtime/seq2seq.py:
Hugging Face's scoring and stopping rule, the greedy path kept as a candidate, no ONNX Runtime here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .checks import check_int, finite, show
from .errors import InputError

MAX_BEAMS = 64


@dataclass
class Search:
    """How to decode: greedy (beam_size 1) or beam search; checks itself (the vocabulary bound: Seq2Seq.check)."""

    max_new_tokens: int = 64
    beam_size: int = 1
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        self.max_new_tokens = check_int("max_new_tokens", self.max_new_tokens, 1,
                                        "pass how many tokens to generate at most, such as 64")
        self.beam_size = check_int("beam_size", self.beam_size, 1,
                                   "pass 1 for greedy decoding or a beam width such as 4")
        lp = finite(self.length_penalty)
        if lp is None:
            raise InputError(f"length_penalty must be a finite number: pass 1.0 (the default) or a value such as 0.6, "
                             f"got {show(self.length_penalty)}.")
        self.length_penalty = lp



def log_softmax(logits: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Log-probabilities of LOGITS (rows, vocab) written into OUT (float32, same shape), no (rows, vocab) temporary."""
    top = logits.max(axis=1, keepdims=True).astype(np.float32)
    np.subtract(logits, top, out=out)
    np.exp(out, out=out)
    total = out.sum(axis=1, keepdims=True)
    np.subtract(logits, top + np.log(total), out=out)
    return out


def top_candidates(flat: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The N best entries of each row of FLAT: (indices, values), best first, ties to the lower index (as
    argmax breaks them), also at the cut, where argpartition alone would keep an arbitrary one of equals."""
    kth = np.partition(flat, -n, axis=1)[:, -n]
    idx = np.empty((flat.shape[0], n), dtype=np.int64)
    for r, (row, cut) in enumerate(zip(flat, kth)):
        above = np.flatnonzero(row > cut)  # fewer than n: cut is the n-th largest
        idx[r] = np.concatenate([above, np.flatnonzero(row == cut)[: n - len(above)]])
    vals = np.take_along_axis(flat, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # equals stay in index order, as gathered
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(vals, order, axis=1)


class BeamSearch:
    """Beam search bookkeeping for BATCH sources, with Hugging Face's scoring and stopping rule, plus the greedy
    path of each source run alongside as a candidate.

    Each step every live beam is extended by every token; per source the best 2*beams candidates are read in
    order: one ending in EOS becomes a finished hypothesis (only when it ranks within the top ``beams``),
    the others fill the next beams. A hypothesis scores ``sum of token log-probabilities / length **
    length_penalty`` (length: generated tokens, its EOS included). A source is done when it holds ``beams``
    finished hypotheses and none of its live beams could beat the worst of them at its current length
    (Hugging Face's early_stopping=False heuristic; a source whose other beams never end runs to the limit);
    at max_new_tokens the live beams join the hypotheses.

    Plain beam search can return a sequence that scores worse than greedy decoding (the greedy prefix may fall
    out of the beam). So one extra decoder row per source follows the greedy path, scored the same way, and
    the best of all candidates is returned: the result never scores below greedy decoding on the model's own
    (length-penalised) score. The cost: one decoder row per source more than beam_size, run until both its
    beams and its greedy path are done."""

    def __init__(self, batch: int, search: Search, eos: tuple[int, ...], vocab: int):
        self.batch, self.beams, self.vocab, self.eos = batch, search.beam_size, vocab, eos
        self.penalty, self.max_new = search.length_penalty, search.max_new_tokens
        beams, steps = self.beams, self.max_new
        self.scores = np.full((batch, beams), -np.inf, dtype=np.float32)
        self.scores[:, 0] = 0.0  # the first step extends one beam: the copies would only repeat it
        self.picked = np.zeros((steps, batch, beams), dtype=np.int64)  # token of beam k after step t
        self.parents = np.zeros((steps, batch, beams), dtype=np.int64)  # the beam at step t-1 it extends
        self.hyps: list[list[tuple[float, int, int]]] = [[] for _ in range(batch)]  # (score, eos step, parent)
        self.done = np.zeros(batch, dtype=bool)
        self.greedy = np.zeros((batch, steps), dtype=np.int64)
        self.greedy_sum = np.zeros(batch, dtype=np.float32)
        self.greedy_len = np.zeros(batch, dtype=np.int64)
        self.greedy_live = np.ones(batch, dtype=bool)
        self.work = np.empty((batch * (beams + 1), vocab), dtype=np.float32)
        self.steps = 0

    @property
    def finished(self) -> bool:
        return bool(self.done.all() and not self.greedy_live.any())

    def advance(self, step: int, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Take one step's logits (rows, vocab); return (the source row of each next row, the next tokens)."""
        batch, beams, vocab = self.batch, self.beams, self.vocab
        logp = log_softmax(logits, self.work)
        self._greedy(step, logits[batch * beams:], logp[batch * beams:])
        cand = logp[: batch * beams]
        cand += self.scores.reshape(-1, 1)
        np.fmax(cand, -np.inf, out=cand)  # a NaN (a broken graph's logits) ranks last instead of anywhere
        idx, vals = top_candidates(cand.reshape(batch, beams * vocab), min(2 * beams, beams * vocab))
        for b in range(batch):
            self._row(step, b, idx[b], vals[b])
        self.steps = step + 1
        src = np.concatenate([(np.arange(batch)[:, None] * beams + self.parents[step]).ravel(),
                              np.arange(batch * beams, batch * (beams + 1))])
        greedy_next = np.where(self.greedy_live, self.greedy[:, step], self.eos[0])
        return src, np.concatenate([self.picked[step].ravel(), greedy_next])

    def _greedy(self, step: int, logits: np.ndarray, logp: np.ndarray) -> None:
        tokens = logits.argmax(axis=1)
        for b in np.flatnonzero(self.greedy_live):
            token = int(tokens[b])
            self.greedy[b, step] = token
            self.greedy_sum[b] += logp[b, token]
            self.greedy_len[b] += 1
            self.greedy_live[b] = token not in self.eos

    def _row(self, step: int, b: int, idx: np.ndarray, vals: np.ndarray) -> None:
        """Source B's next beams from its candidates IDX (flat beam*vocab+token) and their scores VALS, best first."""
        picked, parents = self.picked[step, b], self.parents[step, b]
        if self.done[b]:
            picked[:], parents[:] = self.eos[0], np.arange(self.beams)
            return
        chosen = 0
        for rank, (j, score) in enumerate(zip(idx.tolist(), vals.tolist())):
            if score == -math.inf or chosen == self.beams:
                break
            parent, token = divmod(j, self.vocab)
            if token in self.eos:
                if rank < self.beams:
                    self._add(b, score, step + 1, step, parent)
                continue
            picked[chosen], parents[chosen], self.scores[b, chosen] = token, parent, score
            chosen += 1
        picked[chosen:], parents[chosen:], self.scores[b, chosen:] = self.eos[0], 0, -np.inf
        best = self.scores[b, 0]
        hyps = self.hyps[b]
        self.done[b] = chosen == 0 or (len(hyps) == self.beams and
                                       hyps[-1][0] >= float(best) / (step + 1) ** self.penalty)

    def _add(self, b: int, total: float, length: int, step: int, parent: int) -> None:
        """A finished hypothesis of source B: its tokens end at STEP, extending beam PARENT of the step before."""
        hyps = self.hyps[b]
        hyps.append((float(total) / length ** self.penalty, step, parent))
        hyps.sort(key=lambda h: -h[0])
        del hyps[self.beams:]

    def _tokens(self, b: int, last: int, k: int) -> list[int]:
        """The tokens of beam K of source B after step LAST, followed back through its parents."""
        out = []
        for t in range(last, -1, -1):
            out.append(int(self.picked[t, b, k]))
            k = int(self.parents[t, b, k])
        return out[::-1]

    def best(self) -> list[list[int]]:
        """Per source, the ids of the best-scoring candidate (beam hypotheses, live beams at the limit, and the
        greedy path), without EOS."""
        out = []
        for b in range(self.batch):
            cands = [(s, self._tokens(b, t - 1, k)) for s, t, k in self.hyps[b]]
            if not self.done[b]:  # cut at the limit: live beams count as they are
                cands += [(float(s) / self.steps ** self.penalty, self._tokens(b, self.steps - 1, k))
                          for k, s in enumerate(self.scores[b]) if s > -np.inf]
            length = int(self.greedy_len[b])
            greedy = [int(t) for t in self.greedy[b, :length] if int(t) not in self.eos]
            cands.append((float(self.greedy_sum[b]) / length ** self.penalty, greedy))
            out.append(max(cands, key=lambda c: c[0])[1])  # max keeps the first of equals: a beam before greedy
        return out
