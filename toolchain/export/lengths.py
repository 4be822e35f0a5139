"""The longest input an artifact takes, and why: the manifest records both (``max_length``, ``max_length_source``).

Position tables bound it hard (less RoBERTa's padding offset: families.usable_positions); the tokenizer's
model_max_length and a sentence-transformers max_seq_length bound it where they state one; models with no position
table (ALiBi: BLOOM, MPT) take the context their config states, else the user's --max-length.
"""

from __future__ import annotations

from typing import Any

from toolchain.export.families import family_cap, stated_context, tokenizer_limit, usable_positions
from toolchain.runtime.errors import ExportError

# What each limit is called in the manifest's max_length_source.
POSITIONS = "the position table (max_position_embeddings, less any padding offset)"
TOKENIZER = "the tokenizer's model_max_length"
SENTENCE = "sentence-transformers' max_seq_length"
GIVEN = "--max-length"


def _stated(source: Any, reference: Any) -> list[tuple[int, str, bool]]:
    """Every limit the model, its tokenizer and its sentence-transformers config state: (length, what says so,
    whether the graph computes wrong beyond it). Soft limits (tokenizer, sentence-transformers, the context an
    ALiBi model was trained at) are advice --max-length may override."""
    config = reference.model.config
    table = usable_positions(config, reference.model)
    context = None if table else stated_context(config)
    cap = family_cap(config)
    found = [(source.max_seq_length, SENTENCE, False), (table, POSITIONS, True),
             (tokenizer_limit(reference.tokenizer), TOKENIZER, False),
             (context and context[0], context and context[1], False), (cap and cap[0], cap and cap[1], True)]
    return [(int(n), why, hard) for n, why, hard in found if n]


def max_length(source: Any, reference: Any, given: int | None = None) -> tuple[int, str]:
    """(the longest input, what set it): the smallest stated limit, or GIVEN (--max-length) where the user passed
    one; GIVEN may exceed the soft limits, never what the graph computes right (the position table, a family's
    cap)."""
    stated = _stated(source, reference)
    hard = min(((n, why) for n, why, is_hard in stated if is_hard), default=None)
    if given is not None:
        if hard is not None and given > hard[0]:
            raise ExportError(f"--max-length {given} is longer than {source.name} takes ({hard[0]} tokens: {hard[1]}); "
                              f"pass --max-length {hard[0]} or less.")
        return int(given), GIVEN
    if not stated:
        model_type = getattr(reference.model.config, "model_type", "model")
        raise ExportError(f"{source.name} ({model_type}) has no position table and neither its config nor its "
                          "tokenizer states a maximum input length; pass --max-length N (the longest input in tokens "
                          "it should take, such as its training context).")
    length, why, _ = min(stated)
    return length, why
