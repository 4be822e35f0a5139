"""The GPU bench and the summary of a GPU run (called by run_on_gpu.sh; not a pytest module).

    python tests/gpu/bench_gpu.py bench --work DIR        # MiniLM 32 x 128 and the tiny decoder on CUDA
    python tests/gpu/bench_gpu.py summary --work DIR --out FILE.md [--tests-rc N]

bench uses `toolchain bench --provider cuda` itself (fp32 and fp16 variants against PyTorch fp32 and fp16 eager
on the GPU; the decoder against transformers' generate() on the GPU) and records where each variant's nodes
ran. Results go to DIR/bench/*.json; summary turns those, the environment and the pytest results into markdown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

MINILM_SHAPES = {"batches": (1, 32), "seqs": (128,)}
DECODER_BATCHES = (1, 8)


def run_bench(work: Path, runs: int) -> None:
    from gpu.artifacts import FUSED, decoder, minilm, with_fp16, with_fused_fp16
    from toolchain.bench.core import bench, format_table
    from toolchain.runtime import load

    out = work / "bench"
    out.mkdir(parents=True, exist_ok=True)
    say = lambda m: print(f"[bench_gpu] {m}", file=sys.stderr, flush=True)  # noqa: E731
    enc = with_fused_fp16(with_fp16(minilm(work)))
    _, dec = decoder(work)
    dec = with_fp16(dec)
    results = {}
    for name, art, kwargs in (("minilm", enc, {**MINILM_SHAPES, "runs": runs, "real": True}),
                              ("decoder", dec, {"batches": DECODER_BATCHES, "runs": max(3, runs // 10)})):
        report = bench(art, provider="cuda", vs_pytorch=True, json_path=out / f"{name}-cuda.json",
                       chart_path=out / f"{name}-cuda.png", progress=say, **kwargs)
        print(format_table(report), flush=True)
        placement = {}
        for variant in ("fp32", "fp16", FUSED) if name == "minilm" else ("fp32", "fp16"):
            info = load(art, variant=variant, provider="cuda").info()
            placement[variant] = {k: info[k] for k in ("provider", "providers", "cpu_fallback_nodes",
                                                         "heavy_cpu_fallback", "placement")}
        results[name] = {"report": report, "placement": placement}
    (out / "gpu-bench.json").write_text(json.dumps(results, indent=2, default=str))


# -- summary --------------------------------------------------------------------------------------------
def _environment() -> list[str]:
    lines = []
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        lines.append(f"- GPU: {smi.stdout.strip() or smi.stderr.strip()}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        lines.append(f"- GPU: nvidia-smi failed ({exc})")
    import importlib.metadata as md

    for dist in ("onnxruntime-gpu", "onnxruntime", "torch", "transformers", "optimum", "numpy"):
        try:
            lines.append(f"- {dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            lines.append(f"- {dist}: not installed")
    try:
        import torch

        lines.append(f"- torch CUDA: {torch.cuda.is_available()} (CUDA {torch.version.cuda})")
    except ImportError:
        pass
    return lines


def _tests(work: Path, rc: int | None) -> list[str]:
    path = work / "gpu-junit.xml"
    if not path.is_file():
        return [f"- no pytest results (exit code {rc})"]
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    lines = [f"- {counts['tests']} tests: {counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']} "
             f"passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped (exit {rc})"]
    for case in suite.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                text = (node.get("message") or node.text or "").strip().splitlines()
                lines.append(f"  - {kind}: {case.get('name')}: {text[0][:200] if text else ''}")
    return lines


def _bench(work: Path) -> list[str]:
    path = work / "bench" / "gpu-bench.json"
    if not path.is_file():
        return ["- no bench results"]
    results = json.loads(path.read_text())
    lines = []
    enc = results.get("minilm")
    if enc:
        rows = enc["report"]["rows"]
        lines += ["### MiniLM (all-MiniLM-L6-v2) on CUDA", "",
                  "| engine | precision | batch x seq | p50 ms | items/s | vs torch fp32 | vs torch fp16 |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        fp16_ref = {(s["batch"], s["seq"]): s["p50_ms"] for s in rows.get("pytorch-fp16", {}).get("shapes", [])}
        ratio = lambda x: f"{x:.2f}x" if x is not None else "-"  # noqa: E731
        for name, row in rows.items():
            for s in row["shapes"]:
                ref16 = fp16_ref.get((s["batch"], s["seq"]))
                vs32 = s.get("p50_vs_pytorch", 1.0 if name == "pytorch" else None)
                lines.append(f"| {name} | {row['precision']} | {s['batch']} x {s['seq']} | {s['p50_ms']:.2f} | "
                             f"{s['items_per_s']:.0f} | {ratio(vs32)} | {ratio(s['p50_ms'] / ref16 if ref16 else None)} |")
        real = [(n, r["real"]) for n, r in rows.items() if r.get("real")]
        if real:
            lines += ["", "Real sentences (SST-2 dev, batches of 32, dynamic padding): "
                      + "; ".join(f"{n} {r['sentences_per_s']:.0f}/s" for n, r in real)]
        lines += [f"- notes: {n}" for n in enc["report"]["notes"]]
    dec = results.get("decoder")
    if dec:
        lines += ["", "### Tiny Llama (random weights) on CUDA: greedy generation", "",
                  "| engine | precision | batch | tokens/s | ms/token | ttft ms |", "| --- | --- | --- | --- | --- | --- |"]
        for name, row in dec["report"]["rows"].items():
            for s in row["shapes"]:
                ttft = f"{s['ttft_ms']:.1f}" if "ttft_ms" in s else "-"
                lines.append(f"| {name} | {row['precision']} | {s['batch']} | {s['tokens_per_s']:.0f} | "
                             f"{s['p50_ms']:.2f} | {ttft} |")
        lines += [f"- notes: {n}" for n in dec["report"]["notes"]]
    lines += ["", "### Node placement on CUDA (ONNX Runtime's profile of the warm-up run)", ""]
    for model, r in results.items():
        for variant, p in r["placement"].items():
            lines.append(f"- {model} {variant}: heavy CPU fallback {p['heavy_cpu_fallback']}; {p['placement']}")
    return lines


def write_summary(work: Path, out: Path, rc: int | None) -> None:
    text = ["# GPU run: CUDA provider checks", "", "## Environment", *_environment(), "",
            "## pytest -m gpu tests/gpu", *_tests(work, rc), "", "## Bench", *_bench(work), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text), encoding="utf-8")
    print(f"[bench_gpu] summary written to {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--work", type=Path, required=True)
    b.add_argument("--runs", type=int, default=50)
    s = sub.add_parser("summary")
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--tests-rc", type=int, default=None)
    args = parser.parse_args(argv)
    if args.what == "bench":
        run_bench(args.work, args.runs)
    else:
        write_summary(args.work, args.out, args.tests_rc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
