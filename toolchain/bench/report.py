"""The bench's outputs: the report dict (written as JSON), its chart, the plain-text table, and the
manifest records (latency per variant, where the bench files are) that ``load(variant="auto")`` reads."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import toolchain.bench.harness as harness
from toolchain.artifact.atomic import write_json
from toolchain.artifact.manifest_writes import update_manifest
from toolchain.bench.measure import record_latency
from toolchain.bench.settings import PYTORCH, REAL_BATCH, REFERENCE_SHAPE, Settings
from toolchain.runtime.manifest import Manifest


def build_report(manifest: Manifest, settings: Settings, rows: dict[str, dict[str, Any]], notes: list[str]) -> dict:
    """The report of one bench: its settings, the machine, one row per engine, the notes; ratios to PyTorch."""
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
            "measured": harness.now(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "reference_shape": reference_shape(settings), "rows": rows, "notes": notes}


def reference_shape(settings: Settings) -> dict[str, int]:
    """The shape recorded as each variant's latency: batch 1 x 128 tokens where measured, else the first."""
    b, s = REFERENCE_SHAPE if REFERENCE_SHAPE in settings.shapes else settings.shapes[0]
    return {"batch": b, "seq": s}


def _relative(path: Path, root: Path) -> str:
    path, root = path.absolute(), root.absolute()
    return str(path.relative_to(root)) if root in path.parents else str(path)


def write_outputs(report: dict, settings: Settings, json_path, chart_path) -> None:
    """Write the JSON and the chart (default: bench.json and bench.png in the artifact) and the manifest records."""
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
