"""What one bench run measures (Settings), checked once before anything is measured or written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.bench.harness import physical_cores
from toolchain.runtime.checks import is_int
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.manifest import Manifest

PROVIDERS = ("cpu", "cuda")
REAL_TEXTS = 256
REAL_BATCH = 32
REFERENCE_SHAPE = (1, 128)
PYTORCH = "pytorch"


@dataclass
class Settings:
    root: Path
    variants: list[str]
    batches: tuple[int, ...]
    seqs: tuple[int, ...]
    provider: str
    runs: int
    threads: int | None  # None: ONNX Runtime's default; PyTorch gets the same count
    torch_threads: int
    shapes: list[tuple[int, int]] = field(default_factory=list)


def task_of(manifest: Manifest):
    """The task's spec (runtime method, PyTorch auto class) for the artifact."""
    from toolchain.runtime.tasks import task_spec

    return task_spec(manifest.task)


def positive_ints(name: str, values: Any, example: str) -> tuple[int, ...]:
    """VALUES (one int or a list) as a tuple of distinct positive ints, or one sentence naming NAME."""
    if isinstance(values, int):
        values = (values,)
    ok = isinstance(values, (list, tuple)) and values and all(
        is_int(v) and v > 0 for v in values)
    if not ok:
        raise ToolchainError(f"{name} must be a non-empty list of positive integers (for example {example}), got {values!r}.")
    return tuple(dict.fromkeys(values))


def _check_counts(runs: Any, threads: Any) -> None:
    if not is_int(runs) or runs < 1:
        raise ToolchainError(f"runs must be a positive integer, got {runs!r}.")
    if threads is not None and (not is_int(threads) or threads < 1):
        raise ToolchainError(f"threads must be a positive integer or None (ONNX Runtime's default), got {threads!r}.")


def _variant_names(manifest: Manifest, variants: Any) -> list[str]:
    names = list(manifest.variants) if variants is None else [variants] if isinstance(variants, str) else list(variants)
    unknown = [n for n in names if n not in manifest.variants]
    if unknown or not names:
        raise ToolchainError(f"variant {unknown[0] if unknown else '(none)'!r} is not in {manifest.root}; "
                             f"choose from {', '.join(manifest.variants)}.")
    return list(dict.fromkeys(names))


def check_settings(manifest: Manifest, variants, batches, seqs, provider, runs, threads) -> Settings:
    """The bench's arguments checked against the artifact; every problem is one ToolchainError sentence."""
    if provider not in PROVIDERS:
        raise ToolchainError(f"provider {provider!r} is not known for bench; use one of {', '.join(PROVIDERS)}.")
    batches = positive_ints("batches", batches, "1,8,32")
    seqs = positive_ints("seqs", seqs, "16,128")
    too_long = [s for s in seqs if s > manifest.max_length]
    if too_long:
        raise ToolchainError(f"sequence length {too_long[0]} exceeds the model's max_length; "
                             f"use lengths from 1 to {manifest.max_length}.")
    _check_counts(runs, threads)
    names = _variant_names(manifest, variants)
    return Settings(manifest.root, names, batches, seqs, provider, runs, threads,
                    threads or physical_cores(), [(b, s) for b in batches for s in seqs])
