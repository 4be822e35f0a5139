"""`toolchain map` on Ray Data: every input row comes back once, in input order, with the runtime's answer."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet")

from toolchain.cli import main  # noqa: E402
from toolchain.fleet import MapSettings  # noqa: E402
from toolchain.runtime import load  # noqa: E402
from toolchain.runtime.errors import ToolchainError  # noqa: E402

WORDS = ["cat", "film", "dull", "rain", "plot", "witty", "mat", "story"]


def rows(n: int) -> list[str]:
    """N short texts, all different, so a row out of place or lost shows."""
    return [f"{WORDS[i % 8]} {WORDS[(i // 8) % 8]} number {i}" for i in range(n)]


def check_embeddings(out, artifact, texts: list[str]) -> None:
    table = pq.read_table(out)
    assert table.num_rows == len(texts)
    assert table.column("text").to_pylist() == texts  # order and count kept
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, load(artifact).embed(texts), atol=1e-5)


def test_map_txt_keeps_order_and_count(local_ray, tiny_artifact, tmp_path):
    from toolchain.fleet.map import map_file

    texts = rows(5000)
    texts[17] = ""  # an empty line is a row too (it keeps line numbers and output rows aligned)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    summary = map_file(tiny_artifact("bert"), src, tmp_path / "out.parquet", MapSettings(batch_size=500, actors=2,
                                                                                         cpus_per_actor=0.5))
    assert summary["rows"] == 5000
    check_embeddings(tmp_path / "out.parquet", tiny_artifact("bert"), texts)


def test_map_cli_jsonl_classifier_with_a_column(local_ray, tiny_artifact, tmp_path, capsys):
    artifact = tiny_artifact("bert", "text-classification")
    texts = rows(300)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "review": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "labels.parquet"
    assert main(["map", str(artifact), "--input", str(src), "--output", str(out), "--column", "review",
                 "--batch-size", "64"]) == 0
    assert "wrote 300 rows" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.column("review").to_pylist() == texts
    want = load(artifact).classify(texts)
    assert table.column("label").to_pylist() == [w["label"] for w in want]


def test_map_parquet_input_and_refusals(local_ray, tiny_artifact, tmp_path, capsys):
    import pyarrow as pa

    from toolchain.fleet.map import map_file

    texts = rows(200)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": texts, "n": list(range(200))}), src)
    # The CLI's refusals first: they come before Ray starts. (A Ray dataset shut down by an earlier error
    # logs from a background thread, and Ray prints "--- Logging error ---" with a stack when pytest has
    # swapped the stream it logs to: that is Ray's logger, not this command's output, so it is cut out.)
    for argv, says in [(["--input", str(src), "--output", str(tmp_path / "o.csv")], "must end in .parquet"),
                       (["--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.parquet")], "is not .txt")]:
        assert main(["map", str(tiny_artifact("bert")), *argv]) == 2
        err = re.sub(r"--- Logging error ---.*?Arguments: \(\)\n", "", capsys.readouterr().err, flags=re.S)
        assert says in err and "Traceback" not in err
    map_file(tiny_artifact("bert"), src, tmp_path / "out.parquet", MapSettings(batch_size=64, actors=1))
    check_embeddings(tmp_path / "out.parquet", tiny_artifact("bert"), texts)
    with pytest.raises(ToolchainError, match="no column 'body'"):
        map_file(tiny_artifact("bert"), src, tmp_path / "x.parquet", MapSettings(column="body"))
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
def test_map_100k_rows(local_ray, tiny_artifact, tmp_path):
    from toolchain.fleet.map import map_file

    texts = rows(100_000)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    summary = map_file(tiny_artifact("bert"), src, tmp_path / "out.parquet", MapSettings(batch_size=1000))
    print(f"\nmap 100k: {summary}")
    check_embeddings(tmp_path / "out.parquet", tiny_artifact("bert"), texts)
