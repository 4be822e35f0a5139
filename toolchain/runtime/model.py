"""Loading an artifact and running it: ``load(dir)`` returns a Model with embed/classify/info."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import placement, providers
from .errors import ArtifactError, InputError, ProviderError, ToolchainError
from .manifest import REFERENCE_VARIANT, Manifest, read_manifest, session_error
from .tasks import task_spec
from .checks import _show
from .generate import Generator, Sampling
from .generate import generate as generate_text
from .text import TextEncoder, as_texts, load_tokenizer

DEFAULT_BATCH_SIZE = 32
MIN_GAIN = 1.05  # `auto` prefers fp32 unless another passed variant is at least 5% faster
# Without fp32 and without timings, `auto` avoids precisions that are slow where their kernels are missing.
AVOID_UNBENCHED = {"cuda": ("int8", "int4"), "cpu": ("fp16",)}
PRECISION_RANK = {"fp32": 0, "fp16": 1, "int8": 2, "int4": 3}


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
    """``auto``: fp32, unless a variant that passed its gate was benchmarked on ``provider`` at least MIN_GAIN
    faster than fp32 there (then the fastest such). A latency measured on another provider never counts:
    int8 is fast on CPU and can be slow on CUDA (its quantization ops run on CPU there), fp16 the reverse."""
    if requested != "auto":
        manifest.variant(requested)  # raises with the allowed names
        return requested
    passed = [v for v in manifest.variants.values() if v.passed]
    if not passed:
        raise ArtifactError(f"no variant in {manifest.root} passed its gate; pass variant=NAME to load one anyway.")

    def p50(v) -> float:
        value = (v.latency.get(provider) or {}).get("p50_ms")
        return float(value) if isinstance(value, (int, float)) and value > 0 else math.inf

    reference = manifest.variants.get(REFERENCE_VARIANT)
    if reference is not None and reference.passed:
        ref_ms = p50(reference)  # a lossy variant must be measurably faster to be worth its error
        faster = [v for v in passed if v is not reference and p50(v) * MIN_GAIN <= ref_ms < math.inf]
        return min(faster, key=lambda v: (p50(v), v.name)).name if faster else REFERENCE_VARIANT
    benched = [v for v in passed if p50(v) < math.inf]
    if benched:
        return min(benched, key=lambda v: (p50(v), v.name)).name
    suitable = [v for v in passed if v.precision not in AVOID_UNBENCHED.get(provider, ())]
    if not suitable:
        raise ArtifactError(f"no passed variant in {manifest.root} is known to suit {provider} (none benchmarked there); "
                            f"run 'toolchain bench {manifest.root} --provider {provider}' or pass variant=NAME.")
    return min(suitable, key=lambda v: (PRECISION_RANK.get(v.precision, 9), v.name)).name


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
    """A loaded artifact. Thread-safe: one instance may serve many threads."""

    def __init__(self, manifest: Manifest, variant: str, negotiated: providers.Negotiated, batch_size: int,
                 profiled: bool = False):
        self.manifest = manifest
        self.variant = variant
        self._negotiated = negotiated
        self._session = negotiated.session
        self.batch_size = batch_size
        self.task = task_spec(manifest.task)
        tok = manifest.data.get("tokenizer") or {}
        tok_path = manifest.root / tok.get("file", "tokenizer.json")
        on_cuda = negotiated.provider == "cuda"
        device_id = (negotiated.cuda or providers.CudaOptions()).device_id
        if self.task.method == "generate" and on_cuda and device_id != 0:
            raise ProviderError("text generation on CUDA keeps its cache on device 0; pass device_id=0 and pick the "
                                "GPU with CUDA_VISIBLE_DEVICES=N instead.")
        # encoders on CUDA run through IO binding (decoders always do, in generate.py)
        self._io = ("cuda", device_id) if on_cuda and self.task.method != "generate" else None
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
        self._placement = dict(placement.NOT_CHECKED if on_cuda else placement.NOT_APPLICABLE)
        if profiled:
            self._placement = self._check_placement()

    # -- public API -------------------------------------------------------------------------
    @property
    def generator(self) -> Generator:
        """Decoders: the generation loop over this model's session (``run()``, ``prompt_ids()``,
        ``prompt_logits()``, ``context``, ``eos``, ``pad_id``) for benches and parity checks."""
        self._require("generate")
        return self._generator

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
        s = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                     repetition_penalty=repetition_penalty, stop=stop, seed=seed)
        if not isinstance(stream, (bool, np.bool_)):
            raise InputError(f"stream must be True or False, got {_show(stream)}.")
        with self._lock:
            self._calls += 1
        if stream or not isinstance(prompt, (list, tuple)) or len(prompt) <= self.batch_size:
            return generate_text(self._generator, prompt, bool(stream), s)
        # A long list runs batch_size prompts at a time, so the KV cache stays bounded. The first batch keeps
        # the seed (short lists sample as before); later ones get seeds derived from it, still reproducible.
        prompts, out = as_texts(prompt), []
        for k, start in enumerate(range(0, len(prompts), self.batch_size)):
            seed_k = s.seed
            if k and seed_k is not None:
                seed_k = int(np.random.SeedSequence([seed_k, k]).generate_state(1)[0])
            out += generate_text(self._generator, prompts[start : start + self.batch_size], False,
                                 dataclasses.replace(s, seed=seed_k))
        return out

    def scores(self, texts: Any) -> np.ndarray:
        """Class probabilities (n, classes), in the order of the manifest's labels."""
        self._require("classify")
        return self._run(texts, lambda out, mask: _softmax(out.astype(np.float64)))

    def info(self) -> dict[str, Any]:
        """What is really running: variant, provider in use, file, and why a fallback happened."""
        v = self.manifest.variant(self.variant)
        return {
            "task": self.manifest.task,
            "exporter": self.manifest.data.get("exporter", "optimum"),
            "variant": self.variant,
            "precision": v.precision,
            "file": str(self.manifest.root / v.file),
            "provider": self._negotiated.provider,
            "provider_requested": self._negotiated.requested,
            "providers": list(self._session.get_providers()),
            "fallback_reason": self._negotiated.fallback_reason,
            "cuda_options": self._negotiated.cuda.to_dict() if self._negotiated.provider == "cuda" and self._negotiated.cuda
            else None,
            "io_binding": self.task.method == "generate" or self._io is not None,
            **self._placement,  # cpu_fallback_nodes, heavy_cpu_fallback, placement (see placement.py)
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
            items = as_texts(texts)
            if not items:
                return {"input_ids": np.zeros((0, 0), np.int64), "attention_mask": np.zeros((0, 0), np.int64)}, \
                    np.zeros((0, 0), np.int64)
            ids, mask = self._generator.prompt_ids(items, 0)
            return {"input_ids": ids, "attention_mask": mask}, mask
        return self._encoder.encode(as_texts(texts))

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on ready feeds and return the task's output (no batching, no head;
        decoders: the prompt's logits with an empty cache)."""
        if self.task.method == "generate":
            return self._generator.prompt_logits(feeds["input_ids"], feeds["attention_mask"])
        if self._io is not None:
            return bound_run(self._session, feeds, self.task.output, *self._io)
        return self._session.run([self.task.output], feeds)[0]

    def _check_placement(self) -> dict[str, Any]:
        """A warm-up run with ONNX Runtime's profiler on (on CUDA it also pays the first run's costs at load);
        its profile names the provider of every node (placement.py), and profiling ends with it."""
        error = None
        if self._negotiated.provider == "cuda":
            try:
                feeds, _ = self.encode(["a warm-up run"])
                self.run_feeds(feeds)
            except Exception as exc:  # reported by info(); a real call raises it again, with context
                error = exc
        return placement.from_profile(self._session.end_profiling(), self._negotiated.provider, error)

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
    cuda: providers.CudaOptions | dict | None = None,
) -> Model:
    """Load an artifact directory written by ``toolchain export``.

    variant: "auto" (fastest variant that passed its gate) or a name from the manifest.
    provider: "auto" (CUDA when it really initialises, else CPU), "cpu" or "cuda" (raises without a GPU).
    cuda: CudaOptions (or a dict of its fields: device_id, gpu_mem_limit, cudnn_conv_algo_search, use_tf32,
    check_placement) for ONNX Runtime's CUDA provider.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"path must be the artifact directory as a str or Path, got {_show(path)}.")
    if not isinstance(variant, str):
        raise InputError(f"variant must be a str: 'auto' or a variant name from the manifest, got {_show(variant)}.")
    if provider not in providers.CHOICES:
        raise InputError(f"provider {_show(provider)} is not known; use one of {', '.join(providers.CHOICES)}.")
    try:
        manifest = read_manifest(path)
    except OSError as exc:  # a name too long for the file system, a permission problem, ...
        raise ArtifactError(f"{_show(str(path))} cannot be read ({exc.strerror}); pass the directory that "
                            "'toolchain export' wrote.") from None
    return open_variant(manifest, variant, provider, batch_size, threads, cuda)


def open_variant(
    manifest: Manifest,
    variant: str = "auto",
    provider: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    cuda: providers.CudaOptions | dict | None = None,
) -> Model:
    """Open one variant of an already parsed manifest (``load`` reads the manifest from disk first)."""
    import onnxruntime as ort

    cuda_options = providers.CudaOptions.coerce(cuda)

    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int such as {DEFAULT_BATCH_SIZE}, got {_show(batch_size)}.")
    batch_size = int(batch_size)
    if threads is not None and (not isinstance(threads, numbers.Integral) or isinstance(threads, bool) or threads < 0):
        raise InputError(f"threads must be an int >= 0, or None or 0 for ONNX Runtime's default, got {_show(threads)}.")
    task_spec(manifest.task)
    available = ort.get_available_providers()
    guess = "cuda" if provider == "cuda" or (provider == "auto" and providers.CUDA in available) else "cpu"
    name = choose_variant(manifest, variant, guess)
    model_path = manifest.verify(name)
    manifest.tokenizer_path()  # missing or outside the artifact: say so before building a session

    profiled: list[Any] = []  # sessions built with ONNX Runtime's profiler on: the CUDA attempts (placement.py)

    def make_session(provider_list: list[str]):
        options = ort.SessionOptions()
        options.log_severity_level = 3  # ORT's own fallback noise; we report the provider ourselves
        if threads:
            options.intra_op_num_threads = int(threads)
        on_cuda = providers.CUDA in provider_list
        folder = tempfile.mkdtemp(prefix=placement.PROFILE_DIR_PREFIX) if on_cuda and cuda_options.check_placement else None
        if folder:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(folder) / "profile")
        try:
            session = ort.InferenceSession(str(model_path), sess_options=options,
                                           providers=providers.session_providers(provider_list, cuda_options))
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            placement.discard(folder and str(Path(folder) / "profile"))
            if on_cuda:  # a broken graph fails on CPU too, and says so; else it was CUDA that failed to start
                make_session([providers.CPU])
                raise providers.CudaStartError(placement.first_line(exc)) from None
            raise session_error(model_path, exc) from None
        if folder:
            profiled.append(session)
        return session

    if provider in ("auto", "cuda") and providers.CUDA in available:
        # a failed CUDA start logs errors; we report the fallback (auto) or raise one sentence (cuda) ourselves
        ort.set_default_logger_severity(4)
    try:
        negotiated = providers.negotiate(provider, make_session, available, cuda_options)
        if variant == "auto" and negotiated.provider != guess:
            better = choose_variant(manifest, "auto", negotiated.provider)
            if better != name:
                model_path = manifest.verify(better)
                name = better
                reason = negotiated.fallback_reason
                negotiated = providers.Negotiated(make_session([providers.CPU]), "cpu", provider, reason)
        for s in profiled:  # CUDA attempts that were not kept: stop their profilers, remove their files
            if s is not negotiated.session:
                placement.discard(s.end_profiling())
        return Model(manifest, name, negotiated, batch_size, profiled=any(s is negotiated.session for s in profiled))
    except BaseException:
        for s in profiled:  # a second end_profiling() returns "": nothing is removed twice
            placement.discard(s.end_profiling())
        raise
    finally:
        ort.set_default_logger_severity(2)
