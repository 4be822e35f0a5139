"""Bench: latency, throughput, peak memory and size per variant, against PyTorch eager on the same ids.

The stage's entry, ``bench()``: it checks the settings, runs the bench for the artifact's runtime method
(``BENCHES``: the decoder bench for generate, the encoder-decoder bench for translate, the encoder bench for
every other; each engine in its own spawned child, see harness.py) and writes JSON, a PNG chart and the
manifest's ``latency`` entries, which ``load(variant="auto")`` reads to pick the fastest passed variant.
Never imports torch.

Modules, bottom to top: harness (child processes, timing, statistics) < settings < cuda < encoder, decoder,
seq2seq < measure (quick A/B for quantize and optimize) < report (JSON, chart, table, manifest records) < core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import toolchain.bench.cuda as cuda_bench
import toolchain.bench.seq2seq as seq2seq_bench
from toolchain.bench.decoder import bench_generate, compare_engines
from toolchain.bench.encoder import bench_encoder
from toolchain.bench.caption import bench_captions
from toolchain.bench.vision import bench_images
from toolchain.bench.measure import measure_variants, record_latency
from toolchain.bench.report import build_report, write_chart, write_outputs
from toolchain.bench.report import format_table as format_rows
from toolchain.bench.settings import Settings, check_settings, positive_ints, task_of
from toolchain.export.modules import is_module_dir, read_module_dir, runs_own_code
from toolchain.runtime.errors import SourceError
from toolchain.runtime.manifest import Manifest, read_manifest
from toolchain.runtime.providers import CudaOptions

__all__ = ["BENCHES", "Settings", "bench", "format_table", "measure_variants", "record_latency", "write_chart"]


@dataclass
class Request:
    """What the caller of bench() asked for, before it is checked against the artifact."""

    variants: Any
    batches: Any
    seqs: Any
    provider: str
    vs_pytorch: bool
    real: bool
    runs: Any
    threads: Any
    progress: Callable[[str], None]
    cuda: dict[str, Any] | None


def bench(artifact, variants=None, batches=(1, 8, 32), seqs=(16, 128), provider="cpu", vs_pytorch=True,
          real=True, runs=20, threads=None, json_path=None, chart_path=None, progress=lambda msg: None,
          cuda=None, trust_remote_code=False) -> dict:
    """Measure every (or the named) variant of ARTIFACT at each batch x seq and write JSON, chart and manifest.

    Decoders and encoder-decoders are measured at each batch only (seqs does not apply: they generate up to a
    fixed number of new tokens). provider="cuda" refuses at once where CUDA cannot start, and adds PyTorch
    fp16 eager on the GPU; cuda: CudaOptions or a dict of its fields (device_id, gpu_mem_limit, ...).
    The PyTorch baseline of an artifact exported from someone's own nn.Module imports that module's code, so
    it runs only with trust_remote_code=True (as export and validate ask)."""
    manifest = read_manifest(artifact)
    if vs_pytorch and not trust_remote_code:
        refuse_untrusted_module(manifest)
    cuda = CudaOptions.coerce(cuda).to_dict()
    if provider == "cuda":
        cuda_bench.require_cuda(cuda)
    request = Request(variants, batches, seqs, provider, vs_pytorch, real, runs, threads, progress, cuda)
    run = BENCHES.get(task_of(manifest).method, _bench_encoder)
    report, settings = run(manifest, request)
    write_outputs(report, settings, json_path, chart_path)
    return report


def refuse_untrusted_module(manifest: Manifest) -> None:
    """Refuse to import a module dir's entry point from outside the toolchain unless the caller trusts it."""
    src = manifest.source.path
    if manifest.source.kind != "module" or not src or not is_module_dir(src):
        return
    entry = read_module_dir(src).entry
    if runs_own_code(entry):
        raise SourceError(f"the PyTorch baseline would import and run {entry} from {src}, code outside the "
                          "toolchain; pass --trust-remote-code (trust_remote_code=True) only if you trust its "
                          "authors, or bench without --vs-pytorch.")


