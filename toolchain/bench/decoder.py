"""Bench for decoders: time to first token and tokens/s at several batch sizes, greedy, against
transformers' generate() and optimum's ORTModelForCausalLM on the same weights, each engine in its
own spawned process (peak memory per engine). Called by ``bench()`` for text-generation artifacts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import toolchain.bench.cuda as cuda_bench
import toolchain.bench.harness as harness
from toolchain.runtime.manifest import Manifest

PROMPT = "ROMEO:\nWhat light through yonder window breaks? It is the east, and"


def onnx_child(job: dict[str, Any]) -> dict[str, Any]:
    """The torch-free runtime's generate loop (spawned child)."""
    from toolchain.runtime import load
    from toolchain.runtime.generate import Sampling

    model = load(job["root"], variant=job["variant"], provider=job["provider"], threads=job["threads"],
                 cuda=job.get("cuda"))
    out = {}
    for batch in job["batches"]:
        def run():
            stats: dict[str, Any] = {}
            for _ in model.generator.run([PROMPT] * batch, Sampling(max_new_tokens=job["new_tokens"]), stats):
                pass
            return stats.get("steps", 0), stats.get("first_token_s", 0.0)

        out[batch] = harness.time_generation(run, job["runs"])
    return {"batches": out, "peak_rss_mb": harness.peak_rss_mb()}


def torch_child(job: dict[str, Any]) -> dict[str, Any]:
    """transformers' generate() on the source weights, greedy (spawned child)."""
    import torch
    import transformers

    torch.set_num_threads(job["threads"])
    tok = transformers.AutoTokenizer.from_pretrained(job["source"])
    model = transformers.AutoModelForCausalLM.from_pretrained(job["source"]).eval()
    return {"batches": _hf_rates(model, tok, job, torch), "peak_rss_mb": harness.peak_rss_mb()}


def torch_generate_child(job: dict[str, Any]) -> dict[str, Any]:
    """transformers' generate() on the GPU in job["dtype"], greedy (spawned child)."""
    import torch
    import transformers

    device = cuda_bench.torch_device(torch, job)
    dtype = torch.float16 if job.get("dtype") == "fp16" else torch.float32
    tok = transformers.AutoTokenizer.from_pretrained(job["source"])
    model = transformers.AutoModelForCausalLM.from_pretrained(job["source"], torch_dtype=dtype).eval().to(device)
    out = _hf_rates(model, tok, job, torch, device=device, sync=torch.cuda.synchronize)
    return {"batches": out, "peak_rss_mb": harness.peak_rss_mb(),
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / (1 << 20)}


def optimum_child(job: dict[str, Any]) -> dict[str, Any]:
    """optimum's ORTModelForCausalLM (its own export of the same weights), greedy (spawned child)."""
    import tempfile

    import torch
    import transformers
    from optimum.onnxruntime import ORTModelForCausalLM

    tok = transformers.AutoTokenizer.from_pretrained(job["source"])
    with tempfile.TemporaryDirectory() as tmp:
        ORTModelForCausalLM.from_pretrained(job["source"], export=True).save_pretrained(tmp)
        model = ORTModelForCausalLM.from_pretrained(tmp, provider="CPUExecutionProvider")
        return {"batches": _hf_rates(model, tok, job, torch), "peak_rss_mb": harness.peak_rss_mb()}


def _hf_rates(model, tok, job: dict[str, Any], torch, device: str = "cpu",
              sync: Callable[[], Any] = lambda: None) -> dict[int, dict[str, Any]]:
    """Greedy generate() per batch of the prompt, left-padded: tokens, seconds, time to first token."""
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = {}
    for batch in job["batches"]:
        enc = tok([PROMPT] * batch, return_tensors="pt", padding=True)
        enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}

        def run():
            with torch.inference_mode():
                first = time.perf_counter()
                model.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=pad)
                sync()
                first = time.perf_counter() - first
                ids = model.generate(**enc, max_new_tokens=job["new_tokens"], do_sample=False, pad_token_id=pad)
                sync()
            return ids.shape[1] - enc["input_ids"].shape[1], first

        out[batch] = harness.time_generation(run, job["runs"])
    return out


