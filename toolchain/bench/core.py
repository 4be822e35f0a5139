"""Bench: latency, throughput, peak memory and size per variant, against PyTorch eager on the same ids.

The stage's entry, ``bench()``: it checks the settings, runs the encoder or the decoder bench (each engine
in its own spawned child, see harness.py) and writes JSON, a PNG chart and the manifest's ``latency``
entries, which ``load(variant="auto")`` reads to pick the fastest passed variant. Never imports torch.

Modules, bottom to top: harness (child processes, timing, statistics) < settings < cuda < encoder, decoder
< measure (quick A/B for quantize and optimize) < report (JSON, chart, table, manifest records) < core.
"""

from __future__ import annotations

from typing import Any

import toolchain.bench.cuda as cuda_bench
from toolchain.bench.decoder import bench_generate, compare_engines
from toolchain.bench.encoder import bench_encoder
from toolchain.bench.measure import measure_variants, record_latency
from toolchain.bench.report import build_report, format_table, write_chart, write_outputs
from toolchain.bench.settings import Settings, check_settings, positive_ints, task_of
from toolchain.runtime.manifest import Manifest, read_manifest
from toolchain.runtime.providers import CudaOptions

__all__ = ["Settings", "bench", "format_table", "measure_variants", "record_latency", "write_chart"]


def bench(artifact, variants=None, batches=(1, 8, 32), seqs=(16, 128), provider="cpu", vs_pytorch=True,
          real=True, runs=20, threads=None, json_path=None, chart_path=None, progress=lambda msg: None,
          cuda=None) -> dict:
    """Measure every (or the named) variant of ARTIFACT at each batch x seq and write JSON, chart and manifest.

    provider="cuda" refuses at once where CUDA cannot start, and adds PyTorch fp16 eager on the GPU;
    cuda: CudaOptions or a dict of its fields (device_id, gpu_mem_limit, ...)."""
    manifest = read_manifest(artifact)
    cuda = CudaOptions.coerce(cuda).to_dict()
    if provider == "cuda":
        cuda_bench.require_cuda(cuda)
    if task_of(manifest).method == "generate":
        return _bench_decoder(manifest, variants, batches, provider, runs, threads, vs_pytorch, json_path, chart_path,
                              progress, cuda)
    settings = check_settings(manifest, variants, batches, seqs, provider, runs, threads)
    rows, notes = bench_encoder(manifest, settings, vs_pytorch, real, progress, cuda)
    report = build_report(manifest, settings, rows, notes)
    write_outputs(report, settings, json_path, chart_path)
    return report


def _bench_decoder(manifest: Manifest, variants, batches, provider, runs, threads, vs_pytorch, json_path, chart_path,
                   progress, cuda: dict[str, Any] | None = None) -> dict:
    """Decoders: ms per generated token, tokens/s and time to first token (batch 1 and 8 by default)."""
    batches = tuple(b for b in positive_ints("batches", batches, "1,8") if b <= 64) or (1,)
    settings = check_settings(manifest, variants, batches, (1,), provider, runs, threads)
    new = min(64, manifest.max_length // 2)
    rows = bench_generate(manifest, settings.variants, batches, provider, runs, settings.torch_threads, vs_pytorch,
                          new_tokens=new, progress=progress, cuda=cuda)
    notes = [f"{n}: {r['error']}" for n, r in rows.items() if "error" in r]
    rows = {n: r for n, r in rows.items() if "error" not in r}
    compare_engines(rows)
    settings.shapes = [(b, new) for b in batches]
    report = build_report(manifest, settings, rows, notes)
    report["reference_shape"] = {"batch": batches[0], "seq": new}
    report["unit"] = f"ms per decode step (one token for each of the batch rows; greedy, {new} new tokens)"
    write_outputs(report, settings, json_path, chart_path)
    return report
