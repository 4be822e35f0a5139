"""bench for encoder-decoders (text2text-generation): greedy translate() per variant against PyTorch greedy
decoding (uncached forward, cached step graphs) and, for Hugging Face sources, transformers' generate() and
optimum's ORTModelForSeq2SeqLM, each in its own child; exact output token counts; ratios; reference batch 1."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from toolchain.bench import core, harness  # noqa: E402
from toolchain.bench import seq2seq as s2s  # noqa: E402
from toolchain.bench.core import bench, format_table  # noqa: E402
from toolchain.runtime import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
THREADS = 1  # one thread per engine: steadier numbers on a shared machine
RECIPE = """name = "tiny-dates"
task = "text2text-generation"
[model]
module = "toolchain.train.modules.seq2seq_transformer:build"
[model.config]
vocab_size = 300
d_model = 32
heads = 2
encoder_layers = 1
decoder_layers = 1
ff = 64
max_length = 96
[data.train]
path = "{train}"
text = "source"
target = "iso"
limit = 4000
[data.dev]
path = "{dev}"
text = "source"
target = "iso"
limit = 20
[train]
epochs = 3.0
max_length = 64
batch_size = 32
learning_rate = 5e-3
logging_steps = 50
"""


@pytest.fixture(scope="module")
def module_art(tmp_path_factory):
    """A tiny Transformer translator trained a few seconds on the dates data (it learns to stop: its outputs
    end at EOS at different lengths), exported to an encoder and a decoder graph."""
    from toolchain.export.core import export
    from toolchain.train.trainer import train

    root = tmp_path_factory.mktemp("s2s-module")
    recipe = root / "tiny.toml"
    data = ROOT / "models" / "data" / "dates"
    recipe.write_text(RECIPE.format(train=data / "train.tsv", dev=data / "dev.tsv"))
    trained = train(recipe, out=root / "model")
    export(trained.model_dir, root / "art", task="text2text-generation")
    return root / "art"


@pytest.fixture(scope="module")
def module_report(module_art, tmp_path_factory):
    out = tmp_path_factory.mktemp("s2s-module-report")
    messages: list[str] = []
    report = bench(module_art, batches=(1, 3), runs=2, threads=THREADS, vs_pytorch=True,
                   json_path=out / "bench.json", chart_path=out / "bench.png", progress=messages.append)
    return report, out, messages


@pytest.fixture(scope="module")
def bart_art(tmp_path_factory):
    """A tiny random BART (transformers source) exported to the two-graph contract."""
    sys.path.insert(0, str(ROOT / "tests" / "export"))
    import tiny_seq2seq_hf as tiny

    from toolchain.export.core import export

    root = tmp_path_factory.mktemp("s2s-bart")
    export(tiny.build("bart", root / "model"), root / "art", task="text2text-generation")
    return root / "art"


def test_rows_for_each_variant_and_baseline(module_report):
    report, out, messages = module_report
    rows = report["rows"]
    assert set(rows) == {"fp32", "pytorch", "pytorch-cached"}
    assert rows["pytorch"]["label"] == "pytorch (uncached forward per step)"
    assert rows["pytorch-cached"]["label"] == "pytorch (cached step graphs)"
    assert rows["fp32"]["engine"] == "onnxruntime" and rows["fp32"]["bytes"] > 0
    for row in rows.values():
        assert row["peak_rss_mb"] > 0 and [s["batch"] for s in row["shapes"]] == [1, 3]
        for s in row["shapes"]:
            assert s["p50_ms"] > 0 and s["p95_ms"] >= s["p50_ms"] and s["sentences_per_s"] > 0
            assert s["ms_per_token"] > 0 and s["tokens_per_s"] > 0 and s["seq"] == report["new_tokens"]
    assert report["method"] == "translate" and report["threads"] == THREADS
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(report))
    assert (out / "bench.png").stat().st_size > 0
    assert any(m.startswith("bench pytorch-cached") for m in messages)


def test_reference_shape_is_batch_1_and_recorded(module_art, module_report):
    report, _, _ = module_report
    assert report["reference_shape"] == {"batch": 1, "seq": report["new_tokens"]}
    recorded = json.loads((module_art / "manifest.json").read_text())["variants"]["fp32"]["latency"]["cpu"]
    assert recorded["batch"] == 1 and recorded["p50_ms"] == report["rows"]["fp32"]["shapes"][0]["p50_ms"]


def test_output_token_counts_are_exact(module_art, module_report):
    """The fp32 row counts what translate() decodes (decode_ids on source_ids), the PyTorch rows count their own
    ids; the model stops at EOS at various lengths, so the count is not simply sources x max_new_tokens."""
    report, _, _ = module_report
    model = load(module_art, variant="fp32", provider="cpu")
    new = report["new_tokens"]
    lengths = [len(model.decode_ids(*model.source_ids([s]), max_new_tokens=new)[0]) for s in s2s.SOURCES]
    assert 0 < sum(lengths) < len(s2s.SOURCES) * new and len(set(lengths)) > 1
    cycled = lengths + lengths[:1]  # batch 3: three calls over 9 sources, the first again at the end
    for name, row in report["rows"].items():
        one, three = row["shapes"]
        assert (one["tokens"], one["sentences"]) == (sum(lengths), 8), name
        assert (three["tokens"], three["sentences"]) == (sum(cycled), 9), name
        assert one["tokens_per_sentence"] == pytest.approx(sum(lengths) / 8)
        assert row["outputs"] == model.translate(list(s2s.SOURCES), max_new_tokens=new), name


def test_speedups_are_the_baseline_p50_over_the_variant_p50(module_report):
    report, _, _ = module_report
    rows = report["rows"]
    for mine, torch_s, cached_s in zip(*(rows[n]["shapes"] for n in ("fp32", "pytorch", "pytorch-cached"))):
        assert mine["speedup_vs_pytorch"] == pytest.approx(torch_s["p50_ms"] / mine["p50_ms"])
        assert mine["speedup_vs_pytorch_cached"] == pytest.approx(cached_s["p50_ms"] / mine["p50_ms"])
        assert mine["p50_vs_pytorch"] == pytest.approx(mine["p50_ms"] / torch_s["p50_ms"])
        assert "speedup_vs_optimum" not in mine
    assert not any(k.startswith("speedup") for s in rows["pytorch"]["shapes"] for k in s)
    table = format_table(report)
    assert "x torch" in table and "pytorch (cached step graphs)" in table
    speed = f"{rows['fp32']['shapes'][0]['speedup_vs_pytorch']:.2f}x"
    assert any(line.startswith("fp32") and speed in line for line in table.splitlines())


def test_the_build_summary_reads_p50_and_vs_torch(module_art, module_report):
    from toolchain.pipeline.stages import _rows, format_summary

    report, _, _ = module_report
    (row,) = _rows(module_art, None, report)
    fp32, torch_row = report["rows"]["fp32"]["shapes"][0], report["rows"]["pytorch"]["shapes"][0]
    assert row["p50_ms"] == fp32["p50_ms"] and row["vs_pytorch"] == pytest.approx(fp32["p50_ms"] / torch_row["p50_ms"])
    summary = {"recipe": "r", "artifact": str(module_art), "model": "m", "rows": [row], "steps": {}, "auto": "fp32",
               "ok": True, "seconds": 1.0, "export_seconds": 1.0, "bench_threads": 1,
               "bench_shape": report["reference_shape"], "min_accuracy": None}
    assert f"{fp32['p50_ms']:.2f}" in format_summary(summary)


def test_greedy_cached_step_graphs_match_the_uncached_forward(module_art):
    """The cached PyTorch baseline decodes what the module's own forward decodes, on an uneven batch."""
    from tokenizers import Tokenizer

    from toolchain.export.modules import read_module_dir
    from toolchain.export.seq2seq_module import greedy_uncached, pad_sources

    source = read_module_dir(json.loads((module_art / "manifest.json").read_text())["source"]["path"])
    module, spec = source.build()
    tok = Tokenizer.from_file(str(source.path / "tokenizer.json"))
    ids, mask = pad_sources([e.ids for e in tok.encode_batch(list(s2s.SOURCES))], source.pad_id)
    assert s2s.greedy_cached(module, spec, ids, mask, 20) == greedy_uncached(module, spec, ids, mask, 20)


