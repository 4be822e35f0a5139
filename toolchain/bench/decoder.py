"""Bench for decoders: time to first token and tokens/s at several batch sizes, greedy, against
transformers' generate() and optimum's ORTModelForCausalLM on the same weights, each engine in its
own spawned process (peak memory per engine). Called by ``bench()`` for text-generation artifacts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from toolchain.runtime.manifest import Manifest

PROMPT = "ROMEO:\nWhat light through yonder window breaks? It is the east, and"


def _rate(run: Callable[[], tuple[int, float]], runs: int) -> dict[str, Any]:
    """Median over RUNS of one greedy generation: (tokens generated per row, seconds to first token)."""
    run()  # warm-up
    walls, firsts, tokens = [], [], 0
    for _ in range(runs):
        start = time.perf_counter()
        tokens, first = run()
        walls.append(time.perf_counter() - start)
        firsts.append(first)
    walls.sort(), firsts.sort()
    wall = walls[len(walls) // 2]
    return {"tokens": tokens, "seconds": wall, "ttft_ms": firsts[len(firsts) // 2] * 1000}


def onnx_child(job: dict[str, Any]) -> dict[str, Any]:
    """The torch-free runtime's generate loop (spawned child)."""
    from toolchain.bench.core import _peak_rss_mb
    from toolchain.runtime.generate import Sampling
    from toolchain.runtime.model import load

    model = load(job["root"], variant=job["variant"], provider=job["provider"], threads=job["threads"],
                 cuda=job.get("cuda"))
    out = {}
    for batch in job["batches"]:
        def run():
            stats: dict[str, Any] = {}
            for _ in model.generator.run([PROMPT] * batch, Sampling(max_new_tokens=job["new_tokens"]), stats):
                pass
            return stats.get("steps", 0), stats.get("first_token_s", 0.0)

        out[batch] = _rate(run, job["runs"])
    return {"batches": out, "peak_rss_mb": _peak_rss_mb()}


def torch_child(job: dict[str, Any]) -> dict[str, Any]:
    """transformers' generate() on the source weights, greedy (spawned child)."""
    import torch
    import transformers

    from toolchain.bench.core import _peak_rss_mb

    torch.set_num_threads(job["threads"])
    tok = transformers.AutoTokenizer.from_pretrained(job["source"])
    model = transformers.AutoModelForCausalLM.from_pretrained(job["source"]).eval()
    return {"batches": _hf_rates(model, tok, job, torch), "peak_rss_mb": _peak_rss_mb()}


def optimum_child(job: dict[str, Any]) -> dict[str, Any]:
    """optimum's ORTModelForCausalLM (its own export of the same weights), greedy (spawned child)."""
    import tempfile

    import torch
    import transformers
    from optimum.onnxruntime import ORTModelForCausalLM

    from toolchain.bench.core import _peak_rss_mb

    tok = transformers.AutoTokenizer.from_pretrained(job["source"])
    with tempfile.TemporaryDirectory() as tmp:
        ORTModelForCausalLM.from_pretrained(job["source"], export=True).save_pretrained(tmp)
        model = ORTModelForCausalLM.from_pretrained(tmp, provider="CPUExecutionProvider")
        return {"batches": _hf_rates(model, tok, job, torch), "peak_rss_mb": _peak_rss_mb()}


def _hf_rates(model, tok, job: dict[str, Any], torch) -> dict[int, dict[str, Any]]:
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = {}
    for batch in job["batches"]:
        enc = tok([PROMPT] * batch, return_tensors="pt", padding=True)
        enc = {k: enc[k] for k in ("input_ids", "attention_mask")}

        def run():
            with torch.inference_mode():
                first = time.perf_counter()
                model.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=pad)
                first = time.perf_counter() - first
                ids = model.generate(**enc, max_new_tokens=job["new_tokens"], do_sample=False, pad_token_id=pad)
            return ids.shape[1] - enc["input_ids"].shape[1], first

        out[batch] = _rate(run, job["runs"])
    return out


def bench_generate(manifest: Manifest, variants: list[str], batches: tuple[int, ...], provider: str, runs: int,
                   threads: int, vs_pytorch: bool, new_tokens: int = 64, progress=lambda m: None,
                   cuda: dict[str, Any] | None = None) -> dict[str, dict]:
    """Rows per engine in the shape bench() reports: one 'shape' per batch with p50_ms = ms per token.

    On CUDA the baselines are transformers' generate() on the GPU in fp32 and fp16 (optimum's CPU session
    would be no comparison there)."""
    from toolchain.bench.core import _in_child
    from toolchain.bench.cuda import TORCH_BASELINES, torch_generate_child

    job = {"root": str(manifest.root), "provider": provider, "threads": threads, "runs": max(1, min(runs, 30)),
           "batches": list(batches), "new_tokens": new_tokens, "source": manifest.source.path,
           "cuda": cuda}
    engines: list[tuple[str, Callable, dict[str, Any]]] = [(n, onnx_child, {"variant": n}) for n in variants]
    if vs_pytorch and job["source"] and Path(job["source"]).is_dir() and provider == "cuda":
        engines += [(row, torch_generate_child, {"dtype": dtype}) for row, dtype in TORCH_BASELINES["cuda"]]
    elif vs_pytorch and job["source"] and Path(job["source"]).is_dir():
        engines += [("pytorch", torch_child, {}), ("optimum", optimum_child, {})]
    rows = {}
    for name, child, extra in engines:
        progress(f"bench {name}: greedy generation of {new_tokens} tokens at batch {', '.join(map(str, batches))}")
        try:
            result = _in_child(child, {**job, **extra})
        except Exception as exc:  # a baseline that fails is noted, the product's numbers are kept
            if child is onnx_child:
                raise
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        shapes = []
        for batch, r in result["batches"].items():
            per_token = r["seconds"] * 1000 / max(1, r["tokens"])
            shapes.append({"batch": int(batch), "seq": new_tokens, "p50_ms": per_token, "p95_ms": per_token,
                           "items_per_s": r["tokens"] * int(batch) / r["seconds"], "tokens_per_s": r["tokens"] * int(batch) / r["seconds"],
                           "ttft_ms": r["ttft_ms"], "tokens": r["tokens"]})
        v = manifest.variants.get(name)
        rows[name] = {"engine": "onnxruntime" if v else name, "precision": v.precision if v else extra.get("dtype", "fp32"),
                      "bytes": v.bytes if v else 0, "passed": v.passed if v else True, "shapes": shapes, "real": None,
                      "peak_rss_mb": result["peak_rss_mb"]}
    return rows