def _engines(job: dict[str, Any], variants: list[str], provider: str,
             vs_pytorch: bool) -> list[tuple[str, Callable, dict[str, Any]]]:
    """(row name, child, extra job keys) per engine: the variants, then the baselines for the provider."""
    engines: list[tuple[str, Callable, dict[str, Any]]] = [(n, onnx_child, {"variant": n}) for n in variants]
    if vs_pytorch and job["source"] and Path(job["source"]).is_dir() and provider == "cuda":
        engines += [(row, torch_generate_child, {"dtype": dtype}) for row, dtype in cuda_bench.TORCH_BASELINES["cuda"]]
    elif vs_pytorch and job["source"] and Path(job["source"]).is_dir():
        engines += [("pytorch", torch_child, {}), ("optimum", optimum_child, {})]
    return engines


def _row(manifest: Manifest, name: str, extra: dict[str, Any], result: dict[str, Any], new_tokens: int) -> dict:
    """One engine's row in bench()'s shape: a 'shape' per batch with p50_ms = ms per token."""
    shapes = []
    for batch, r in result["batches"].items():
        per_token = r["seconds"] * 1000 / max(1, r["tokens"])
        rate = r["tokens"] * int(batch) / r["seconds"]
        shapes.append({"batch": int(batch), "seq": new_tokens, "p50_ms": per_token, "p95_ms": per_token,
                       "items_per_s": rate, "tokens_per_s": rate, "ttft_ms": r["ttft_ms"], "tokens": r["tokens"]})
    v = manifest.variants.get(name)
    return {"engine": "onnxruntime" if v else name, "precision": v.precision if v else extra.get("dtype", "fp32"),
            "bytes": v.bytes if v else 0, "passed": v.passed if v else True, "shapes": shapes, "real": None,
            "peak_rss_mb": result["peak_rss_mb"]}


def bench_generate(manifest: Manifest, variants: list[str], batches: tuple[int, ...], provider: str, runs: int,
                   threads: int, vs_pytorch: bool, new_tokens: int = 64, progress=lambda m: None,
                   cuda: dict[str, Any] | None = None) -> dict[str, dict]:
    """Rows per engine in the shape bench() reports: one 'shape' per batch with p50_ms = ms per token.

    On CUDA the baselines are transformers' generate() on the GPU in fp32 and fp16 (optimum's CPU session
    would be no comparison there)."""
    job = {"root": str(manifest.root), "provider": provider, "threads": threads, "runs": max(1, min(runs, 30)),
           "batches": list(batches), "new_tokens": new_tokens, "source": manifest.source.path,
           "cuda": cuda}
    rows = {}
    for name, child, extra in _engines(job, variants, provider, vs_pytorch):
        progress(f"bench {name}: greedy generation of {new_tokens} tokens at batch {', '.join(map(str, batches))}")
        try:
            result = harness.in_child(child, {**job, **extra})
        except Exception as exc:  # a baseline that fails is noted, the product's numbers are kept
            if child is onnx_child:
                raise
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        rows[name] = _row(manifest, name, extra, result, new_tokens)
    return rows


def compare_engines(rows: dict[str, dict]) -> None:
    """Add to each row's shapes its tokens/s against the PyTorch and optimum rows, and its p50 against PyTorch."""
    for name, row in rows.items():
        for engine in ("pytorch", "optimum"):
            if engine in rows and name not in ("pytorch", "optimum"):
                for mine, theirs in zip(row["shapes"], rows[engine]["shapes"]):
                    mine[f"tokens_per_s_vs_{engine}"] = mine["tokens_per_s"] / theirs["tokens_per_s"]
        if "pytorch" in rows and name != "pytorch":
            for mine, theirs in zip(row["shapes"], rows["pytorch"]["shapes"]):
                mine["p50_vs_pytorch"] = mine["p50_ms"] / theirs["p50_ms"]
