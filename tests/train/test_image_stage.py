"""The image-classification training stage: a ViT from its config trained on an image table, saved with its
image processor, with accuracy on seen and held-out rows; recipes are checked for image columns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiny_vision import LABELS, shapes_table
from toolchain.train.recipe import RecipeError, load_recipe
from toolchain.train.stages import STAGES
from toolchain.train.trainer import train

RECIPE = """task = "image-classification"
labels = {labels}
[source]
architecture = "vit"
[source.config]
image_size = 32
patch_size = 8
hidden_size = 16
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 32
[data.train]
path = "data/train.tsv"
{train_image}label = "label"
[data.dev]
path = "data/dev.tsv"
image = "image"
label = "label"
[train]
epochs = 1.0
batch_size = 8
learning_rate = 1e-3
augment = {augment}
"""


def recipe(folder, labels=LABELS, train_image='image = "image"\n', augment=("flip", "rotate90", "grayscale")):
    shapes_table(folder / "data", 16, "train")
    shapes_table(folder / "data", 16, "dev")
    path = folder / "r.toml"
    path.write_text(RECIPE.format(labels=json.dumps(labels), train_image=train_image, augment=json.dumps(augment)))
    return path


def test_trains_a_vit_and_saves_its_image_processor(tmp_path):
    import transformers

    result = train(recipe(tmp_path), out=tmp_path / "model")
    out = result.model_dir
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "training.json"} <= files
    assert not (out.parent / "model.checkpoints").exists()
    metrics = json.loads((out / "training.json").read_text())
    assert metrics["train_examples"] == 16 and metrics["dev_examples"] == 16
    assert metrics["dev_seen_examples"] + metrics["dev_heldout_examples"] == 16  # the table's heldout column
    assert 0 <= metrics["dev_heldout_accuracy"] <= 1 and metrics["train_seconds"] >= 0
    config = transformers.AutoConfig.from_pretrained(out)
    assert config.id2label == dict(enumerate(LABELS)) and config.image_size == 32
    processor = transformers.AutoImageProcessor.from_pretrained(out, use_fast=False)
    assert processor.size == {"height": 32, "width": 32}


def test_image_classification_has_a_stage():
    assert callable(STAGES["image-classification"])


def test_recipes_name_the_image_column_and_distinct_labels(tmp_path):
    with pytest.raises(RecipeError, match=r"split needs an 'image' column for image-classification"):
        load_recipe(recipe(tmp_path, train_image=""))
    with pytest.raises(RecipeError, match="needs 'labels', a list of distinct class names"):
        load_recipe(recipe(tmp_path, labels=["a", "a"]))
    with pytest.raises(RecipeError, match=r"augment 'blur' is not known; use a list of names from flip, rotate90, "):
        load_recipe(recipe(tmp_path, augment=["flip", "blur"]))


def test_augmentations_keep_the_picture_and_change_the_view():
    import transformers

    from toolchain.train.image_stage import AUGMENTATIONS, _collator
    from toolchain.train.recipe import IMAGE_AUGMENTATIONS

    assert set(AUGMENTATIONS) == set(IMAGE_AUGMENTATIONS)
    processor = transformers.ViTImageProcessor(size={"height": 8, "width": 8}, do_normalize=False, do_resize=False)
    corner = np.zeros((8, 8, 3), np.uint8)
    corner[0, 0] = (240, 10, 10)  # one red pixel in the top-left corner
    batch = [{"pixel_values": corner, "labels": 2}] * 64
    plain = _collator(processor)(batch)
    assert (plain["pixel_values"].numpy()[:, 0, 0, 0] > 0.9).all() and plain["labels"].tolist() == [2] * 64
    turned = _collator(processor, ["flip", "rotate90"], seed=1)(batch)["pixel_values"].numpy()
    where = {tuple(np.argwhere(p[0] > 0.5)[0]) for p in turned}
    assert where == {(0, 0), (0, 7), (7, 0), (7, 7)}  # the pixel moved to every corner, and stayed one pixel
    grey = _collator(processor, ["grayscale"], seed=1)(batch)["pixel_values"].numpy()
    is_grey = (grey[:, 0] == grey[:, 1]).all(axis=(1, 2))
    assert 0.25 < is_grey.mean() < 0.75
