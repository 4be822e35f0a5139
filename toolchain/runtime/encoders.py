"""The encoder tasks' runtime classes: Embedder (feature-extraction) and Classifier (text-classification)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import EncoderModel, register_runtime
from .errors import ArtifactError


def _first_real(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each row's first real token (CLS), whichever side the padding is on."""
    return hidden[np.arange(len(hidden)), mask.argmax(axis=1)]


def _last_real(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each row's last real token (decoder embedders: the one that has read the whole text)."""
    return hidden[np.arange(len(hidden)), mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)]


def _mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(hidden.dtype)
    return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


def _max(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None] > 0, hidden, np.finfo(hidden.dtype).min).max(axis=1)


# pooling mode (the manifest's pooling.mode) -> (B, T, H) token states and (B, T) mask to (B, H)
POOLS = {"mean": _mean, "cls": _first_real, "max": _max, "last": _last_real}


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool token states (B, T, H) into sentence vectors (B, H), ignoring padding like sentence-transformers."""
    if mode not in POOLS:
        raise ArtifactError(f"pooling mode {mode!r} in the manifest is not known; use {', '.join(POOLS)}.")
    return POOLS[mode](hidden, mask)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Embedder(EncoderModel):
    """A feature-extraction artifact: ``embed(texts)`` -> (n, d) float32 sentence vectors."""

    def embed(self, texts: Any) -> np.ndarray:
        """Sentence embeddings (n, d), pooled as the manifest says and L2-normalised where it says so."""
        pooling = self.manifest.pooling

        def head(out: np.ndarray, mask: np.ndarray) -> np.ndarray:
            vec = pool(out, mask, pooling.mode)
            if pooling.normalize:
                vec = vec / np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
            return vec

        return self._run(texts, head)


class Classifier(EncoderModel):
    """A text-classification artifact: ``classify(texts)`` -> top label and score; ``scores(texts)`` -> probabilities."""

    def classify(self, texts: Any) -> list[dict[str, Any]]:
        """The top label and its probability per text: ``[{"label": ..., "score": ...}]``."""
        probs = self.scores(texts)
        labels = self.manifest.labels
        if labels is None:
            labels = [f"LABEL_{i}" for i in range(probs.shape[1] if probs.ndim == 2 else 0)]
        return [{"label": labels[int(i)], "score": float(p[int(i)])} for p, i in zip(probs, probs.argmax(axis=1))]

    def scores(self, texts: Any) -> np.ndarray:
        """Class probabilities (n, classes), in the order of the manifest's labels."""
        return self._run(texts, lambda out, mask: softmax(out.astype(np.float64)))


register_runtime("feature-extraction", Embedder)
register_runtime("text-classification", Classifier)
