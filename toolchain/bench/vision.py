"""Bench for image classifiers: images/s per batch on identical pixel values for each variant and for PyTorch
eager (each engine in its own spawned child, as the encoder bench), plus one end-to-end pass per engine: PNG
bytes decoded, preprocessed and classified in batches of 8 (the runtime's Pillow + numpy preprocessing against
transformers' image processor).

Rows are shaped like the encoder bench's: ``seq`` is the image side in pixels, ``items_per_s`` images/s. This
module never imports torch itself: only the PyTorch child does.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

import toolchain.bench.cuda as cuda_bench
import toolchain.bench.harness as harness
from toolchain.bench.settings import PYTORCH, Settings, task_of
from toolchain.runtime.manifest import Manifest
from toolchain.runtime.model import open_variant

END_TO_END = 64  # generated PNGs in the end-to-end pass
END_TO_END_BATCH = 8

Feeds = list[tuple[tuple[int, int], dict[str, np.ndarray]]]


def sample_images(n: int) -> list[Any]:
    """N generated shapes images (PIL, 64x64), the same on every call."""
    from toolchain.data import shapes

    rng = np.random.default_rng(7)
    return [shapes.render(shapes.draw_scene(rng, heldout=False)) for _ in range(n)]


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def make_image_feeds(manifest: Manifest, variant: str, batches: tuple[int, ...]) -> Feeds:
    """The same pixel values for every engine: generated images through the runtime's preprocessing."""
    model = open_variant(manifest, variant, provider="cpu")
    images = sample_images(min(max(batches), 32))
    (name, pixels), = model.encode(images)[0].items()
    side = manifest.preprocess.height
    return [((b, side), {name: np.ascontiguousarray(np.resize(pixels, (b, *pixels.shape[1:])))}) for b in batches]


def _rate(fn, n: int, runs: int) -> float:
    ms = harness.time_runs(fn, max(1, min(3, runs)), warmup=1)
    return n * 1000 / float(np.median(ms))


def onnx_image_child(job: dict[str, Any]) -> dict[str, Any]:
    """One variant with the torch-free runtime (runs in a spawned child)."""
    from toolchain.runtime import load

    model = load(job["root"], variant=job["variant"], provider=job["provider"], batch_size=END_TO_END_BATCH,
                 threads=job["threads"], cuda=job.get("cuda"))
    shapes = [harness.shape_stats(b, s, harness.time_runs(lambda: model.run_feeds(f), job["runs"]))
              for (b, s), f in job["feeds"]]
    pngs = job["pngs"]
    end_to_end = _rate(lambda: model.scores(pngs), len(pngs), job["runs"]) if pngs else None
    return {"shapes": shapes, "real": None, "images_per_s_end_to_end": end_to_end,
            "provider_used": model.info()["provider"], "peak_rss_mb": harness.peak_rss_mb()}


def torch_image_child(job: dict[str, Any]) -> dict[str, Any]:
    """PyTorch eager on the same pixel values, and transformers' image processor end to end (a spawned child)."""
    import torch
    import transformers
    from PIL import Image

    torch.set_num_threads(job["threads"])
    device = cuda_bench.torch_device(torch, job)
    model = getattr(transformers, job["auto_class"]).from_pretrained(job["source"]).eval().to(device)
    processor = transformers.AutoImageProcessor.from_pretrained(job["source"], use_fast=False)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def call(feeds):
        out = model(**{k: torch.as_tensor(v).to(device) for k, v in feeds.items()}).logits
        sync()
        return out

    def end_to_end():
        for i in range(0, len(job["pngs"]), END_TO_END_BATCH):
            images = [Image.open(io.BytesIO(b)).convert("RGB") for b in job["pngs"][i : i + END_TO_END_BATCH]]
            call({"pixel_values": processor(images=images, return_tensors="np")["pixel_values"]}).softmax(-1)

    with torch.inference_mode():
        shapes = [harness.shape_stats(b, s, harness.time_runs(lambda: call(f), job["runs"]))
                  for (b, s), f in job["feeds"]]
        rate = _rate(end_to_end, len(job["pngs"]), job["runs"]) if job["pngs"] else None
    return {"shapes": shapes, "real": None, "images_per_s_end_to_end": rate, "provider_used": device,
            "peak_rss_mb": harness.peak_rss_mb()}


def _rows(manifest: Manifest, settings: Settings, job: dict[str, Any], vs_pytorch: bool, progress,
          notes: list[str]) -> dict[str, dict[str, Any]]:
    rows = harness.child_rows(manifest, settings.variants, onnx_image_child, job, progress,
                              f"{len(job['feeds'])} batch sizes x {settings.runs} runs")
    if vs_pytorch:
        progress("bench pytorch eager (fp32)")
        torch_job = {**job, "threads": settings.torch_threads, "auto_class": task_of(manifest).auto_class}
        if (row := harness.pytorch_row(manifest, torch_image_child, torch_job, notes)) is not None:
            rows[PYTORCH] = row
    return rows


def bench_images(manifest: Manifest, settings: Settings, vs_pytorch: bool, real: bool, progress,
                 cuda: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Rows per engine (every variant, then PyTorch) and the notes (what was skipped, the end-to-end rates)."""
    notes: list[str] = []
    feeds = make_image_feeds(manifest, settings.variants[0], settings.batches)
    settings.shapes = [shape for shape, _ in feeds]
    pngs = [_png(im) for im in sample_images(END_TO_END)] if real else []
    job = {"root": str(settings.root), "provider": settings.provider, "threads": settings.threads,
           "runs": settings.runs, "feeds": feeds, "pngs": pngs, "cuda": cuda}
    rows = _rows(manifest, settings, job, vs_pytorch, progress, notes)
    side = settings.shapes[0][1]
    notes.append(f"image rows: seq = the image side ({side}x{side} pixel values), items/s = images/s")
    if pngs:
        notes.append(f"end to end ({END_TO_END} PNGs decoded, preprocessed and classified in batches of "
                     f"{END_TO_END_BATCH}), images/s: " + ", ".join(
                         f"{n} {r['images_per_s_end_to_end']:.0f}" for n, r in rows.items()))
    return rows, notes
