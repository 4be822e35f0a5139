"""The shared base of the runtime classes: one session, the provider it negotiated, IO binding, info(),
and the registry that maps each task to its class (``RUNTIMES``, ``register_runtime``).

A task's class (Embedder, Classifier, TextGenerator) implements its own method; the others, inherited
from here, refuse with one sentence that names the method to use.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from . import placement, providers
from .errors import InputError, ToolchainError
from .images import looks_like_image
from .manifest import Manifest
from .tasks import task_spec
from .text import TextEncoder, as_texts
from .variants import MODEL

DEFAULT_BATCH_SIZE = 32

RUNTIMES: dict[str, type["Model"]] = {}


def register_runtime(task: str, cls: type["Model"]) -> type["Model"]:
    """Make CLS the class ``load()`` returns for artifacts of TASK."""
    RUNTIMES[task] = cls
    return cls


def runtime_class(task: str) -> type["Model"]:
    """The registered class for TASK (a ToolchainError naming the supported tasks when there is none)."""
    spec = task_spec(task)
    if spec.name not in RUNTIMES:
        raise ToolchainError(f"task {task!r} has no runtime class; use one of {', '.join(sorted(RUNTIMES))}.")
    return RUNTIMES[spec.name]


def bound_run(session: Any, feeds: dict[str, np.ndarray], output: str, device: str, device_id: int = 0) -> np.ndarray:
    """One run with IO binding: each input copied to DEVICE once, OUTPUT allocated there by ONNX Runtime and
    copied back once (no per-run host staging of outputs). A fresh binding per call keeps it thread-safe.

    CUDA graphs are not used: they need fixed shapes and pre-bound device buffers, and the runtime pads each
    batch to its longest item, so shapes change from call to call."""
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    binding.bind_output(output, device, device_id)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]


class Model:
    """A loaded artifact: the base of the per-task classes. Thread-safe: one instance may serve many threads.

    Every class has ``encode()`` (text to the graph's feeds), ``run_feeds()`` (one run, the task's output)
    and ``info()``; each task adds its own method (embed, classify/scores, generate, translate).

    ``components`` names the graphs of a variant the class runs; providers are negotiated on
    ``main_component`` (whose session is ``negotiated.session``), and ``sessions`` holds the others, opened
    by load() with the provider and options negotiated. Single-graph classes keep the defaults."""

    components: tuple[str, ...] = (MODEL,)
    main_component: str = MODEL

    def __init__(self, manifest: Manifest, variant: str, negotiated: providers.Negotiated, batch_size: int,
                 profiled: bool = False, sessions: dict[str, Any] | None = None):
        self.manifest = manifest
        self.variant = variant
        self._negotiated = negotiated
        self._session = negotiated.session
        self._sessions = {**(sessions or {}), self.main_component: negotiated.session}
        self.batch_size = batch_size
        self.task = task_spec(manifest.task)
        on_cuda = negotiated.provider == "cuda"
        self._device_id = (negotiated.cuda or providers.CudaOptions()).device_id
        self._io = ("cuda", self._device_id) if on_cuda else None  # encoders on CUDA run through IO binding
        self._prepare()
        self._calls = 0
        self._lock = threading.Lock()
        self._placement = dict(placement.NOT_CHECKED if on_cuda else placement.NOT_APPLICABLE)
        if profiled:
            self._placement = self._check_placement()

    def _prepare(self) -> None:
        """Per-task set-up after the session is known (tokenizer, generation loop)."""

    # -- the methods of other tasks refuse with one sentence --------------------------------------------
    def _refuse(self, method: str) -> ToolchainError:
        article = "an" if self.task.name[0] in "aeiou" else "a"
        return ToolchainError(f"{method}() is not available for {article} {self.task.name} artifact; "
                              f"use {self.task.method}() instead.")

    def embed(self, texts: Any) -> np.ndarray:
        """Sentence embeddings (feature-extraction artifacts: see Embedder)."""
        raise self._refuse("embed")

    def classify(self, texts: Any) -> list[dict[str, Any]]:
        """Top label per text (text-classification artifacts: see Classifier)."""
        raise self._refuse("classify")

    def scores(self, texts: Any) -> np.ndarray:
        """Class probabilities (text-classification artifacts: see Classifier)."""
        raise self._refuse("classify")

    def classify_image(self, images: Any) -> list[dict[str, Any]]:
        """Top label per image (image-classification artifacts: see ImageClassifier)."""
        raise self._refuse("classify_image")

    def caption(self, images: Any, *args: Any, **kwargs: Any):
        """Caption images (image-to-text artifacts: see Captioner)."""
        raise self._refuse("caption")

    def generate(self, prompt: Any, *args: Any, **kwargs: Any):
        """Continue a prompt (text-generation artifacts: see TextGenerator)."""
        raise self._refuse("generate")

    def translate(self, texts: Any, *args: Any, **kwargs: Any):
        """Translate texts (text2text-generation artifacts: see Translator)."""
        raise self._refuse("translate")

    @property
    def generator(self):
        """Decoders' generation loop (text-generation artifacts: see TextGenerator)."""
        raise self._refuse("generate")

    # -- shared ---------------------------------------------------------------------------------------
    @property
    def io_binding(self) -> bool:
        """Whether runs go through IO binding (encoders on CUDA; decoders always)."""
        return self._io is not None

    def info(self) -> dict[str, Any]:
        """What is really running: variant, provider in use, file, and why a fallback happened."""
        v = self.manifest.variant(self.variant)
        negotiated = self._negotiated
        return {
            "task": self.manifest.task,
            "exporter": self.manifest.exporter,
            "variant": self.variant,
            "precision": v.precision,
            # measured by quantize (a padded mixed batch against each text alone); None where never measured
            "batch_invariant": (v.metrics.get("batch_invariance") or {}).get("invariant"),
            "file": str(self.manifest.root / v.components[self.main_component].file),
            "provider": negotiated.provider,
            "provider_requested": negotiated.requested,
            "providers": list(self._session.get_providers()),
            "fallback_reason": negotiated.fallback_reason,
            "cuda_options": negotiated.cuda.to_dict() if negotiated.provider == "cuda" and negotiated.cuda else None,
            "io_binding": self.io_binding,
            **self._placement,  # cpu_fallback_nodes, heavy_cpu_fallback, placement (see placement.py)
            "max_length": self.manifest.max_length,
            "labels": self.manifest.labels,
            "calls": self._calls,
        }

    def encode(self, texts: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Tokenize into the graph's feeds, padded to the longest item, and the attention mask."""
        raise NotImplementedError

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on ready feeds and return the task's output (no batching, no head)."""
        if self._io is not None:
            return bound_run(self._session, feeds, self.task.output, *self._io)
        return self._session.run([self.task.output], feeds)[0]

    def warmup_input(self) -> Any:
        """What the warm-up run at load encodes (a text; image classes give an image)."""
        return ["a warm-up run"]

    def _count_call(self) -> None:
        with self._lock:
            self._calls += 1

    def _check_placement(self) -> dict[str, Any]:
        """A warm-up run with ONNX Runtime's profiler on (on CUDA it also pays the first run's costs at load);
        its profile names the provider of every node (placement.py), and profiling ends with it."""
        error = None
        if self._negotiated.provider == "cuda":
            try:
                feeds, _ = self.encode(self.warmup_input())
                self.run_feeds(feeds)
            except Exception as exc:  # reported by info(); a real call raises it again, with context
                error = exc
        return placement.from_profile(self._session.end_profiling(), self._negotiated.provider, error)


class EncoderModel(Model):
    """The base of encoder tasks: padded batches through one graph run each, then the task's head."""

    def _prepare(self) -> None:
        tok = self.manifest.tokenizer
        self._encoder = TextEncoder(
            self.manifest.root / tok.file,
            max_length=self.manifest.max_length,
            pad_id=tok.pad_id,
            pad_token=tok.pad_token,
            input_names=[i.name for i in self._session.get_inputs()],
            feeds=self.manifest.feeds,
            padding_side=tok.padding_side,
            pad_to_multiple_of=tok.pad_to_multiple_of,
        )

    def encode(self, texts: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Tokenize into the graph's feeds, padded to the longest item, and the attention mask."""
        return self._encoder.encode(self._texts(texts))

    def _texts(self, texts: Any) -> list[str]:
        """TEXTS checked (as_texts), with one sentence for images given to a text model."""
        items = texts if isinstance(texts, (list, tuple)) else [texts]
        if any(looks_like_image(item) for item in items):
            raise InputError(f"this {self.task.name} artifact reads text, not images; pass str, or load an "
                             "image-classification artifact to classify images.")
        return as_texts(texts)

    def _run(self, texts: Any, head: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        items = self._texts(texts)
        self._count_call()
        if not items:
            return self._empty()
        # Sort by length so each batch pads little, run in bounded batches, restore the order; a model that reads
        # its padding (the manifest's tokenizer.pad_batches is false) runs each text alone.
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        results: list[np.ndarray | None] = [None] * len(items)
        step = self.batch_size if self.manifest.tokenizer.pad_batches else 1
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            feeds, mask = self._encoder.encode([items[i] for i in idx])
            out = self.run_feeds(feeds)
            for i, row in zip(idx, head(out, mask)):
                results[i] = row
        return np.stack(results).astype(np.float32)

    def _empty(self) -> np.ndarray:
        dims = next((o.dims for o in self.manifest.outputs if o.name == self.task.output), None)
        width = dims[-1] if dims and isinstance(dims[-1], int) else 0
        return np.zeros((0, width), dtype=np.float32)
