"""Bench for captioners (image-to-text): greedy captions of the same generated images per batch, for each variant
(the runtime's encoder + KV-cached decoder loop) and for PyTorch ``generate()`` (greedy, its own cache), each
engine in its own spawned child, on identical pixel values and the same number of new tokens at most.

Rows are shaped like the image bench's: ``seq`` is the image side in pixels, ``p50_ms`` the time of one call
captioning ``batch`` images (at batch 1: the caption latency), ``items_per_s`` captions/s; ``p50_vs_pytorch`` is
the runtime's time over generate()'s. This module never imports torch itself: only the PyTorch child does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import toolchain.bench.harness as harness
from toolchain.bench.settings import PYTORCH, Settings
from toolchain.bench.vision import make_image_feeds

NEW_TOKENS = 24  # at most; the shapes captions end (EOS) after 3 to 11 words


def onnx_caption_child(job: dict[str, Any]) -> dict[str, Any]:
    """One variant's greedy captions with the torch-free runtime (runs in a spawned child)."""
    from toolchain.runtime import load

    model = load(job["root"], variant=job["variant"], provider=job["provider"], threads=job["threads"],
                 cuda=job.get("cuda"))
    shapes = []
    for (b, s), feeds in job["feeds"]:
        (pixels,) = feeds.values()
        tokens = sum(len(row) for row in model.decode_pixels(pixels, NEW_TOKENS))
        ms = harness.time_runs(lambda: model.decode_pixels(pixels, NEW_TOKENS), job["runs"])
        shapes.append({**harness.shape_stats(b, s, ms), "new_tokens": tokens})
    return {"shapes": shapes, "real": None, "provider_used": model.info()["provider"],
            "peak_rss_mb": harness.peak_rss_mb()}


def torch_caption_child(job: dict[str, Any]) -> dict[str, Any]:
    """PyTorch eager generate() (greedy) on the same pixel values (a spawned child)."""
    import torch
    import transformers

    torch.set_num_threads(job["threads"])
    model = getattr(transformers, job["auto_class"]).from_pretrained(job["source"]).eval()
    eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
              else [model.generation_config.eos_token_id])

    def call(pixels: np.ndarray):
        return model.generate(pixel_values=torch.from_numpy(pixels), do_sample=False, num_beams=1,
                              max_new_tokens=NEW_TOKENS)

    shapes = []
    with torch.inference_mode():
        for (b, s), feeds in job["feeds"]:
            (pixels,) = feeds.values()
            rows = call(pixels)[:, 1:].tolist()
            tokens = sum(next((i for i, t in enumerate(row) if t in eos), len(row)) for row in rows)
            ms = harness.time_runs(lambda: call(pixels), job["runs"])
            shapes.append({**harness.shape_stats(b, s, ms), "new_tokens": tokens})
    return {"shapes": shapes, "real": None, "provider_used": "cpu", "peak_rss_mb": harness.peak_rss_mb()}


def bench_captions(manifest, settings: Settings, vs_pytorch: bool, progress, cuda: dict[str, Any],
                   auto_class: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Rows per engine (every variant, then PyTorch generate()) and the notes (what was skipped, the ratios)."""
    notes: list[str] = []
    feeds = make_image_feeds(manifest, settings.variants[0], settings.batches)
    settings.shapes = [shape for shape, _ in feeds]
    job = {"root": str(settings.root), "provider": settings.provider, "threads": settings.threads,
           "runs": settings.runs, "feeds": feeds, "cuda": cuda}
    rows = harness.child_rows(manifest, settings.variants, onnx_caption_child, job, progress,
                              f"greedy captions at {len(feeds)} batch sizes x {settings.runs} runs")
    if vs_pytorch:
        progress("bench pytorch generate() (fp32, greedy)")
        torch_job = {**job, "threads": settings.torch_threads, "auto_class": auto_class}
        if (row := harness.pytorch_row(manifest, torch_caption_child, torch_job, notes)) is not None:
            rows[PYTORCH] = row
    side = settings.shapes[0][1]
    notes.append(f"caption rows: seq = the image side ({side}x{side} pixel values), p50 = one greedy call captioning "
                 f"`batch` images (up to {NEW_TOKENS} new tokens), items/s = captions/s")
    return rows, notes
