"""Tiny image models and data for the image tests: a ViT built from its config (random weights) with a ViT image
processor, its exported artifact, and small shapes tables (rendered on the fly). Import the fixtures by name."""

from __future__ import annotations

from pathlib import Path

import pytest

LABELS = ["circle", "square", "triangle", "star"]
SIDE = 32  # the tiny model's image side: the 64x64 shapes are resized on the way in


def build_tiny_vit(out: Path, side: int = SIDE, processor: dict | None = None) -> Path:
    """Save a randomly initialised tiny ViTForImageClassification and its image processor into OUT."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=side, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=len(LABELS),
                                    id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    transformers.ViTForImageClassification(config).eval().save_pretrained(str(out), safe_serialization=True)
    settings = processor or {"size": {"height": side, "width": side}, "image_mean": [0.5, 0.4, 0.3],
                             "image_std": [0.2, 0.25, 0.3]}
    processor_out = transformers.ViTImageProcessor(**settings)
    processor_out.save_pretrained(str(out))
    return out


def shapes_table(folder: Path, n: int = 24, split: str = "dev", seed: int = 3) -> Path:
    """A small shapes TSV (its images drawn on first read) in FOLDER: the first N rows of a generated SPLIT."""
    from toolchain.data import shapes

    examples = shapes.generate(seed, {"train": n, "dev": n, "test": n})[split]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.tsv"
    path.write_text(shapes.to_tsv(examples), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("vit") / "vit")


@pytest.fixture(scope="session")
def vit_artifact(tiny_vit, tmp_path_factory) -> Path:
    from toolchain.export.core import export

    out = tmp_path_factory.mktemp("vitart") / "vit"
    export(tiny_vit, out, task="image-classification")
    return out


@pytest.fixture(scope="session")
def shapes_dev(tmp_path_factory) -> Path:
    return shapes_table(tmp_path_factory.mktemp("shapes"), 32)
