"""Bench: latency, throughput, peak memory and size per variant, against PyTorch eager on the same ids.

Each variant (and PyTorch) runs in its own spawned child process, so peak memory is per engine and
one engine's allocations do not slow the next. This module never imports torch itself: only the
PyTorch child does. Results go to a JSON file, a PNG chart and the manifest's ``latency`` entries,
which ``load(variant="auto")`` reads to pick the fastest passed variant.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolchain.artifact.atomic import update_manifest, write_json
from toolchain.data.texts import read_texts
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.manifest import Manifest, read_manifest
from toolchain.runtime.model import open_variant

PROVIDERS = ("cpu", "cuda")
REAL_TEXTS = 256
REAL_BATCH = 32
REFERENCE_SHAPE = (1, 128)
WARMUP = 3
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


# -- timing helpers (run inside the children) ------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec; getrusage's
    ru_maxrss is carried across exec, so a child spawned by a large parent would report the parent's."""
    import resource
    import sys

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _time(fn: Callable[[], Any], runs: int, warmup: int = WARMUP) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _stats(batch: int, seq: int, ms: list[float]) -> dict[str, Any]:
    return {"batch": batch, "seq": seq, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "items_per_s": batch * len(ms) * 1000 / sum(ms)}


def _real_rate(fn: Callable[[], Any], n: int, runs: int) -> dict[str, Any]:
    """Sentences/s of one full pass over the texts (median of up to 3 passes after one warm-up pass)."""
    ms = _time(fn, max(1, min(3, runs)), warmup=1)
    return {"texts": n, "batch": REAL_BATCH, "sentences_per_s": n * 1000 / float(np.median(ms))}


def _best_pass(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One child's result from several passes: per shape the pass with the lower p50, the best real-text
    rate, the highest peak memory."""
    best = dict(results[0])
    best["shapes"] = [min(same, key=lambda s: s["p50_ms"]) for same in zip(*(r["shapes"] for r in results))]
    reals = [r["real"] for r in results if r.get("real")]
    best["real"] = max(reals, key=lambda r: r["sentences_per_s"]) if reals else None
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    best["passes"] = len(results)
    return best


def _onnx_child(job: dict[str, Any]) -> dict[str, Any]:
    """Bench one variant with the torch-free runtime (runs in a spawned child)."""
    from toolchain.runtime.model import load

    model = load(job["root"], variant=job["variant"], provider=job["provider"], batch_size=REAL_BATCH,
                 threads=job["threads"], cuda=job.get("cuda"))
    shapes = [_stats(b, s, _time(lambda: model.run_feeds(f), job["runs"])) for (b, s), f in job["feeds"]]
    real = None
    if job["texts"]:
        method = getattr(model, model.task.method)
        real = _real_rate(lambda: method(job["texts"]), len(job["texts"]), job["runs"])
    return {"shapes": shapes, "real": real, "provider_used": model.info()["provider"], "peak_rss_mb": _peak_rss_mb()}


def _torch_child(job: dict[str, Any]) -> dict[str, Any]:
    """Bench PyTorch eager on the same ids and the HF tokenizer pipeline (runs in a spawned child)."""
    import torch
    import transformers

    from toolchain.bench.cuda import torch_device

    torch.set_num_threads(job["threads"])
    device = torch_device(torch, job)  # raises where CUDA was asked for and torch cannot use it
    model = getattr(transformers, job["auto_class"]).from_pretrained(job["source"]).eval().to(device)
    if job.get("dtype") == "fp16":
        model = model.half()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def call(inputs):
        out = model(**{k: torch.as_tensor(v).to(device) for k, v in inputs.items()})
        sync()
        return out[0]

    with torch.inference_mode():
        shapes = [_stats(b, s, _time(lambda: call(f), job["runs"])) for (b, s), f in job["feeds"]]
        real = None
        if job["texts"]:
            tok = transformers.AutoTokenizer.from_pretrained(job["source"])

            texts = sorted(job["texts"], key=len)  # as sentence-transformers' encode does, and the runtime

            def pipeline():
                for i in range(0, len(texts), REAL_BATCH):
                    enc = tok(texts[i : i + REAL_BATCH], padding=True, truncation=True,
                              max_length=job["max_length"], return_tensors="pt")
                    _torch_head(call(dict(enc)), enc["attention_mask"].to(device), job["pooling"])

            real = _real_rate(pipeline, len(job["texts"]), job["runs"])
    return {"shapes": shapes, "real": real, "provider_used": device, "peak_rss_mb": _peak_rss_mb()}


def _torch_head(out, mask, pooling: dict[str, Any] | None):
    """Pooling + L2 normalisation for embeddings (as the runtime does), softmax for logits."""
    import torch

    if pooling is None:
        return torch.softmax(out.double(), dim=-1)
    m = mask.unsqueeze(-1).to(out.dtype)
    mode = pooling.get("mode", "mean")
    if mode == "cls":
        vec = out[:, 0]
    elif mode == "max":
        vec = out.masked_fill(m == 0, torch.finfo(out.dtype).min).max(dim=1).values
    else:
        vec = (out * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(vec, dim=-1) if pooling.get("normalize", True) else vec


def _in_child(fn: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    import multiprocessing

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, job).result()


# -- settings and inputs -----------------------------------------------------------------------
def _physical_cores() -> int:
    """ONNX Runtime's default intra-op thread count: the physical cores this process may use."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        cores = {tuple(line.split(":")[1].strip() for line in block.splitlines() if line.startswith(("physical id", "core id")))
                 for block in text.split("\n\n") if block.strip()}
        cores.discard(())
    except OSError:
        cores = set()
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(len(cores) or logical, logical))


