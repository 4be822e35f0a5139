"""The image-classification stage: a transformers image classifier (a ViT built from its config, or a pretrained
one) trained with fit.py on an image table (data/images.py), saved with its image processor.

The image processor (ViTImageProcessor: resize to the recipe's image size, rescale, normalise) is saved beside
the weights; export turns it into the artifact's preprocess section and parity checks that the runtime's own
preprocessing gives the same pixel values. Accuracy is reported on dev and test, and on their rows with and
without held-out colour-shape pairs (a ``heldout`` column) separately.
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.data.texts import TextSet, read_split
from toolchain.train.fit import fit, save_model
from toolchain.train.recipe import Recipe, RecipeError, Split
from toolchain.train.smoke import SMOKE, pretrained_dir, smoke_limit, smoke_settings

HELDOUT_COLUMN = "heldout"  # 1 where a row shows a combination never seen in training (data/shapes.py)
NORMALISE = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def _split(recipe: Recipe, split: Split | None, smoke: bool, n: int) -> TextSet | None:
    if split is None:
        return None
    return read_split(recipe.resolve(split.path), smoke_limit(split, smoke, n), recipe.labels)


def _model(recipe: Recipe, base: Path | None):
    """(model, image processor, where it started): a new architecture from its config, or a pretrained model."""
    import transformers

    labels = recipe.labels
    heads = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
             "label2id": {name: i for i, name in enumerate(labels)}}
    if recipe.source.architecture and base is None:
        config = transformers.AutoConfig.for_model(recipe.source.architecture, **{**recipe.source.config, **heads})
        side = int(getattr(config, "image_size", 224))
        processor = transformers.ViTImageProcessor(size={"height": side, "width": side}, **NORMALISE)
        return transformers.AutoModelForImageClassification.from_config(config), processor, \
            f"a {recipe.source.architecture} from scratch"
    start = str(base or pretrained_dir(recipe))
    trust = recipe.source.trust_remote_code
    model = transformers.AutoModelForImageClassification.from_pretrained(
        start, ignore_mismatched_sizes=True, use_safetensors=True, trust_remote_code=trust, **heads)
    processor = transformers.AutoImageProcessor.from_pretrained(start, use_fast=False, trust_remote_code=trust)
    return model, processor, start


def _rows(data: TextSet) -> list[dict[str, Any]]:
    """Each image decoded once, kept as uint8 HWC (the collator normalises a batch at a time)."""
    from PIL import Image

    rows = []
    for path, label in zip(data.images, data.labels):
        with Image.open(path) as im:
            rows.append({"pixel_values": np.asarray(im.convert("RGB"), dtype=np.uint8), "labels": int(label)})
    return rows


def _flip(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirrored left-right and/or upside down, each with probability 1/2."""
    if rng.random() < 0.5:
        im = im[:, ::-1]
    return im[::-1] if rng.random() < 0.5 else im


def _rotate90(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.rot90(im, int(rng.integers(4)))


def _grayscale(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half the images in grey, so the shape must be learnt apart from its colour."""
    if rng.random() < 0.5:
        return np.repeat(im.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
    return im


# [train] augment names (recipe.IMAGE_AUGMENTATIONS) -> a change to one HWC uint8 training image that keeps its
# label: a shape is the same shape mirrored or turned, and in grey.
AUGMENTATIONS = {"flip": _flip, "rotate90": _rotate90, "grayscale": _grayscale}


def _collator(processor, augment: list[str] = (), seed: int = 0):
    """Batches for the Trainer: the image processor's pixel values of the images, each changed first by the
    AUGMENT functions (drawn by a seeded generator)."""
    import torch

    rng = np.random.default_rng(seed)
    steps = [AUGMENTATIONS[name] for name in augment]

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        images = []
        for b in batch:
            im = b["pixel_values"]
            for step in steps:
                im = step(im, rng)
            images.append(np.ascontiguousarray(im))
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.tensor([b["labels"] for b in batch])}

    return collate


def _heldout_flags(path: Path, n: int) -> list[bool] | None:
    """The first N rows' held-out flags where the table has the column, else None."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",", quoting=csv.QUOTE_NONE)
        if HELDOUT_COLUMN not in (reader.fieldnames or []):
            return None
        return [row[HELDOUT_COLUMN].strip() == "1" for _, row in zip(range(n), reader)]


def _accuracy(trainer, data: TextSet, name: str, progress) -> dict[str, Any]:
    """Accuracy on DATA, and on its seen and held-out rows separately where the table marks them."""
    pred = trainer.predict(_rows(data)).predictions.argmax(-1)
    right = pred == np.asarray(data.labels)
    out: dict[str, Any] = {f"{name}_accuracy": float(right.mean()), f"{name}_examples": int(len(right))}
    flags = _heldout_flags(data.path, len(right))
    if flags is not None:
        held = np.asarray(flags, dtype=bool)
        for part, mask in (("seen", ~held), ("heldout", held)):
            if mask.any():
                out[f"{name}_{part}_accuracy"] = float(right[mask].mean())
                out[f"{name}_{part}_examples"] = int(mask.sum())
    parts = [f"{part} {out[f'{name}_{part}_accuracy']:.4f}" for part in ("seen", "heldout")
             if f"{name}_{part}_accuracy" in out]
    progress(f"{name} accuracy {out[f'{name}_accuracy']:.4f}" + (f" ({', '.join(parts)})" if parts else ""))
    return out


def train_image_classifier(recipe: Recipe, base: Path | None, out: Path, smoke: bool, progress) -> dict[str, Any]:
    """An image classifier trained on the recipe's image table; dev and test accuracy where the recipe has them."""
    settings = smoke_settings(recipe.train, smoke)
    train = _split(recipe, recipe.data.train, smoke, SMOKE["examples"])
    dev = _split(recipe, recipe.data.dev, smoke, SMOKE["dev"])
    test = _split(recipe, recipe.data.test, smoke, SMOKE["dev"])
    if train.images is None:
        raise RecipeError(f"{recipe.path}: {train.path} is not an image table; name its image column in the recipe.")
    import transformers

    transformers.set_seed(settings.seed)  # the new weights too: the same recipe trains the same model
    model, processor, start = _model(recipe, base)
    params = sum(p.numel() for p in model.parameters())
    progress(f"training {start} ({params / 1e6:.2f}M parameters) on {len(train.images)} images ({recipe.task})")
    collate = _collator(processor, settings.augment, settings.seed)
    trainer, seconds = fit(model, processor, _rows(train), collate, settings, out, progress, group_by_length=False)
    metrics: dict[str, Any] = {"train_examples": len(train.images), "train_seconds": round(seconds, 1),
                               "parameters": params, "settings": asdict(settings), "base": start}
    metrics.update(trainer.state.log_history[-1] if trainer.state.log_history else {})
    for name, data in (("dev", dev), ("test", test)):
        if data is not None:
            metrics.update(_accuracy(trainer, data, name, progress))
    if dev is not None and recipe.gate.min_accuracy is not None and not smoke:
        metrics["min_accuracy"] = recipe.gate.min_accuracy
        metrics["reached_min_accuracy"] = metrics["dev_accuracy"] >= recipe.gate.min_accuracy
    save_model(model, processor, out, metrics, settings)
    return metrics
