"""Training learns: on an easy synthetic task the dev loss goes down from the starting model's and the
dev accuracy beats chance by a wide margin (a trainer that changes nothing, e.g. learning rate 0, fails)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from toolchain.train import train

POSITIVE = ["great", "wonderful", "superb", "delightful", "brilliant", "excellent"]
NEGATIVE = ["awful", "terrible", "dreadful", "boring", "horrible", "dull"]
FILLER = ["the", "film", "was", "plot", "story", "acting", "and", "it", "really", "quite"]


def _rows(n: int, seed: int) -> list[tuple[int, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append((label, " ".join(words)))
    return rows


def _write(path, rows):
    path.write_text("label\tsentence\n" + "".join(f"{y}\t{t}\n" for y, t in rows))


def _dev_loss_and_accuracy(model_dir, rows) -> tuple[float, float]:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    enc = tok([t for _, t in rows], padding=True, return_tensors="pt")
    labels = torch.tensor([y for y, _ in rows])
    with torch.inference_mode():
        out = model(**enc, labels=labels)
    return float(out.loss), float((out.logits.argmax(-1) == labels).float().mean())


def test_finetune_learns_an_easy_task(tiny_model, tmp_path):
    start = tiny_model("bert", "text-classification")
    _write(tmp_path / "train.tsv", _rows(256, seed=1))
    dev = _rows(64, seed=2)
    _write(tmp_path / "dev.tsv", dev)
    (tmp_path / "r.toml").write_text("\n".join([
        'task = "text-classification"', 'labels = ["negative", "positive"]',
        "[source]", f'pretrained = "{start}"',
        "[data.train]", 'path = "train.tsv"', 'label = "label"',
        "[data.dev]", 'path = "dev.tsv"', 'label = "label"',
        "[train]", "max_steps = 60", "batch_size = 16", "learning_rate = 0.003", "max_length = 16",
        "warmup_ratio = 0.0", "logging_steps = 10", "save_steps = 1000", "seed = 0",
    ]) + "\n")
    loss_before, acc_before = _dev_loss_and_accuracy(start, dev)
    result = train(tmp_path / "r.toml", out=tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "training.json").read_text())
    loss_after, acc_after = _dev_loss_and_accuracy(tmp_path / "out", dev)

    assert metrics["dev_accuracy"] == pytest.approx(acc_after, abs=1e-6)  # training.json reports the real number
    assert loss_after < 0.5 * loss_before, (loss_before, loss_after)
    assert acc_after >= 0.9, (acc_before, acc_after)  # chance is 0.5 (balanced dev set)
    assert metrics["dev_accuracy"] >= 0.9 and result.metrics["finetune"]["step"] == 60
    assert np.isfinite(metrics["train_loss"]) and metrics["train_loss"] < loss_before
