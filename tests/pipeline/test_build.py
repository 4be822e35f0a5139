"""`toolchain build RECIPE --smoke`: train -> export -> quantize -> validate -> bench, one summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolchain.pipeline.stages import build, format_summary
from toolchain.cli.commands import main
from toolchain.runtime import load, read_manifest

MODELS = Path(__file__).resolve().parents[2] / "models"
RECIPES = sorted(MODELS.glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_builds_with_smoke(path, tmp_path):
    out = tmp_path / "dist" / path.stem
    summary = build(path, out=out, smoke=True)
    manifest = read_manifest(out)
    names = [r["variant"] for r in summary["rows"]]
    assert names[0] == "fp32" and set(names) == set(manifest.variants)
    assert manifest.variants["fp32"].metrics["parity"]["max_abs_diff"] <= manifest.variants["fp32"].tolerance["atol"]
    assert "cpu" in manifest.variants["fp32"].latency  # bench recorded for auto
    assert summary["auto"] == load(out).info()["variant"]
    for r in summary["rows"]:
        assert r["mb"] > 0 and r["p50_ms"] > 0 and r["metric"] != "-"
    table = format_summary(summary)
    assert "variant='auto' picks" in table and "fp32" in table


def test_build_reuses_a_trained_model(tmp_path, capsys):
    recipe = MODELS / "bert-mini-sst2.toml"
    out = tmp_path / "bert"
    assert main(["build", str(recipe), "--out", str(out), "--smoke"]) == 0
    assert (tmp_path / "bert.model" / "training.json").is_file()
    from toolchain.pipeline.stages import train_stage
    from toolchain.train.recipe import load_recipe

    said = []
    model, metrics = train_stage(load_recipe(recipe), out, smoke=False, retrain=False, progress=said.append)
    assert model == str(tmp_path / "bert.model") and "finetune" in metrics
    assert any("using the trained model" in s for s in said)  # no retraining when a trained model is there


def test_build_benches_a_short_model_at_its_own_maximum():
    from toolchain.pipeline.stages import FULL_BENCH, bench_settings

    assert bench_settings(smoke=False, max_length=64)["seqs"] == (64,)  # not 128, which it cannot take
    assert bench_settings(smoke=False, max_length=512)["seqs"] == FULL_BENCH["seqs"]
    assert bench_settings(smoke=True, max_length=8)["seqs"] == (8,)


def test_build_cli_error_for_missing_recipe(capsys):
    assert main(["build", "models/nope.toml"]) == 2
    assert "does not exist" in capsys.readouterr().err
