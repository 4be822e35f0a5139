"""Runtime vs PyTorch eager latency on one artifact, measured in one run (not a test).

    python bench/latency.py dist/minilm [--seq 128] [--batch 1] [--runs 50]

Both sides get identical token ids (exactly SEQ tokens per item), 2 threads each unless --threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def timeit(fn, runs: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    import transformers

    from toolchain.runtime import load

    torch.set_num_threads(args.threads)
    model = load(args.artifact, provider="cpu", threads=args.threads)
    text = " ".join(["word"] * (args.seq * 2))
    feeds, _ = model.encode([text] * args.batch)
    feeds = {k: v[:, : args.seq] for k, v in feeds.items()}
    src = model.manifest.data["source"]["path"]
    ref = getattr(transformers, "AutoModel" if model.manifest.task == "feature-extraction"
                  else "AutoModelForSequenceClassification").from_pretrained(src).eval()
    tfeeds = {k: torch.from_numpy(v) for k, v in feeds.items()}

    def run_torch():
        with torch.inference_mode():
            ref(**tfeeds)

    onnx_ms = timeit(lambda: model.run_feeds(feeds), args.runs)
    torch_ms = timeit(run_torch, args.runs)
    o, t = statistics.median(onnx_ms), statistics.median(torch_ms)
    size = model.manifest.variant(model.variant).bytes / 1e6
    print(f"artifact {args.artifact} variant {model.variant} ({size:.1f} MB), batch {args.batch} x {args.seq} tokens, "
          f"{args.threads} threads")
    print(f"  onnxruntime p50 {o:.1f} ms (p95 {np.percentile(onnx_ms, 95):.1f})")
    print(f"  pytorch     p50 {t:.1f} ms (p95 {np.percentile(torch_ms, 95):.1f})")
    print(f"  ratio runtime/pytorch {o / t:.2f}x  (speed-up {t / o:.2f}x)")


if __name__ == "__main__":
    main()
