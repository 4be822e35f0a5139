"""Recipe files: every bundled recipe parses; mistakes are errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import classifier_recipe

from toolchain.train.recipe import RecipeError, load_recipe

MODELS = Path(__file__).resolve().parents[2] / "models"
RECIPES = sorted(MODELS.glob("*.toml"))

MINIMAL = classifier_recipe(text_column=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_bundled_recipes_load_and_their_data_exists(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    splits = []
    if recipe.data:
        splits += [recipe.data.train, recipe.data.dev]
    if recipe.pretrain:
        splits += recipe.pretrain.data
    for split in filter(None, splits):
        assert recipe.resolve(split.path).is_file(), split.path  # data ships in models/data, not ../shared


def test_minimal_recipe(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL))
    assert r.task == "text-classification" and r.train.epochs == 1.0 and r.train.batch_size == 32
    assert r.resolve("train.tsv") == (tmp_path / "train.tsv").resolve()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: "flavour = 1\n" + t, "unknown key 'flavour'; allowed keys are name, task"),
        (lambda t: t.replace("epochs = 1.0", "epochs = 1.0\nepochz = 2"), "unknown key 'epochz'; allowed keys are epochs, max_steps"),
        (lambda t: t.replace('label = "label"', 'label = "label"\ncolumn = "x"'), "unknown key 'column'; allowed keys are path, text, label, limit"),
        (lambda t: t.replace('task = "text-classification"', 'task = "summarization"'), "task 'summarization' is not supported"),
        (lambda t: t.replace('pretrained = "x"', 'pretrained = "x"\narchitecture = "bert"'), "exactly one of 'pretrained' or 'architecture'"),
        (lambda t: t.replace('pretrained = "x"', 'architecture = "lstm"'), "architecture 'lstm' is not known"),
        (lambda t: t.replace('labels = ["negative", "positive"]', ""), "needs 'labels'"),
        (lambda t: t.replace('labels = ["negative", "positive"]', 'labels = ["a", "a"]'), "distinct class names"),
        (lambda t: t.replace("epochs = 1.0", "epochs = 1.0\nbatch_size = 0"), "batch_size must be positive"),
        (lambda t: t.replace("[source]\npretrained = \"x\"\n", ""), "give exactly one of"),
        (lambda t: t + '\n[model]\nmodule = "m:build"\n', "give exactly one of"),
        (lambda t: t.replace('path = "train.tsv"', 'path = "../../etc/passwd"'), None),
        (lambda t: t + "\n[[[broken", "is not valid TOML"),
    ],
)
def test_mistakes_are_clear_errors(tmp_path, edit, message):
    path = write(tmp_path, edit(MINIMAL))
    if message is None:  # a path escaping the recipe's folder fails when it is resolved
        recipe = load_recipe(path)
        with pytest.raises(RecipeError, match="escapes the recipe's folder; give an absolute path"):
            recipe.resolve(recipe.data.train.path)
        return
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_absolute_paths_are_allowed_on_purpose(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL.replace('path = "train.tsv"', 'path = "/data/train.tsv"')))
    assert r.resolve(r.data.train.path) == Path("/data/train.tsv")


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")
