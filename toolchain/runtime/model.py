"""Loading an artifact and running it: ``load(dir)`` returns a Model with embed/classify/info."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import providers
from .errors import ArtifactError, InputError, ToolchainError
from .manifest import REFERENCE_VARIANT, Manifest, read_manifest
from .tasks import task_spec
from .generate import Generator
from .generate import generate as generate_text
from .text import TextEncoder, as_texts, load_tokenizer

DEFAULT_BATCH_SIZE = 32
MIN_GAIN = 1.05  # `auto` prefers fp32 unless another passed variant is at least 5% faster


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool token states (B, T, H) into sentence vectors (B, H), ignoring padding like sentence-transformers."""
    m = mask[..., None].astype(hidden.dtype)
    if mode == "mean":
        return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return np.where(m > 0, hidden, np.finfo(hidden.dtype).min).max(axis=1)
    raise ArtifactError(f"pooling mode {mode!r} in the manifest is not known; use mean, cls or max.")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def choose_variant(manifest: Manifest, requested: str, provider: str) -> str:
    """``auto``: the fastest variant on ``provider`` that passed its gate (fp32 when none was benched)."""
    if requested != "auto":
        manifest.variant(requested)  # raises with the allowed names
        return requested
    passed = [v for v in manifest.variants.values() if v.passed]
    if not passed:
        raise ArtifactError(f"no variant in {manifest.root} passed its gate; pass variant=NAME to load one anyway.")

    def p50(v) -> float:
        value = (v.latency.get(provider) or {}).get("p50_ms")
        return float(value) if isinstance(value, (int, float)) else math.inf

    best = min(passed, key=lambda v: (p50(v), v.name != REFERENCE_VARIANT, v.name))
    reference = manifest.variants.get(REFERENCE_VARIANT)
    if reference is not None and reference.passed and p50(best) * MIN_GAIN > p50(reference):
        return REFERENCE_VARIANT  # a lossy variant must be measurably faster to be worth its error
    return best.name