def test_generated_ids_drop_the_start_token_and_cut_at_eos():
    sequences = [[2, 5, 6, 2, 1, 1], [2, 7, 8, 9], [2, 2, 1, 1]]
    assert s2s.generated_ids(sequences, [2]) == [[5, 6], [7, 8, 9], []]
    assert s2s.generated_ids([[0, 4, 3, 4]], [3, 9]) == [[4]]


def test_source_groups_cycle_through_the_sources():
    assert s2s.source_groups(1) == [[s] for s in s2s.SOURCES]
    assert s2s.source_groups(8) == [list(s2s.SOURCES)]
    three = s2s.source_groups(3)
    assert [len(g) for g in three] == [3, 3, 3] and sum(three, [])[:8] == list(s2s.SOURCES)


def test_an_hf_source_is_compared_with_generate_and_optimum(bart_art, tmp_path):
    report = bench(_copy(bart_art, tmp_path / "art"), batches=(1,), runs=2, threads=THREADS,
                   json_path=tmp_path / "b.json", chart_path=tmp_path / "b.png")
    rows = report["rows"]
    assert {"fp32", "pytorch"} <= set(rows)
    assert rows["pytorch"]["label"] == "pytorch (transformers generate, KV cache)"
    fp32 = rows["fp32"]["shapes"][0]
    assert fp32["speedup_vs_pytorch"] == pytest.approx(rows["pytorch"]["shapes"][0]["p50_ms"] / fp32["p50_ms"])
    if "optimum" in rows:
        assert rows["optimum"]["shapes"][0]["p50_ms"] > 0 and rows["optimum"]["outputs"] == rows["fp32"]["outputs"]
        assert fp32["speedup_vs_optimum"] == pytest.approx(rows["optimum"]["shapes"][0]["p50_ms"] / fp32["p50_ms"])
    else:
        assert any(n.startswith("optimum: not measured") for n in report["notes"]), report["notes"]
    assert rows["pytorch"]["outputs"] == rows["fp32"]["outputs"]  # export parity: the same greedy ids