def format_table(report: dict) -> str:
    """The report as a plain-text table (encoder-decoder reports have their own columns)."""
    return seq2seq_bench.format_table(report) if report.get("method") == "translate" else format_rows(report)


def _bench_encoder(manifest: Manifest, r: Request) -> tuple[dict, Settings]:
    """Encoders: p50/p95 per batch x seq, and the real-sentences scenario."""
    settings = check_settings(manifest, r.variants, r.batches, r.seqs, r.provider, r.runs, r.threads)
    rows, notes = bench_encoder(manifest, settings, r.vs_pytorch, r.real, r.progress, r.cuda)
    return build_report(manifest, settings, rows, notes), settings


def _bench_decoder(manifest: Manifest, r: Request) -> tuple[dict, Settings]:
    """Decoders: ms per generated token, tokens/s and time to first token (batch 1 and 8 by default)."""
    batches = tuple(b for b in positive_ints("batches", r.batches, "1,8") if b <= 64) or (1,)
    settings = check_settings(manifest, r.variants, batches, (1,), r.provider, r.runs, r.threads)
    new = min(64, manifest.max_length // 2)
    rows = bench_generate(manifest, settings.variants, batches, r.provider, r.runs, settings.torch_threads,
                          r.vs_pytorch, new_tokens=new, progress=r.progress, cuda=r.cuda)
    notes = [f"{n}: {row['error']}" for n, row in rows.items() if "error" in row]
    rows = {n: row for n, row in rows.items() if "error" not in row}
    compare_engines(rows)
    settings.shapes = [(b, new) for b in batches]
    report = build_report(manifest, settings, rows, notes)
    report["reference_shape"] = {"batch": batches[0], "seq": new}
    report["unit"] = f"ms per decode step (one token for each of the batch rows; greedy, {new} new tokens)"
    return report, settings


def _bench_translate(manifest: Manifest, r: Request) -> tuple[dict, Settings]:
    """Encoder-decoders: greedy translate() per batch: ms per sentence at batch 1, sentences/s, ms per output
    token, against PyTorch greedy decoding (and optimum for transformers sources)."""
    batches = positive_ints("batches", r.batches, "1,8")
    settings = check_settings(manifest, r.variants, batches, (1,), r.provider, r.runs, r.threads)
    rows, notes = seq2seq_bench.bench_translate(manifest, settings.variants, batches, r.provider, r.runs,
                                                settings.torch_threads, r.vs_pytorch, r.progress, r.cuda)
    settings.shapes = [(b, seq2seq_bench.new_tokens(manifest)) for b in batches]
    report = build_report(manifest, settings, rows, notes)
    report.update(seq2seq_bench.report_fields(manifest, batches))
    return report, settings


def _bench_images(manifest: Manifest, r: Request) -> tuple[dict, Settings]:
    """Image classifiers: p50 and images/s per batch on identical pixel values, and an end-to-end pass."""
    settings = check_settings(manifest, r.variants, r.batches, (1,), r.provider, r.runs, r.threads)
    rows, notes = bench_images(manifest, settings, r.vs_pytorch, r.real, r.progress, r.cuda)
    return build_report(manifest, settings, rows, notes), settings


def _bench_captions(manifest: Manifest, r: Request) -> tuple[dict, Settings]:
    """Captioners: greedy caption latency per batch (at batch 1: per image) against PyTorch generate()."""
    settings = check_settings(manifest, r.variants, positive_ints("batches", r.batches, "1,8"), (1,), r.provider,
                              r.runs, r.threads)
    rows, notes = bench_captions(manifest, settings, r.vs_pytorch, r.progress, r.cuda, task_of(manifest).auto_class)
    return build_report(manifest, settings, rows, notes), settings


# The bench for each runtime method (tasks.py); every other method gets the encoder bench.
BENCHES: dict[str, Callable[[Manifest, Request], tuple[dict, Settings]]] = {
    "generate": _bench_decoder,
    "translate": _bench_translate,
    "classify_image": _bench_images,
    "caption": _bench_captions,
}
