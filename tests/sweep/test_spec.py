"""--sizes and --tokens: the three spellings, the derived recipes, and one-sentence refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolchain.cli.commands import main
from toolchain.runtime.errors import ToolchainError
from toolchain.sweep.spec import derive, parse_sizes, parse_tokens, plan
from toolchain.train.recipe import load_recipe

MODELS = Path(__file__).resolve().parents[2] / "models"
LLAMA = MODELS / "shakespeare-llama.toml"


def test_the_three_spellings():
    grid = parse_sizes("hidden=64,128;layers=1,2")
    assert [s.name for s in grid] == ["h64-l1", "h64-l2", "h128-l1", "h128-l2"]
    assert [s.name for s in parse_sizes("64x1, 128x2")] == ["h64-l1", "h128-l2"]
    ladder = parse_sizes("ladder")
    assert len(ladder) >= 6 and ladder[0].axes == (("hidden", 64), ("layers", 1))
    assert [s.name for s in parse_sizes("d_model=32,64")] == ["d_model32", "d_model64"]


@pytest.mark.parametrize("spec, words", [
    ("", "is empty"), ("huge", "is not a preset"), ("hidden=64,abc", "'abc' is not a positive integer"),
    ("hidden=;layers=1", "has no values"), ("hidden=64;hidden=128", "axis 'hidden' twice"),
    ("64x1,64x1", "h64-l1 twice"), ("64x1", "gives one size"), ("64x1x2,32x1", "is not HIDDENxLAYERS"),
    ("hidden=0,64", "'0' is not a positive integer"), ("1bad=1,2", "is not KEY=V1,V2"),
])
def test_bad_sizes_are_one_sentence(spec, words):
    with pytest.raises(ToolchainError) as err:
        parse_sizes(spec)
    message = str(err.value)
    assert words in message and message.count(". ") == 0 and message.endswith(".")


def test_tokens():
    assert parse_tokens(None) == [None]
    assert parse_tokens("400k") == [400_000]
    assert parse_tokens("2M,100k,1.5k") == [1500, 100_000, 2_000_000]
    for bad in ("lots", "0", "100k,100k"):
        with pytest.raises(ToolchainError, match="--tokens"):
            parse_tokens(bad)


def test_a_size_changes_width_and_depth_only():
    recipe = load_recipe(LLAMA)
    points = plan(recipe, parse_sizes("64x1,96x2,256x4"), parse_tokens("400k"))
    small, odd, full = (p.recipe for p in points)
    assert small.source.config["num_attention_heads"] == 2 and small.source.config["num_key_value_heads"] == 1
    assert small.source.config["intermediate_size"] == 176 and small.source.config["num_hidden_layers"] == 1
    assert odd.source.config["num_attention_heads"] == 3 and odd.source.config["num_key_value_heads"] == 1
    assert full.source.config == recipe.source.config  # the recipe's own size comes back unchanged
    assert {p.recipe.train.max_steps for p in points} == {98}  # 400k / (16 x 256) blocks
    assert all(p.recipe.data == recipe.data and p.recipe.export == recipe.export for p in points)
    assert recipe.source.config["hidden_size"] == 256 and recipe.train.max_steps == -1  # the loaded recipe untouched
    assert len({p.key for p in points}) == 3 and [p.name for p in points][0] == "h64-l1-t400k"


def test_a_module_recipe_takes_its_config_keys():
    recipe = load_recipe(MODELS / "transformer-cls-sst2.toml")
    (size,) = parse_sizes("d_model=32,64")[:1]
    assert derive(recipe, size, None, size.name).model.config["d_model"] == 32
    with pytest.raises(ToolchainError, match="not a key of the recipe's"):
        derive(recipe, parse_sizes("hidden=32,64")[0], None, "x")


def test_sizes_the_recipe_cannot_take():
    recipe = load_recipe(LLAMA)
    with pytest.raises(ToolchainError, match="multiple of 32"):
        derive(recipe, parse_sizes("hidden=48,64")[0], None, "x")
    with pytest.raises(ToolchainError, match="neither hidden, layers nor a llama config key"):
        derive(recipe, parse_sizes("width=48,64")[0], None, "x")
    with pytest.raises(ToolchainError, match="size is fixed"):
        derive(load_recipe(MODELS / "minilm-sst2.toml"), parse_sizes("64x1,128x1")[0], None, "x")


@pytest.mark.parametrize("argv, words", [
    (["--sizes", "hidden=64,abc"], "is not a positive integer"),
    (["--sizes", "64x1,128x1", "--tokens", "many"], "--tokens"),
    (["--sizes", "64x1,128x1", "--budget-ms", "-1"], "--budget-ms must be a positive number"),
])
def test_cli_refuses_bad_specs_without_a_traceback(argv, words, capsys, tmp_path):
    assert main(["sweep", str(LLAMA), "--out", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # refused before any work


def test_set_overrides_the_shared_schedule_only():
    from toolchain.sweep.spec import with_schedule

    recipe = load_recipe(LLAMA)
    tuned = with_schedule(recipe, ["train.batch_size=8", "train.max_length=128"])
    (point, _) = plan(tuned, parse_sizes("64x1,128x2"), parse_tokens("400k"))
    assert point.recipe.train.batch_size == 8 and point.recipe.train.max_steps == 391  # 400k / (8 x 128)
    assert recipe.train.batch_size == 16 and with_schedule(recipe, None) == recipe
    for bad, words in ((["batch_size=8"], "is not KEY=VALUE"), (["train.nope=1"], "is not KEY=VALUE"),
                       (["train.batch_size=abc"], "not a TOML number"), (["train.batch_size=0"], "must be positive")):
        with pytest.raises(ToolchainError, match=words):
            with_schedule(recipe, bad)
