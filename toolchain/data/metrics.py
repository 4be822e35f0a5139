"""Scores for generated text against references: exact match, character error rate, corpus BLEU-4.

Pure Python, torch-free. Each takes two equally long lists of strings (predictions, references) and
returns a float; mismatched lengths or empty lists raise ToolchainError.

BLEU-4 is corpus BLEU (Papineni et al., 2002) on whitespace tokens: clipped n-gram precisions for
n = 1..4 pooled over the corpus, their geometric mean, times the brevity penalty
exp(1 - r/c) when the predictions' length c is below the references' length r. Smoothing for short
corpora, as sacrebleu's default ('exp', Chen & Cherry 2014 method 3): an order with n-grams but no
match counts as 1 / (2^k * n-grams), k = 1, 2, ... for each such order in turn, so one missing 4-gram
match does not zero the score. Orders for which the predictions have no n-gram at all (every
prediction shorter than n tokens) are left out of the mean (effective order), so one-token outputs
such as "2026-11-25" score on unigrams alone. No tokens at all, or no unigram match, scores 0.
With these rules it equals sacrebleu's corpus_bleu(tokenize="none") wherever every order has n-grams.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from toolchain.runtime.errors import ToolchainError

BLEU_ORDER = 4


def _check(preds: Sequence[str], refs: Sequence[str]) -> None:
    if len(preds) != len(refs):
        raise ToolchainError(f"got {len(preds)} predictions for {len(refs)} references; score equally long lists.")
    if not refs:
        raise ToolchainError("there is nothing to score (no references); pass at least one prediction and reference.")


def exact_match(preds: Sequence[str], refs: Sequence[str]) -> float:
    """The share of predictions equal to their reference (after stripping outer whitespace), 0..1."""
    _check(preds, refs)
    return sum(p.strip() == r.strip() for p, r in zip(preds, refs)) / len(refs)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (insertions, deletions, substitutions; each costs 1)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def char_error_rate(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Total character edit distance / total reference characters (0 is perfect; may exceed 1)."""
    _check(preds, refs)
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ToolchainError("the references have no characters, so a character error rate is undefined; "
                             "score non-empty references.")
    return sum(edit_distance(p, r) for p, r in zip(preds, refs)) / total


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu4(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU-4 on whitespace tokens, 0..1, one reference per prediction (smoothing: module docstring)."""
    _check(preds, refs)
    matches, totals = [0] * BLEU_ORDER, [0] * BLEU_ORDER
    pred_len = ref_len = 0
    for pred, ref in zip(preds, refs):
        p_tokens, r_tokens = pred.split(), ref.split()
        pred_len, ref_len = pred_len + len(p_tokens), ref_len + len(r_tokens)
        for n in range(1, BLEU_ORDER + 1):
            p_grams, r_grams = _ngrams(p_tokens, n), _ngrams(r_tokens, n)
            matches[n - 1] += sum(min(count, r_grams[gram]) for gram, count in p_grams.items())
            totals[n - 1] += sum(p_grams.values())
    if pred_len == 0 or matches[0] == 0:
        return 0.0
    log_precisions, halvings = [], 0
    for match, total in zip(matches, totals):
        if total == 0:
            break  # no n-grams of this order (or higher) in the predictions: effective order
        if match == 0:
            halvings += 1
            match = 1 / 2**halvings
        log_precisions.append(math.log(match / total))
    brevity = 1.0 if pred_len >= ref_len else math.exp(1 - ref_len / pred_len)
    return brevity * math.exp(sum(log_precisions) / len(log_precisions))
