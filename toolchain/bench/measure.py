"""Quick A/B timing for quantize and optimize, in this process, and the manifest's latency records."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import toolchain.bench.harness as harness
from toolchain.artifact.manifest_writes import update_manifest
from toolchain.bench.decoder import PROMPT
from toolchain.bench.encoder import make_feeds
from toolchain.bench.settings import REFERENCE_SHAPE, task_of
from toolchain.runtime.manifest import Manifest
from toolchain.runtime.model import open_variant


def _decoder_call(manifest: Manifest, batch: int) -> tuple[int, Callable]:
    """Decoders: one greedy generation, timed per generated token, as bench reports them."""
    from toolchain.runtime.generate import Sampling

    seq = min(32, manifest.max_length // 2)

    def call(model):
        stats: dict[str, Any] = {}
        for _ in model.generator.run([PROMPT] * batch, Sampling(max_new_tokens=seq), stats):
            pass
        return stats.get("steps", seq)

    return seq, call


TRANSLATE_SOURCE = "the twenty-fifth of November, 2026"


def _translate_call(manifest: Manifest, batch: int) -> tuple[int, Callable]:
    """Encoder-decoders: one greedy translation of BATCH copies of a source, timed per call."""

    def call(model):
        model.translate([TRANSLATE_SOURCE] * batch)
        return 1

    return len(TRANSLATE_SOURCE.split()), call


def _encoder_call(manifest: Manifest, name: str, batch: int, seq: int) -> tuple[int, Callable]:
    seq = min(seq, manifest.max_length)
    (_, feeds), = make_feeds(manifest, name, [(batch, seq)])

    def call(model):
        model.run_feeds(feeds)
        return 1

    return seq, call


def _image_call(manifest: Manifest, name: str, batch: int) -> tuple[int, Callable]:
    """Image classifiers: one run on BATCH preprocessed images, timed per call."""
    from toolchain.bench.vision import make_image_feeds

    (_, feeds), = make_image_feeds(manifest, name, (batch,))

    def call(model):
        model.run_feeds(feeds)
        return 1

    return manifest.preprocess.height, call


def _caption_call(manifest: Manifest, name: str, batch: int) -> tuple[int, Callable]:
    """Captioners: greedy captions of BATCH preprocessed images (the caption bench's call), timed per call."""
    from toolchain.bench.caption import NEW_TOKENS
    from toolchain.bench.vision import make_image_feeds

    (_, feeds), = make_image_feeds(manifest, name, (batch,))
    (pixels,) = feeds.values()

    def call(model):
        model.decode_pixels(pixels, NEW_TOKENS)
        return 1

    return manifest.preprocess.height, call


# The timed call per runtime method (the encoder tasks' one run on ready feeds by default):
# make(manifest, first variant, batch, seq) -> (the shape's seq, call(model) -> units timed).
CALLS: dict[str, Callable[..., tuple[int, Callable]]] = {
    "generate": lambda manifest, name, batch, seq: _decoder_call(manifest, batch),
    "translate": lambda manifest, name, batch, seq: _translate_call(manifest, batch),
    "classify_image": lambda manifest, name, batch, seq: _image_call(manifest, name, batch),
    "caption": lambda manifest, name, batch, seq: _caption_call(manifest, name, batch),
}


def measure_variants(manifest: Manifest, names: list[str], batch: int = REFERENCE_SHAPE[0],
                     seq: int = REFERENCE_SHAPE[1], runs: int = 30, provider: str = "cpu",
                     threads: int | None = None) -> dict[str, dict[str, Any]]:
    """p50/p95 of several variants in this process, in alternating blocks so machine noise hits all alike
    (whole blocks, not single calls: alternating every call would evict each model's weights from cache)."""
    models = {n: open_variant(manifest, n, provider=provider, threads=threads) for n in names}
    make = CALLS.get(task_of(manifest).method, _encoder_call)
    seq, call = make(manifest, names[0], batch, seq)
    times: dict[str, list[float]] = {n: [] for n in names}
    block = 5
    for _ in range(max(1, -(-runs // block))):
        for name, model in models.items():
            call(model)  # warm-up of this block
            for _ in range(block):
                start = time.perf_counter()
                per = call(model)
                times[name].append((time.perf_counter() - start) * 1000 / per)
    return {n: harness.shape_stats(batch, seq, ms) for n, ms in times.items()}


def record_latency(root: str | Path, timings: dict[str, dict[str, Any]], provider: str = "cpu",
                   threads: int | None = None) -> None:
    """Store each variant's p50/p95 at its measured shape as ``latency[provider]`` in the manifest."""
    measured = harness.now()

    def change(data: dict[str, Any]) -> None:
        for name, t in timings.items():
            if name in data["variants"]:
                data["variants"][name].setdefault("latency", {})[provider] = {
                    "p50_ms": t["p50_ms"], "p95_ms": t["p95_ms"], "batch": t["batch"], "seq": t["seq"],
                    "threads": threads or harness.physical_cores(), "measured": measured}

    update_manifest(root, change)