def _positive_ints(name: str, values: Any, example: str) -> tuple[int, ...]:
    if isinstance(values, int):
        values = (values,)
    ok = isinstance(values, (list, tuple)) and values and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    if not ok:
        raise ToolchainError(f"{name} must be a non-empty list of positive integers (for example {example}), got {values!r}.")
    return tuple(dict.fromkeys(values))


def _settings(manifest: Manifest, variants, batches, seqs, provider, runs, threads) -> Settings:
    if provider not in PROVIDERS:
        raise ToolchainError(f"provider {provider!r} is not known for bench; use one of {', '.join(PROVIDERS)}.")
    batches = _positive_ints("batches", batches, "1,8,32")
    seqs = _positive_ints("seqs", seqs, "16,128")
    too_long = [s for s in seqs if s > manifest.max_length]
    if too_long:
        raise ToolchainError(f"sequence length {too_long[0]} exceeds the model's max_length; "
                             f"use lengths from 1 to {manifest.max_length}.")
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ToolchainError(f"runs must be a positive integer, got {runs!r}.")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ToolchainError(f"threads must be a positive integer or None (ONNX Runtime's default), got {threads!r}.")
    names = list(manifest.variants) if variants is None else [variants] if isinstance(variants, str) else list(variants)
    unknown = [n for n in names if n not in manifest.variants]
    if unknown or not names:
        raise ToolchainError(f"variant {unknown[0] if unknown else '(none)'!r} is not in {manifest.root}; "
                             f"choose from {', '.join(manifest.variants)}.")
    return Settings(manifest.root, list(dict.fromkeys(names)), batches, seqs, provider, runs, threads,
                    threads or _physical_cores(), [(b, s) for b in batches for s in seqs])


