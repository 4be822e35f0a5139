"""The process harness every bench stands on: a spawned child per engine, its own peak memory, timing
loops and the statistics reported per shape.

Each engine runs in its own spawned child (``in_child``), so peak memory is that engine's alone and one
engine's allocations do not slow the next. Nothing here imports torch or another bench module.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolchain.runtime.errors import ToolchainError

WARMUP = 3


def now() -> str:
    """The current UTC time, to the second, as recorded in reports and manifests."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def in_child(fn: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    """Run FN(JOB) in a freshly spawned process and return its result (FN must be a module-level function)."""
    import multiprocessing

    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main and not os.path.isfile(main):  # spawn re-imports __main__ from its file: `python -` has none
        raise ToolchainError(f"the bench runs each engine in a spawned process, which cannot re-import a main "
                             f"program read from {main}; save the script to a file or use `toolchain bench`.")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(fn, job).result()
    except BrokenProcessPool as exc:
        raise ToolchainError("a bench child process died before it answered (killed, out of memory, or a script "
                             "that calls the bench outside `if __name__ == '__main__':`, which every spawned "
                             "child then runs again); guard the call, or use `toolchain bench`.") from exc


def peak_rss_mb() -> float:
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


def physical_cores() -> int:
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


# -- timing ----------------------------------------------------------------------------------------
def time_runs(fn: Callable[[], Any], runs: int, warmup: int = WARMUP) -> list[float]:
    """Milliseconds of each of RUNS calls of FN, after WARMUP untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def time_generation(run: Callable[[], tuple[int, float]], runs: int) -> dict[str, Any]:
    """Median over RUNS of one generation; RUN returns (tokens generated per row, seconds to first token)."""
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


# -- statistics ------------------------------------------------------------------------------------
def shape_stats(batch: int, seq: int, ms: list[float]) -> dict[str, Any]:
    """One shape's row: p50/p95 latency in ms and items per second."""
    return {"batch": batch, "seq": seq, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "items_per_s": batch * len(ms) * 1000 / sum(ms)}


def best_pass(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One child's result from several passes: per shape the pass with the lower p50, the best real-text
    rate, the highest peak memory."""
    best = dict(results[0])
    best["shapes"] = [min(same, key=lambda s: s["p50_ms"]) for same in zip(*(r["shapes"] for r in results))]
    reals = [r["real"] for r in results if r.get("real")]
    best["real"] = max(reals, key=lambda r: r["sentences_per_s"]) if reals else None
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    best["passes"] = len(results)
    return best


def child_rows(manifest: Any, variants: list[str], child: Callable[[dict[str, Any]], dict[str, Any]],
               job: dict[str, Any], progress: Callable[[str], None], what: str) -> dict[str, dict[str, Any]]:
    """One row per variant of MANIFEST, each measured by CHILD in its own process (WHAT: for the progress line)."""
    rows = {}
    for name in variants:
        progress(f"bench {name}: {what}")
        v = manifest.variant(name)
        rows[name] = {"engine": "onnxruntime", "precision": v.precision, "bytes": v.bytes, "passed": v.passed,
                      **in_child(child, {**job, "variant": name})}
    return rows


def pytorch_row(manifest: Any, child: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any],
                notes: list[str]) -> dict[str, Any] | None:
    """PyTorch fp32 on the artifact's source directory, measured by CHILD (job + "source"); None, with a note
    saying why, when the source is gone or PyTorch fails: it is the comparison, not the product."""
    src = Path(manifest.source.path or "")
    if not (manifest.source.path and src.is_dir()):
        notes.append(f"PyTorch skipped: the source model directory {manifest.source.path or '(not recorded)'} is gone.")
        return None
    try:
        size = sum((src / w).stat().st_size for w in manifest.source.weights if (src / w).is_file())
        return {"engine": "pytorch", "precision": "fp32", "bytes": size, **in_child(child, {**job, "source": str(src)})}
    except Exception as exc:  # noqa: BLE001  any failure of the baseline is a note, never the bench's failure
        notes.append(f"PyTorch skipped: it failed to run ({type(exc).__name__}: {exc}).")
        return None
