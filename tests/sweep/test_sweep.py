"""sweep(): resumable per point, fits and fronts over every point, and one real smoke run through every stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.cli.commands import main
from toolchain.runtime.tasks import TASKS, Unsupported
from toolchain.sweep import core
from toolchain.sweep.core import sweep
from toolchain.sweep.measure import parameter_counts
from toolchain.sweep.quality import QUALITY, Quality, classifier_error, lm_loss

ROOT = Path(__file__).resolve().parents[2]
LLAMA = ROOT / "models" / "shakespeare-llama.toml"


class Fake:
    """A measure() that builds nothing: loss follows a known law in N and in tokens, calls are counted."""

    def __init__(self, fail_at: str | None = None):
        self.calls: list[str] = []
        self.fail_at = fail_at

    def __call__(self, point, folder, quality, smoke, progress):
        if point.name == self.fail_at:
            raise KeyboardInterrupt  # the sweep killed while building this point
        self.calls.append(point.name)
        cfg = point.recipe.source.config
        n = 12 * cfg["hidden_size"] ** 2 * cfg["num_hidden_layers"]
        loss = 30 * n ** -0.3 + 8 * (point.tokens or 1e6) ** -0.2 + 1.0
        rows = [{"variant": "fp32", "precision": "fp32", "passed": True, "mb": n * 4e-6, "p50_ms": n * 1e-6,
                 "quality": loss},
                {"variant": "int8", "precision": "int8", "passed": True, "mb": n * 1e-6, "p50_ms": n * 6e-7,
                 "quality": loss + 0.01},
                {"variant": "int4", "precision": "int4", "passed": False, "mb": n * 5e-7, "p50_ms": n * 5e-7,
                 "quality": loss + 1}]
        return {"axes": dict(point.size.axes), "params": n + 1000, "non_embedding": n, "train_seconds": 1.0,
                "seconds": 2.0, "latency_unit": "ms per decode step", "rows": rows, "quantize_errors": {}}


def test_an_interrupted_sweep_resumes_at_the_next_unfinished_size(tmp_path):
    out = tmp_path / "s"
    killed = Fake(fail_at="h128-l2")
    with pytest.raises(KeyboardInterrupt):
        sweep(LLAMA, "64x1,96x2,128x2,192x4", out=out, measure=killed)
    assert killed.calls == ["h64-l1", "h96-l2"]
    first = (out / "sizes" / "h64-l1" / "result.json").stat().st_mtime_ns
    resumed = Fake()
    summary = sweep(LLAMA, "64x1,96x2,128x2,192x4", out=out, measure=resumed, budget_ms=0.5)
    assert resumed.calls == ["h128-l2", "h192-l4"]  # the finished sizes are not built again
    assert (out / "sizes" / "h64-l1" / "result.json").stat().st_mtime_ns == first
    assert [p["name"] for p in summary["points"]] == ["h64-l1", "h96-l2", "h128-l2", "h192-l4"]
    assert json.loads((out / "sweep.json").read_text())["fit"]["alpha"] == pytest.approx(0.3, rel=1e-3)
    assert (out / "sweep.png").stat().st_size > 10_000
    changed = Fake()  # other settings (a token budget) for the same size: rebuilt, not reused
    sweep(LLAMA, "64x1,96x2", out=tmp_path / "t", measure=Fake())
    sweep(LLAMA, "64x1,96x2", out=tmp_path / "t", tokens="100k", measure=changed)
    assert changed.calls == ["h64-l1-t100k", "h96-l2-t100k"]


def test_summary_fits_both_axes_and_marks_the_fronts(tmp_path):
    summary = sweep(LLAMA, "64x1,96x2,128x2,192x4", tokens="50k,100k,200k,400k", out=tmp_path, measure=Fake(),
                    budget_ms=0.5, budget_mb=1.0)
    assert [f["group"] for f in summary["fits_params"]] == [50_000, 100_000, 200_000, 400_000]
    assert all(f["alpha"] == pytest.approx(0.3, rel=1e-3) and f["r2"] > 0.999 for f in summary["fits_params"])
    assert summary["fit"]["group"] == 400_000  # the headline: the largest budget
    assert len(summary["fits_tokens"]) == 4 and all(f["alpha"] == pytest.approx(0.2, rel=1e-3)
                                                    for f in summary["fits_tokens"])
    assert not any(k.endswith("/int4") for k in summary["front_latency"] + summary["front_size"])  # failed its gate
    assert summary["front_latency"][-1] == "h192-l4-t400k/fp32"  # the best quality is on the front
    best = summary["picks"]["ms"]
    assert best["p50_ms"] <= 0.5 and all(r["quality"] >= best["quality"] for r in summary["rows"]
                                         if r["passed"] and r["p50_ms"] <= 0.5)
    assert summary["recommendation"].startswith("for ≤ 0.5 ms and ≤ 1 MB: ship ")


def test_quality_is_scored_per_task():
    for task in TASKS:
        assert isinstance(QUALITY.get(task), (Quality, Unsupported)), task
    assert lm_loss({"val_loss": 2.0}, {}) == 2.0
    assert lm_loss({"val_loss": 2.0}, {"gate": {"perplexity_ratio": 1.1}}) == pytest.approx(2.0 + 0.0953, abs=1e-4)
    assert classifier_error({"dev_accuracy": 0.8}, {"gate": {"accuracy_drop": 0.01}}) == pytest.approx(0.21)
    assert main(["sweep", str(ROOT / "models" / "minilm.toml"), "--sizes", "64x1,128x1"]) == 2


def test_non_embedding_parameters_leave_out_token_and_position_tables(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"model.embed_tokens.weight": np.zeros((100, 8), np.float32), "positions.weight": np.zeros((16, 8), np.float32),
               "model.layers.0.mlp.up_proj.weight": np.zeros((24, 8), np.float32), "model.norm.weight": np.zeros(8, np.float32)},
              str(tmp_path / "model.safetensors"))
    assert parameter_counts(tmp_path) == (800 + 128 + 192 + 8, 192 + 8)


TINY = """name = "tiny-llama"
task = "text-generation"
[source]
architecture = "llama"
vocab_size = 300
config = {{ hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1, num_attention_heads = 2, num_key_value_heads = 1, tie_word_embeddings = true }}
[data.train]
path = "{data}"
[train]
max_length = 32
batch_size = 8
learning_rate = 1e-3
[export]
quantize = ["int4"]
"""


def test_a_smoke_sweep_runs_every_stage_and_resumes(tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.format(data=ROOT / "models" / "data" / "tinyshakespeare" / "input.txt"))
    out = tmp_path / "sweep"
    real, built = core._measure, []

    def second_is_killed(point, *args):
        if built:
            raise KeyboardInterrupt
        built.append(point.name)
        return real(point, *args)

    monkeypatch.setattr(core, "_measure", second_is_killed)
    argv = ["sweep", str(recipe), "--sizes", "hidden=16,32", "--smoke", "--out", str(out), "--budget-ms", "50"]
    assert main(argv) == 130  # interrupted after the first size
    trained = out / "sizes" / "h16" / "model" / "training.json"
    stamp = trained.stat().st_mtime_ns
    monkeypatch.setattr(core, "_measure", real)
    assert main(argv) == 0
    assert trained.stat().st_mtime_ns == stamp  # size 1 was not trained again
    printed = capsys.readouterr().out
    assert "h16" in printed and "h32" in printed and "ship h" in printed
    summary = json.loads((out / "sweep.json").read_text())
    h16, h32 = summary["points"]
    assert 0 < h16["non_embedding"] < h32["non_embedding"] < h32["params"]
    for point in summary["points"]:
        names = {r["variant"] for r in point["rows"]}
        assert names == {"fp32", "int4"} and all(r["mb"] > 0 and r["p50_ms"] > 0 for r in point["rows"])
        assert all(r["quality"] > 0 for r in point["rows"])
    assert (out / "sweep.png").is_file() and summary["front_latency"]