def _feeds(manifest: Manifest, settings: Settings) -> list[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    """Identical ids for every engine: a long text tokenized by the runtime, cut to exactly SEQ tokens."""
    model = open_variant(manifest, settings.variants[0], provider="cpu")
    out = []
    for batch, seq in settings.shapes:
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


# -- the stage -----------------------------------------------------------------------------------
def bench(artifact, variants=None, batches=(1, 8, 32), seqs=(16, 128), provider="cpu", vs_pytorch=True,
          real=True, runs=20, threads=None, json_path=None, chart_path=None, progress=lambda msg: None,
          cuda=None) -> dict:
    """Measure every (or the named) variant of ARTIFACT at each batch x seq and write JSON, chart and manifest.

    provider="cuda" refuses at once where CUDA cannot start, and adds PyTorch fp16 eager on the GPU;
    cuda: CudaOptions or a dict of its fields (device_id, gpu_mem_limit, ...)."""
    from toolchain.bench.cuda import TORCH_BASELINES, require_cuda
    from toolchain.runtime.providers import CudaOptions

    manifest = read_manifest(artifact)
    cuda = CudaOptions.coerce(cuda).to_dict()
    if provider == "cuda":
        require_cuda(cuda)
    if _task(manifest).method == "generate":
        return _bench_decoder(manifest, variants, batches, provider, runs, threads, vs_pytorch, json_path, chart_path,
                              progress, cuda)
    settings = _settings(manifest, variants, batches, seqs, provider, runs, threads)
    notes: list[str] = []
    feeds = _feeds(manifest, settings)
    texts = _real_texts(notes) if real else []
    job = {"root": str(settings.root), "provider": provider, "threads": threads, "runs": runs, "feeds": feeds,
           "texts": texts, "cuda": cuda}
    rows: dict[str, dict[str, Any]] = {}
    passes: dict[str, list[dict[str, Any]]] = {name: [] for name in settings.variants}
    # Several variants: two passes, the second in reverse order, each variant keeping its better pass per
    # shape, so a slow spell of a shared machine does not decide which variant `auto` picks.
    orders = [settings.variants, settings.variants[::-1]] if len(settings.variants) > 1 else [settings.variants]
    for p, order in enumerate(orders, 1):
        for i, name in enumerate(order, 1):
            progress(f"bench {name} (pass {p}/{len(orders)}, {i}/{len(order)}): {len(feeds)} shapes x {runs} runs")
            passes[name].append(_in_child(_onnx_child, {**job, "variant": name}))
    for name, results in passes.items():
        v = manifest.variant(name)
        rows[name] = {"engine": "onnxruntime", "precision": v.precision, "bytes": v.bytes, "passed": v.passed,
                      **_best_pass(results)}
    src = _source(manifest, notes) if vs_pytorch else None
    for row, dtype in TORCH_BASELINES[provider] if src is not None else ():
        progress(f"bench pytorch eager ({dtype} on {provider})")
        torch_job = {**job, "threads": settings.torch_threads, "source": str(src), "max_length": manifest.max_length,
                     "auto_class": _task(manifest).auto_class, "pooling": _pooling(manifest), "dtype": dtype}
        try:
            result = _in_child(_torch_child, torch_job)
            rows[row] = {"engine": "pytorch", "precision": dtype, "bytes": _source_bytes(manifest, src), **result}
        except Exception as exc:  # PyTorch is the comparison, not the product: note it and keep the results
            notes.append(f"PyTorch {dtype} skipped: it failed to run ({type(exc).__name__}: {exc}).")
    report = _report(manifest, settings, rows, notes)
    _write(report, settings, json_path, chart_path)
    return report


def _bench_decoder(manifest, variants, batches, provider, runs, threads, vs_pytorch, json_path, chart_path, progress,
                   cuda=None):
    """Decoders: ms per generated token, tokens/s and time to first token (batch 1 and 8 by default)."""
    from toolchain.bench.decoder import bench_generate

    batches = tuple(b for b in _positive_ints("batches", batches, "1,8") if b <= 64) or (1,)
    settings = _settings(manifest, variants, batches, (1,), provider, runs, threads)
    new = min(64, manifest.max_length // 2)
    rows = bench_generate(manifest, settings.variants, batches, provider, runs, settings.torch_threads, vs_pytorch,
                          new_tokens=new, progress=progress, cuda=cuda)
    notes = [f"{n}: {r['error']}" for n, r in rows.items() if "error" in r]
    rows = {n: r for n, r in rows.items() if "error" not in r}
    for name, row in rows.items():
        for engine in ("pytorch", "optimum"):
            if engine in rows and name not in ("pytorch", "optimum"):
                for mine, theirs in zip(row["shapes"], rows[engine]["shapes"]):
                    mine[f"tokens_per_s_vs_{engine}"] = mine["tokens_per_s"] / theirs["tokens_per_s"]
        if "pytorch" in rows and name != "pytorch":
            for mine, theirs in zip(row["shapes"], rows["pytorch"]["shapes"]):
                mine["p50_vs_pytorch"] = mine["p50_ms"] / theirs["p50_ms"]
    settings.shapes = [(b, new) for b in batches]
    report = _report(manifest, settings, rows, notes)
    report["reference_shape"] = {"batch": batches[0], "seq": new}
    report["unit"] = f"ms per decode step (one token for each of the batch rows; greedy, {new} new tokens)"
    _write(report, settings, json_path, chart_path)
    return report


def _task(manifest: Manifest):
    from toolchain.runtime.tasks import task_spec

    return task_spec(manifest.task)


def _pooling(manifest: Manifest) -> dict[str, Any] | None:
    if _task(manifest).method != "embed":
        return None
    return dataclasses.asdict(manifest.pooling)


def _report(manifest: Manifest, settings: Settings, rows: dict[str, dict[str, Any]], notes: list[str]) -> dict:
    ref = rows.get(PYTORCH)
    for name, row in rows.items():
        if ref is None or name == PYTORCH:
            continue
        for mine, theirs in zip(row["shapes"], ref["shapes"]):
            mine["p50_vs_pytorch"] = mine["p50_ms"] / theirs["p50_ms"]
        if row["real"] and ref["real"]:
            row["real"]["speedup_vs_pytorch"] = row["real"]["sentences_per_s"] / ref["real"]["sentences_per_s"]
    return {"artifact": str(manifest.root), "task": manifest.task, "provider": settings.provider,
            "threads": settings.torch_threads, "threads_requested": settings.threads, "runs": settings.runs,
            "measured": _now(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "reference_shape": _reference_shape(settings), "rows": rows, "notes": notes}


def _reference_shape(settings: Settings) -> dict[str, int]:
    b, s = REFERENCE_SHAPE if REFERENCE_SHAPE in settings.shapes else settings.shapes[0]
    return {"batch": b, "seq": s}


# -- quick A/B timing for quantize and optimize ---------------------------------------------------
def measure_variants(manifest: Manifest, names: list[str], batch: int = REFERENCE_SHAPE[0],
                     seq: int = REFERENCE_SHAPE[1], runs: int = 30, provider: str = "cpu",
                     threads: int | None = None) -> dict[str, dict[str, Any]]:
    """p50/p95 of several variants in this process, in alternating blocks so machine noise hits all alike
    (whole blocks, not single calls: alternating every call would evict each model's weights from cache)."""
    models = {n: open_variant(manifest, n, provider=provider, threads=threads) for n in names}
    if _task(manifest).method == "generate":  # decoders: ms per generated token, as bench reports them
        from toolchain.bench.decoder import PROMPT
        from toolchain.runtime.generate import Sampling

        seq = min(32, manifest.max_length // 2)

        def call(model):
            stats: dict[str, Any] = {}
            for _ in model.generator.run([PROMPT] * batch, Sampling(max_new_tokens=seq), stats):
                pass
            return stats.get("steps", seq)
    else:
        seq = min(seq, manifest.max_length)
        settings = Settings(manifest.root, names, (batch,), (seq,), provider, runs, threads, threads or 0, [(batch, seq)])
        (_, feeds), = _feeds(manifest, settings)

        def call(model):
            model.run_feeds(feeds)
            return 1
    times: dict[str, list[float]] = {n: [] for n in names}
    block = 5
    for _ in range(max(1, -(-runs // block))):
        for name, model in models.items():
            call(model)  # warm-up of this block
            for _ in range(block):
                start = time.perf_counter()
                per = call(model)
                times[name].append((time.perf_counter() - start) * 1000 / per)
    return {n: _stats(batch, seq, ms) for n, ms in times.items()}


def record_latency(root: str | Path, timings: dict[str, dict[str, Any]], provider: str = "cpu",
                   threads: int | None = None) -> None:
    """Store each variant's p50/p95 at its measured shape as ``latency[provider]`` in the manifest."""
    measured = _now()

    def change(data: dict[str, Any]) -> None:
        for name, t in timings.items():
            if name in data["variants"]:
                data["variants"][name].setdefault("latency", {})[provider] = {
                    "p50_ms": t["p50_ms"], "p95_ms": t["p95_ms"], "batch": t["batch"], "seq": t["seq"],
                    "threads": threads or _physical_cores(), "measured": measured}

    update_manifest(root, change)


# -- outputs -------------------------------------------------------------------------------------
def _relative(path: Path, root: Path) -> str:
    path, root = path.absolute(), root.absolute()
    return str(path.relative_to(root)) if root in path.parents else str(path)


def _write(report: dict, settings: Settings, json_path, chart_path) -> None:
    root = settings.root
    json_path = Path(json_path) if json_path else root / "bench.json"
    chart_path = Path(chart_path) if chart_path else root / "bench.png"
    for p in (json_path, chart_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    write_json(json_path, report)
    write_chart(report, chart_path)
    ref = report["reference_shape"]
    measured = report["measured"]

    at_ref = {name: next(s for s in row["shapes"] if (s["batch"], s["seq"]) == (ref["batch"], ref["seq"]))
              for name, row in report["rows"].items() if name != PYTORCH}
    record_latency(root, at_ref, settings.provider, report["threads"])
    update_manifest(root, lambda data: data.setdefault("bench", {}).__setitem__(settings.provider, {
        "json": _relative(json_path, root), "chart": _relative(chart_path, root), "measured": measured}))


def write_chart(report: dict, path: str | Path) -> None:
    """p50 latency per engine and shape as grouped bars (log scale), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    shapes = [(s["batch"], s["seq"]) for s in next(iter(rows.values()))["shapes"]]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(shapes) + 2), 4.5))
    for i, (name, row) in enumerate(rows.items()):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(shapes))]
        ax.bar(xs, [s["p50_ms"] for s in row["shapes"]], width, label=name)
    ax.set_xticks(range(len(shapes)), [f"batch {b}\nseq {s}" for b, s in shapes])
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (ms, log scale)")
    ax.set_title(f"{Path(report['artifact']).name}: {report['provider']}, {report['threads']} threads")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def format_table(report: dict) -> str:
    """A plain-text table of the report: one line per engine and shape, then the real-sentences scenario."""
    lines = [f"{report['artifact']} ({report['task']}): provider {report['provider']}, {report['threads']} threads, "
             f"{report['runs']} runs",
             f"{'engine':<13}{'size MB':>9}{'peak MB':>9}{'batch':>7}{'seq':>6}{'p50 ms':>10}{'p95 ms':>10}"
             f"{'items/s':>10}{'vs torch':>10}"]
    for name, row in report["rows"].items():
        for s in row["shapes"]:
            ratio = f"{s['p50_vs_pytorch']:.2f}x" if "p50_vs_pytorch" in s else "-"
            ttft = f"  ttft {s['ttft_ms']:.1f} ms" if "ttft_ms" in s else ""
            lines.append(f"{name:<13}{row['bytes'] / 1e6:>9.1f}{row['peak_rss_mb']:>9.0f}{s['batch']:>7}{s['seq']:>6}"
                         f"{s['p50_ms']:>10.2f}{s['p95_ms']:>10.2f}{s['items_per_s']:>10.1f}{ratio:>10}{ttft}")
    real = [(n, r["real"]) for n, r in report["rows"].items() if r.get("real")]
    if real:
        lines.append(f"real sentences ({real[0][1]['texts']} SST-2 dev, batches of {REAL_BATCH}, dynamic padding):")
        for name, r in real:
            speed = f"  {r['speedup_vs_pytorch']:.2f}x pytorch" if "speedup_vs_pytorch" in r else ""
            lines.append(f"  {name:<13}{r['sentences_per_s']:>10.1f} sentences/s{speed}")
    if report.get("unit"):
        lines.append(f"decoder rows: p50 = {report['unit']}; items/s = tokens/s; seq = new tokens")
    lines.append("vs torch: p50 / PyTorch p50 at the same shape (below 1 is faster).")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)