class Model:
    """A loaded artifact. Thread-safe: one instance may serve many threads."""

    def __init__(self, manifest: Manifest, variant: str, negotiated: providers.Negotiated, batch_size: int):
        self.manifest = manifest
        self.variant = variant
        self._negotiated = negotiated
        self._session = negotiated.session
        self.batch_size = batch_size
        self.task = task_spec(manifest.task)
        tok = manifest.data.get("tokenizer") or {}
        tok_path = manifest.root / tok.get("file", "tokenizer.json")
        if self.task.method == "generate":
            self._generator = Generator(self._session, load_tokenizer(tok_path), manifest.data,
                                        "cuda" if negotiated.provider == "cuda" else "cpu")
        else:
            self._encoder = TextEncoder(
                tok_path,
                max_length=manifest.max_length,
                pad_id=int(tok.get("pad_id", 0)),
                pad_token=str(tok.get("pad_token", "[PAD]")),
                input_names=[i.name for i in self._session.get_inputs()],
            )
        self._calls = 0
        self._lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------
    def embed(self, texts: Any) -> np.ndarray:
        """Sentence embeddings (n, d), pooled as the manifest says and L2-normalised where it says so."""
        self._require("embed")
        pooling = self.manifest.data.get("pooling") or {"mode": "mean", "normalize": True}

        def head(out: np.ndarray, mask: np.ndarray) -> np.ndarray:
            vec = _pool(out, mask, pooling.get("mode", "mean"))
            if pooling.get("normalize", True):
                vec = vec / np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
            return vec

        return self._run(texts, head)

    def classify(self, texts: Any) -> list[dict[str, Any]]:
        """The top label and its probability per text: ``[{"label": ..., "score": ...}]``."""
        probs = self.scores(texts)
        labels = self.manifest.labels
        if labels is None:
            labels = [f"LABEL_{i}" for i in range(probs.shape[1] if probs.ndim == 2 else 0)]
        return [{"label": labels[int(i)], "score": float(p[int(i)])} for p, i in zip(probs, probs.argmax(axis=1))]

    def generate(self, prompt: Any, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, stop: Any = (), seed: int | None = None,
                 stream: bool = False):
        """Continue PROMPT (a str -> str, or a list of str -> list of str, batched). temperature=0 is greedy.

        stream=True (one prompt) returns an iterator of text pieces whose concatenation is the text.
        Stops at EOS, at any of ``stop`` (not included), or after max_new_tokens.
        """
        self._require("generate")
        with self._lock:
            self._calls += 1
        return generate_text(self._generator, prompt, stream, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, stop=stop, seed=seed)

    def scores(self, texts: Any) -> np.ndarray:
        """Class probabilities (n, classes), in the order of the manifest's labels."""
        self._require("classify")
        return self._run(texts, lambda out, mask: _softmax(out.astype(np.float64)))

    def info(self) -> dict[str, Any]:
        """What is really running: variant, provider in use, file, and why a fallback happened."""
        v = self.manifest.variant(self.variant)
        return {
            "task": self.manifest.task,
            "variant": self.variant,
            "precision": v.precision,
            "file": str(self.manifest.root / v.file),
            "provider": self._negotiated.provider,
            "provider_requested": self._negotiated.requested,
            "providers": list(self._session.get_providers()),
            "fallback_reason": self._negotiated.fallback_reason,
            "max_length": self.manifest.max_length,
            "labels": self.manifest.labels,
            "calls": self._calls,
        }

    # -- internals ----------------------------------------------------------------------------
    def _require(self, method: str) -> None:
        if self.task.method != method:
            raise ToolchainError(
                f"{method}() is not available for a {self.task.name} artifact; use {self.task.method}() instead."
            )

    def encode(self, texts: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Tokenize into the graph's feeds, padded to the longest item, and the attention mask
        (decoders: left-padded prompt ids, cut to the context)."""
        if self.task.method == "generate":
            ids, mask = self._generator._prompt_ids(as_texts(texts), 0)
            return {"input_ids": ids, "attention_mask": mask}, mask
        return self._encoder.encode(as_texts(texts))

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on ready feeds and return the task's output (no batching, no head;
        decoders: the prompt's logits with an empty cache)."""
        if self.task.method == "generate":
            return self._generator.prompt_logits(feeds["input_ids"], feeds["attention_mask"])
        return self._session.run([self.task.output], feeds)[0]

    def _run(self, texts: Any, head: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        items = as_texts(texts)
        with self._lock:
            self._calls += 1
        if not items:
            return self._empty()
        # Sort by length so each batch pads little, run in bounded batches, restore the order.
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        results: list[np.ndarray | None] = [None] * len(items)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            feeds, mask = self._encoder.encode([items[i] for i in idx])
            out = self.run_feeds(feeds)
            for i, row in zip(idx, head(out, mask)):
                results[i] = row
        return np.stack(results).astype(np.float32)

    def _empty(self) -> np.ndarray:
        dims = next((o["dims"] for o in self.manifest.data["outputs"] if o["name"] == self.task.output), None)
        width = dims[-1] if dims and isinstance(dims[-1], int) else 0
        return np.zeros((0, width), dtype=np.float32)


def load(
    path: str | Path,
    variant: str = "auto",
    provider: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
) -> Model:
    """Load an artifact directory written by ``toolchain export``.

    variant: "auto" (fastest variant that passed its gate) or a name from the manifest.
    provider: "auto" (CUDA when it really initialises, else CPU), "cpu" or "cuda" (raises without a GPU).
    """
    if provider not in providers.CHOICES:
        raise InputError(f"provider {provider!r} is not known; use one of {', '.join(providers.CHOICES)}.")
    return open_variant(read_manifest(path), variant, provider, batch_size, threads)


def open_variant(
    manifest: Manifest,
    variant: str = "auto",
    provider: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
) -> Model:
    """Open one variant of an already parsed manifest (``load`` reads the manifest from disk first)."""
    import onnxruntime as ort

    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}.")
    task_spec(manifest.task)
    available = ort.get_available_providers()
    guess = "cuda" if provider == "cuda" or (provider == "auto" and providers.CUDA in available) else "cpu"
    name = choose_variant(manifest, variant, guess)
    model_path = manifest.verify(name)

    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's own fallback noise; we report the provider ourselves
    if threads:
        options.intra_op_num_threads = int(threads)

    def make_session(provider_list: list[str]):
        try:
            return ort.InferenceSession(str(model_path), sess_options=options, providers=provider_list)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise ArtifactError(f"ONNX Runtime cannot load {model_path} ({exc}); re-export the artifact.") from None

    if provider == "auto" and providers.CUDA in available:
        ort.set_default_logger_severity(4)  # a failed CUDA start logs errors; we report the fallback once ourselves
    try:
        negotiated = providers.negotiate(provider, make_session, available)
    finally:
        ort.set_default_logger_severity(2)
    if variant == "auto" and negotiated.provider != guess:
        better = choose_variant(manifest, "auto", negotiated.provider)
        if better != name:
            model_path = manifest.verify(better)
            name = better
            reason = negotiated.fallback_reason
            negotiated = providers.Negotiated(make_session([providers.CPU]), "cpu", provider, reason)
    return Model(manifest, name, negotiated, batch_size)
