"""Bench for encoders (embeddings, classifiers): latency per batch x seq on identical ids, and sentences/s
over real text, for each variant and for PyTorch eager, each engine in its own spawned child.

This module never imports torch itself: only the PyTorch child does.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

import toolchain.bench.cuda as cuda_bench
import toolchain.bench.harness as harness
from toolchain.bench.settings import PYTORCH, REAL_BATCH, REAL_TEXTS, Settings, task_of
from toolchain.data.texts import read_texts
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.manifest import Manifest
from toolchain.runtime.model import open_variant

Feeds = list[tuple[tuple[int, int], dict[str, np.ndarray]]]


# -- the children (each runs in a spawned process) -------------------------------------------------
def real_rate(fn: Callable[[], Any], n: int, runs: int) -> dict[str, Any]:
    """Sentences/s of one full pass over the texts (median of up to 3 passes after one warm-up pass)."""
    ms = harness.time_runs(fn, max(1, min(3, runs)), warmup=1)
    return {"texts": n, "batch": REAL_BATCH, "sentences_per_s": n * 1000 / float(np.median(ms))}


def onnx_encoder_child(job: dict[str, Any]) -> dict[str, Any]:
    """Bench one variant with the torch-free runtime (runs in a spawned child)."""
    from toolchain.runtime import load

    model = load(job["root"], variant=job["variant"], provider=job["provider"], batch_size=REAL_BATCH,
                 threads=job["threads"], cuda=job.get("cuda"))
    shapes = [harness.shape_stats(b, s, harness.time_runs(lambda: model.run_feeds(f), job["runs"]))
              for (b, s), f in job["feeds"]]
    real = None
    if job["texts"]:
        method = getattr(model, model.task.method)
        real = real_rate(lambda: method(job["texts"]), len(job["texts"]), job["runs"])
    return {"shapes": shapes, "real": real, "provider_used": model.info()["provider"],
            "peak_rss_mb": harness.peak_rss_mb()}


def _hf_model(job: dict[str, Any]):
    """A transformers source: (model, forward(model, feeds) -> first output, tokenize(texts) -> feeds)."""
    import transformers

    model = getattr(transformers, job["auto_class"]).from_pretrained(job["source"]).eval()
    tok = transformers.AutoTokenizer.from_pretrained(job["source"])

    def tokenize(texts: list[str]) -> dict[str, Any]:
        return dict(tok(texts, padding=True, truncation=True, max_length=job["max_length"], return_tensors="pt"))

    return model, lambda m, feeds: m(**feeds)[0], tokenize


def _module_model(job: dict[str, Any]):
    """A user's own nn.Module, rebuilt from its module dir, with its `tokenizers` tokenizer (as the runtime's)."""
    import torch
    from tokenizers import Tokenizer

    from toolchain.export.modules import TOKENIZER_FILE, read_module_dir, run_module

    found = read_module_dir(job["source"])
    model, spec = found.build()
    tok = Tokenizer.from_file(str(found.path / TOKENIZER_FILE))
    tok.enable_truncation(max_length=job["max_length"])
    tok.enable_padding(pad_id=found.pad_id, pad_token=tok.id_to_token(found.pad_id) or "[PAD]")

    def tokenize(texts: list[str]) -> dict[str, Any]:
        enc = tok.encode_batch(texts)
        columns = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc]}
        return {t.name: torch.tensor(columns[t.name]) for t in spec.inputs}

    return model, lambda m, feeds: run_module(m, spec, feeds)[job["output"]], tokenize


# How the PyTorch child builds the model and its tokenizer, by source kind (SourceInfo.kind).
TORCH_MODELS: dict[str, Callable[[dict[str, Any]], tuple[Any, Callable, Callable]]] = {
    "transformers": _hf_model,
    "sentence-transformers": _hf_model,
    "module": _module_model,
}


def torch_encoder_child(job: dict[str, Any]) -> dict[str, Any]:
    """Bench PyTorch eager on the same ids and its tokenizer pipeline (runs in a spawned child)."""
    import torch

    torch.set_num_threads(job["threads"])
    device = cuda_bench.torch_device(torch, job)  # raises where CUDA was asked for and torch cannot use it
    model, forward, tokenize = TORCH_MODELS[job["kind"]](job)
    model = model.to(device)
    if job.get("dtype") == "fp16":
        model = model.half()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def call(inputs):
        out = forward(model, {k: torch.as_tensor(v).to(device) for k, v in inputs.items()})
        sync()
        return out

    with torch.inference_mode():
        shapes = [harness.shape_stats(b, s, harness.time_runs(lambda: call(f), job["runs"])) for (b, s), f in job["feeds"]]
        real = _torch_real(job, call, device, tokenize) if job["texts"] else None
    return {"shapes": shapes, "real": real, "provider_used": device, "peak_rss_mb": harness.peak_rss_mb()}


def _torch_real(job: dict[str, Any], call, device: str, tokenize) -> dict[str, Any]:
    """Sentences/s of the tokenizer + PyTorch + pooling pipeline over the real texts."""
    texts = sorted(job["texts"], key=len)  # as sentence-transformers' encode does, and the runtime

    def pipeline():
        for i in range(0, len(texts), REAL_BATCH):
            enc = tokenize(texts[i : i + REAL_BATCH])
            _torch_head(call(enc), enc["attention_mask"].to(device), job["pooling"])

    return real_rate(pipeline, len(job["texts"]), job["runs"])


def _torch_head(out, mask, pooling: dict[str, Any] | None):
    """Pooling + L2 normalisation for embeddings (as the runtime does), softmax for logits."""
    import torch

    if pooling is None:
        return torch.softmax(out.double(), dim=-1)
    m = mask.unsqueeze(-1).to(out.dtype)
    mode = pooling.get("mode", "mean")
    rows = torch.arange(out.shape[0], device=out.device)
    if mode == "cls":  # the first and last real tokens, whichever side the padding is on (runtime/encoders.py)
        vec = out[rows, mask.argmax(dim=1)]
    elif mode == "last":
        vec = out[rows, mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)]
    elif mode == "max":
        vec = out.masked_fill(m == 0, torch.finfo(out.dtype).min).max(dim=1).values
    else:
        vec = (out * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(vec, dim=-1) if pooling.get("normalize", True) else vec


# -- inputs ----------------------------------------------------------------------------------------
def make_feeds(manifest: Manifest, variant: str, shapes: list[tuple[int, int]]) -> Feeds:
    """Identical ids for every engine: a long text tokenized by the runtime, cut to exactly SEQ tokens."""
    model = open_variant(manifest, variant, provider="cpu")
    out = []
    for batch, seq in shapes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the long text is truncated at max_length on purpose
            feeds, _ = model.encode([" ".join(["word"] * seq)] * batch)
        feeds = {k: np.ascontiguousarray(v[:, :seq]) for k, v in feeds.items()}
        if next(iter(feeds.values())).shape[1] != seq:
            raise ToolchainError(f"could not build {seq}-token inputs with this tokenizer; use shorter sequence lengths.")
        out.append(((batch, seq), feeds))
    return out


def _real_texts(notes: list[str]) -> list[str]:
    try:
        return read_texts(limit=REAL_TEXTS).texts
    except ToolchainError as exc:
        notes.append(f"real-sentences scenario skipped: {exc}")
        return []


def _source(manifest: Manifest, notes: list[str]) -> Path | None:
    path = manifest.source.path
    if not path or not Path(path).is_dir():
        notes.append(f"PyTorch skipped: the source model directory {path or '(not recorded)'} is gone; "
                     "re-export from an available source to compare.")
        return None
    return Path(path)


def _source_bytes(manifest: Manifest, src: Path) -> int:
    files = [src / w for w in manifest.source.weights]
    return sum(f.stat().st_size for f in files if f.is_file())


def _pooling(manifest: Manifest) -> dict[str, Any] | None:
    if task_of(manifest).method != "embed":
        return None
    return dataclasses.asdict(manifest.pooling)


# -- the encoder bench -----------------------------------------------------------------------------
def _variant_rows(manifest: Manifest, settings: Settings, job: dict[str, Any], progress) -> dict[str, dict[str, Any]]:
    """Each variant in its own child. Several variants: two passes, the second in reverse order, each variant
    keeping its better pass per shape, so a slow spell of a shared machine does not decide which variant
    `auto` picks."""
    passes: dict[str, list[dict[str, Any]]] = {name: [] for name in settings.variants}
    orders = [settings.variants, settings.variants[::-1]] if len(settings.variants) > 1 else [settings.variants]
    for p, order in enumerate(orders, 1):
        for i, name in enumerate(order, 1):
            progress(f"bench {name} (pass {p}/{len(orders)}, {i}/{len(order)}): {len(job['feeds'])} shapes x "
                     f"{settings.runs} runs")
            passes[name].append(harness.in_child(onnx_encoder_child, {**job, "variant": name}))
    rows = {}
    for name, results in passes.items():
        v = manifest.variant(name)
        rows[name] = {"engine": "onnxruntime", "precision": v.precision, "bytes": v.bytes, "passed": v.passed,
                      **harness.best_pass(results)}
    return rows


def _torch_rows(manifest: Manifest, settings: Settings, job: dict[str, Any], src: Path, progress,
                notes: list[str]) -> dict[str, dict[str, Any]]:
    rows = {}
    for row, dtype in cuda_bench.TORCH_BASELINES[settings.provider]:
        progress(f"bench pytorch eager ({dtype} on {settings.provider})")
        torch_job = {**job, "threads": settings.torch_threads, "source": str(src), "max_length": manifest.max_length,
                     "auto_class": task_of(manifest).auto_class, "pooling": _pooling(manifest), "dtype": dtype,
                     "kind": manifest.source.kind, "output": task_of(manifest).output}
        try:
            result = harness.in_child(torch_encoder_child, torch_job)
            rows[row] = {"engine": PYTORCH, "precision": dtype, "bytes": _source_bytes(manifest, src), **result}
        except Exception as exc:  # PyTorch is the comparison, not the product: note it and keep the results
            notes.append(f"PyTorch {dtype} skipped: it failed to run ({type(exc).__name__}: {exc}).")
    return rows


def bench_encoder(manifest: Manifest, settings: Settings, vs_pytorch: bool, real: bool, progress,
                  cuda: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Rows per engine (every variant, then PyTorch) and the notes on what was skipped."""
    notes: list[str] = []
    feeds = make_feeds(manifest, settings.variants[0], settings.shapes)
    texts = _real_texts(notes) if real else []
    job = {"root": str(settings.root), "provider": settings.provider, "threads": settings.threads,
           "runs": settings.runs, "feeds": feeds, "texts": texts, "cuda": cuda}
    rows = _variant_rows(manifest, settings, job, progress)
    src = _source(manifest, notes) if vs_pytorch else None
    if src is not None:
        rows.update(_torch_rows(manifest, settings, job, src, progress, notes))
    return rows, notes
