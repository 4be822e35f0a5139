"""How each input of a text encoder's graph is filled from the tokenizer's output: one named rule per input,
recorded in the manifest's ``feeds`` section at export (export/families.py chooses them) and applied here. The
runtime never guesses: a graph input the manifest gives no rule for is refused with the fix.

Torch-free: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ArtifactError


@dataclass(frozen=True)
class Tokens:
    """One padded batch as the tokenizer gives it: (B, T) int64 arrays."""

    ids: np.ndarray
    mask: np.ndarray
    type_ids: np.ndarray


def _positions(t: Tokens) -> np.ndarray:
    """Each real token's index among its row's real tokens (0, 1, ...), whichever side the padding is on; padding
    takes 0 before the text and the last index after it (masked out either way, and inside any position table)."""
    return np.clip(np.cumsum(t.mask, axis=1) - 1, 0, None)


def _first_token(t: Tokens) -> np.ndarray:
    """1 at each row's first real token (Longformer's global attention on <s>, as its classifier sets), else 0."""
    out = np.zeros_like(t.mask)
    if t.mask.size:
        out[np.arange(len(t.mask)), t.mask.argmax(axis=1)] = 1
    return out * t.mask


# rule name -> how the input is filled
RULES: dict[str, Callable[[Tokens], np.ndarray]] = {
    "ids": lambda t: t.ids,
    "mask": lambda t: t.mask,
    "type_ids": lambda t: t.type_ids,  # the tokenizer's type ids: zeros for one text, whatever its template
    "zeros": lambda t: np.zeros_like(t.ids),
    "positions": _positions,
    "first_token": _first_token,
}

# What manifests written before the feeds section meant: the three inputs the runtime always filled.
DEFAULT_FEEDS = {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "type_ids"}


def read_feeds(data: Any, where: Path) -> dict[str, str]:
    """The manifest's feeds section (input name -> rule), checked; the defaults where it has none."""
    if data is None:
        return dict(DEFAULT_FEEDS)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ArtifactError(f"{where}: feeds should map input names to rule names, not {str(data)[:60]}; "
                            "re-run 'toolchain export'.")
    unknown = sorted(v for v in data.values() if v not in RULES)
    if unknown:
        raise ArtifactError(f"{where}: feeds name rules {unknown} this runtime does not know ({', '.join(RULES)}); "
                            "upgrade toolchain or re-export the artifact.")
    return dict(data)


def plan(feeds: dict[str, str], input_names: list[str]) -> dict[str, Callable[[Tokens], np.ndarray]]:
    """The fill function of every graph input, or ArtifactError for one the manifest gives no rule for."""
    missing = [n for n in input_names if n not in feeds]
    if missing:
        raise ArtifactError(f"the model takes inputs {missing} that its manifest says nothing about (no feeds rule); "
                            "re-export it with this toolchain.")
    return {name: RULES[feeds[name]] for name in input_names}