def _copy(art: Path, to: Path) -> Path:
    """A copy of ART, so that a bench with fake timings leaves the shared artifact's latency records alone."""
    shutil.copytree(art, to)
    return to


def _fake_child(calls: list, fail: tuple[str, ...] = ()):
    """harness.in_child stand-in: canned timings per batch (optimum slower), or an error for the named children."""

    def run(fn, job):
        calls.append(fn.__name__)
        if fn.__name__ in fail:
            raise RuntimeError(f"{fn.__name__} cannot export this model")
        ms = {"onnx_child": 2.0, "hf_child": 8.0, "optimum_child": 4.0}.get(fn.__name__, 6.0)
        return {"batches": {b: {"ms": [ms] * job["runs"] * len(s2s.source_groups(b)), "tokens": 10 * b,
                                "sentences": 8, "outputs": ["x"] * 8} for b in job["batches"]}, "peak_rss_mb": 5.0}

    return run


def test_a_failing_baseline_is_a_note_not_a_crash(bart_art, tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(harness, "in_child", _fake_child(calls, fail=("optimum_child",)))
    report = bench(_copy(bart_art, tmp_path / "art"), batches=(1,), runs=2, json_path=tmp_path / "b.json",
                   chart_path=tmp_path / "b.png")
    assert calls == ["onnx_child", "hf_child", "optimum_child"]
    assert set(report["rows"]) == {"fp32", "pytorch"}
    assert "optimum: not measured (RuntimeError: optimum_child cannot export this model)" in report["notes"]
    assert report["rows"]["fp32"]["shapes"][0]["speedup_vs_pytorch"] == pytest.approx(4.0)


def test_text2text_goes_to_the_seq2seq_bench_not_the_encoder_bench(module_art, tmp_path, monkeypatch):
    art = _copy(module_art, tmp_path / "art")

    def refuse(*args, **kwargs):
        raise AssertionError("the encoder bench ran for a text2text artifact")

    calls: list[str] = []
    monkeypatch.setattr(core, "bench_encoder", refuse)
    monkeypatch.setattr(harness, "in_child", _fake_child(calls))
    report = bench(art, batches=(1, 8), seqs=(8,), runs=2, json_path=tmp_path / "b.json", chart_path=tmp_path / "b.png")
    assert calls == ["onnx_child", "module_child", "module_child"] and report["method"] == "translate"
    assert [s["batch"] for s in report["rows"]["fp32"]["shapes"]] == [1, 8]


def test_cli_bench_prints_the_translate_table(module_art, tmp_path, capsys):
    from toolchain.cli.commands import main

    code = main(["bench", str(_copy(module_art, tmp_path / "art")), "--batch", "1", "--runs", "2", "--threads", "1",
                 "--json-out", str(tmp_path / "cli.json")])
    out = capsys.readouterr().out
    assert code == 0 and "sent/s" in out and "ms/tok" in out
    assert any(line.split()[:1] == ["fp32"] for line in out.splitlines())
    assert "pass --vs-pytorch" in out
