"""Loading an artifact and running it: ``load(dir)`` returns the runtime class of its task (Embedder,
Classifier, TextGenerator, Translator; all are ``Model``s), chosen from the registry in base.py.

A class that runs several graphs (Translator: encoder + decoder) names them in ``components``: providers are
negotiated on its ``main_component``, and the other components open with the provider and options that won."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from . import placement, providers
from .base import DEFAULT_BATCH_SIZE, RUNTIMES, EncoderModel, Model, bound_run, register_runtime, runtime_class
from .checks import first_line, is_int, show
from .encoders import Classifier, Embedder
from .errors import ArtifactError, InputError
from .manifest import REFERENCE_VARIANT, Manifest, read_manifest, session_error
from .textgen import TextGenerator
from .translate import Translator
from .variants import MODEL

__all__ = ["DEFAULT_BATCH_SIZE", "MIN_GAIN", "RUNTIMES", "Classifier", "Embedder", "EncoderModel", "Model",
           "SessionMaker", "TextGenerator", "Translator", "bound_run", "choose_variant", "load", "open_variant",
           "register_runtime"]

MIN_GAIN = 1.05  # `auto` prefers fp32 unless another passed variant is at least 5% faster
# Without fp32 and without timings, `auto` avoids precisions that are slow where their kernels are missing.
AVOID_UNBENCHED = {"cuda": ("int8", "int4"), "cpu": ("fp16",)}
PRECISION_RANK = {"fp32": 0, "fp16": 1, "int8": 2, "int4": 3}


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
        raise InputError(f"path must be the artifact directory as a str or Path, got {show(path)}.")
    if not isinstance(variant, str):
        raise InputError(f"variant must be a str: 'auto' or a variant name from the manifest, got {show(variant)}.")
    if provider not in providers.CHOICES:
        raise InputError(f"provider {show(provider)} is not known; use one of {', '.join(providers.CHOICES)}.")
    try:
        manifest = read_manifest(path)
    except OSError as exc:  # a name too long for the file system, a permission problem, ...
        raise ArtifactError(f"{show(str(path))} cannot be read ({exc.strerror}); pass the directory that "
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

    if not is_int(batch_size) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int such as {DEFAULT_BATCH_SIZE}, got {show(batch_size)}.")
    batch_size = int(batch_size)
    if threads is not None and (not is_int(threads) or threads < 0):
        raise InputError(f"threads must be an int >= 0, or None or 0 for ONNX Runtime's default, got {show(threads)}.")
    cls = runtime_class(manifest.task)
    available = ort.get_available_providers()
    guess = "cuda" if provider == "cuda" or (provider == "auto" and providers.CUDA in available) else "cpu"
    name = choose_variant(manifest, variant, guess)
    paths = component_paths(manifest, name, cls)
    manifest.tokenizer_path()  # missing or outside the artifact: say so before building a session

    sessions = SessionMaker(ort, paths[cls.main_component], threads, cuda_options)
    profiled = sessions.profiled

    if provider in ("auto", "cuda") and providers.CUDA in available:
        # a failed CUDA start logs errors; we report the fallback (auto) or raise one sentence (cuda) ourselves
        ort.set_default_logger_severity(4)
    try:
        negotiated = providers.negotiate(provider, sessions.make, available, cuda_options)
        if variant == "auto" and negotiated.provider != guess:
            better = choose_variant(manifest, "auto", negotiated.provider)
            if better != name:
                paths = component_paths(manifest, better, cls)
                sessions.path = paths[cls.main_component]
                name = better
                reason = negotiated.fallback_reason
                negotiated = providers.Negotiated(sessions.make([providers.CPU]), "cpu", provider, reason)
        for s in profiled:  # CUDA attempts that were not kept: stop their profilers, remove their files
            if s is not negotiated.session:
                placement.discard(s.end_profiling())
        profiled_kept = any(s is negotiated.session for s in profiled)
        if tuple(cls.components) == (MODEL,):
            return cls(manifest, name, negotiated, batch_size, profiled=profiled_kept)
        others = open_components(ort, paths, cls, negotiated, threads, cuda_options)
        return cls(manifest, name, negotiated, batch_size, profiled=profiled_kept, sessions=others)
    except BaseException:
        for s in profiled:  # a second end_profiling() returns "": nothing is removed twice
            placement.discard(s.end_profiling())
        raise
    finally:
        ort.set_default_logger_severity(2)


def component_paths(manifest: Manifest, name: str, cls: type[Model]) -> dict[str, Path]:
    """The verified graph of each component CLS runs in variant NAME (sha256 checked); a single-graph class
    gets {"model": path} exactly as before, a multi-graph one an ArtifactError naming a missing component."""
    if tuple(cls.components) == (MODEL,):
        return {MODEL: manifest.verify(name)}
    paths = manifest.verify_components(name)
    missing = [c for c in cls.components if c not in paths]
    if missing:
        raise ArtifactError(f"variant {name!r} in {manifest.root} has components {', '.join(sorted(paths))}, but a "
                            f"{manifest.task} artifact needs {', '.join(cls.components)}; re-export the artifact.")
    return paths


def open_components(ort: Any, paths: dict[str, Path], cls: type[Model], negotiated: providers.Negotiated,
                    threads: int | None, cuda_options: providers.CudaOptions) -> dict[str, Any]:
    """Sessions of CLS's components other than its main one, on the provider negotiated for the main one
    (the same CUDA options; no placement profiling, which the main component's warm-up run does)."""
    provider_list = [providers.CUDA, providers.CPU] if negotiated.provider == "cuda" else [providers.CPU]
    options = dataclasses.replace(cuda_options, check_placement=False)
    return {c: SessionMaker(ort, paths[c], threads, options).make(provider_list)
            for c in cls.components if c != cls.main_component}


class SessionMaker:
    """Builds ONNX Runtime sessions of one model file for provider negotiation. CUDA attempts are built with
    the profiler on (placement.py) and kept in ``profiled``, so the caller can end the ones not used."""

    def __init__(self, ort: Any, path: Path, threads: int | None, cuda_options: providers.CudaOptions):
        self.ort, self.path, self.threads, self.cuda_options = ort, path, threads, cuda_options
        self.profiled: list[Any] = []

    def make(self, provider_list: list[str]):
        ort = self.ort
        options = ort.SessionOptions()
        options.log_severity_level = 3  # ORT's own fallback noise; we report the provider ourselves
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        on_cuda = providers.CUDA in provider_list
        check = on_cuda and self.cuda_options.check_placement
        folder = tempfile.mkdtemp(prefix=placement.PROFILE_DIR_PREFIX) if check else None
        if folder:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(folder) / "profile")
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options,
                                           providers=providers.session_providers(provider_list, self.cuda_options))
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            placement.discard(folder and str(Path(folder) / "profile"))
            if on_cuda:  # a broken graph fails on CPU too, and says so; else it was CUDA that failed to start
                self.make([providers.CPU])
                raise providers.CudaStartError(first_line(exc)) from None
            raise session_error(self.path, exc) from None
        if folder:
            self.profiled.append(session)
        return session
