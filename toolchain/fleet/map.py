"""`toolchain map`: run a large file through an artifact on Ray Data, one model per actor, order kept.

Why Ray Data: reading a file in blocks, spreading the blocks over actors on every node, streaming results
back with bounded memory and retrying a lost worker are what it does; the same call runs on one machine
and on a cluster. Each actor loads the artifact once (``toolchain.runtime.load``) and ``map_batches``
hands it batches of rows; ``preserve_order`` makes the output rows come back in input order, and the
driver writes them into one Parquet file (a temp file beside it, renamed into place when complete) with
a progress bar. Input: .txt (one text per line, empty lines kept as rows), .jsonl or .parquet.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolchain.artifact.atomic import writing
from toolchain.fleet.settings import MapSettings
from toolchain.runtime import read_manifest
from toolchain.runtime.errors import ToolchainError

# The runtime method each task maps with, and the output columns it adds.
MAP_METHODS = {"feature-extraction": "embed", "text-classification": "classify", "text2text-generation": "translate"}
READERS = (".txt", ".jsonl", ".parquet")


class ModelActor:
    """One Ray actor: the artifact loaded once; each call maps one batch of rows (a dict of numpy columns)."""

    def __init__(self, path: str, variant: str, column: str, threads: int):
        from toolchain.runtime import load

        self.model = load(path, variant=variant, threads=threads)
        self.method = MAP_METHODS[self.model.info()["task"]]
        self.column = column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = [str(t) if t is not None else "" for t in batch[self.column]]
        out: dict[str, Any] = {self.column: np.asarray(texts, dtype=object)}
        if self.method == "embed":
            out["embedding"] = np.asarray(self.model.embed(texts), dtype=np.float32)
        elif self.method == "classify":
            results = self.model.classify(texts)
            out["label"] = np.asarray([r["label"] for r in results], dtype=object)
            out["score"] = np.asarray([r["score"] for r in results], dtype=np.float32)
        else:
            out["translation"] = np.asarray(self.model.translate(texts), dtype=object)
        return out


def check_paths(artifact: str | Path, input_path: str | Path, output: str | Path) -> str:
    """The artifact's task, after refusing an unmapped task, an unknown input type or a non-Parquet output."""
    task = read_manifest(artifact).task
    if task not in MAP_METHODS:
        raise ToolchainError(f"{artifact} is a {task} artifact; `toolchain map` maps {', '.join(MAP_METHODS)} "
                             "artifacts.")
    suffix = Path(str(input_path)).suffix.lower()
    if suffix not in READERS:
        raise ToolchainError(f"--input {input_path} is not {', '.join(READERS)}; convert it to one of those.")
    if "://" not in str(input_path) and not Path(input_path).is_file():
        raise ToolchainError(f"--input {input_path} does not exist; check the path.")
    if Path(output).suffix.lower() != ".parquet":
        raise ToolchainError(f"--output {output} must end in .parquet; `toolchain map` writes one Parquet file.")
    return task


def read(input_path: str | Path, column: str):
    """The input as a Ray Dataset whose COLUMN holds the texts (a .txt file's lines are column COLUMN)."""
    import ray.data

    path, suffix = str(input_path), Path(str(input_path)).suffix.lower()
    # Reading is light next to the model: read tasks reserve no CPU, or model actors holding every CPU
    # would leave them unscheduled forever (the actors then wait for blocks that are never read).
    if suffix == ".txt":
        ds = ray.data.read_text(path, drop_empty_lines=False, num_cpus=0)
        return ds.rename_columns({"text": column}) if column != "text" else ds
    read_any = ray.data.read_json if suffix == ".jsonl" else ray.data.read_parquet
    ds = read_any(path, lines=True, num_cpus=0) if suffix == ".jsonl" else read_any(path, num_cpus=0)
    names = ds.schema().names
    if column not in names:
        raise ToolchainError(f"--input {input_path} has no column {column!r} (it has {', '.join(names)}); "
                             "name the text column with --column.")
    return ds.select_columns([column])


def _table(batch: dict[str, np.ndarray]):
    """A batch as an Arrow table; embeddings as fixed-size lists of float32 (what Parquet readers expect)."""
    import pyarrow as pa

    columns = {}
    for name, values in batch.items():
        if isinstance(values, np.ndarray) and values.ndim == 2:
            flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel())
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        else:
            columns[name] = pa.array(list(values) if values.dtype == object else values)
    return pa.table(columns)


def map_file(artifact: str | Path, input_path: str | Path, output: str | Path, settings: MapSettings = MapSettings(),
             progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Map INPUT through ARTIFACT on the connected Ray; write OUTPUT (Parquet, input order); return a summary."""
    import pyarrow.parquet as pq
    import ray
    from ray.data import DataContext
    from tqdm import tqdm

    task = check_paths(artifact, input_path, output)
    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come back in input order, whatever actor ran them
    ctx.enable_progress_bars = False  # one bar, ours, counting rows written
    actors = settings.actors or max(1, int(ray.cluster_resources().get("CPU", 1) // settings.cpus_per_actor))
    threads = max(1, int(settings.cpus_per_actor))
    ds = read(input_path, settings.column).map_batches(
        ModelActor, fn_constructor_args=(str(Path(artifact).resolve()), settings.variant, settings.column, threads),
        batch_size=settings.batch_size, batch_format="numpy", concurrency=actors, num_cpus=settings.cpus_per_actor)
    progress(f"mapping {input_path} through {artifact} ({task}, {actors} actor(s))")
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    rows, writer, started = 0, None, time.perf_counter()
    try:
        with writing(output, in_place=False, also=(tmp,)), tqdm(unit="rows", file=sys.stderr, disable=None) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                table = _table(batch)
                writer = writer or pq.ParquetWriter(str(tmp), table.schema)
                writer.write_table(table)
                rows += table.num_rows
                bar.update(table.num_rows)
            if writer is None:
                raise ToolchainError(f"--input {input_path} has no rows; there is nothing to map.")
            writer.close()
            os.replace(tmp, output)
    finally:
        if writer is not None and tmp.exists():
            writer.close()
            tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    return {"output": str(output), "rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds, 1),
            "task": task, "actors": actors}
