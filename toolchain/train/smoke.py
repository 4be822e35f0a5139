"""Shared by the training stages: the pretrained model's directory, and the cut-down settings and splits of a
smoke run (--smoke). stages.py re-exports these names; the per-task stage modules import them from here, so
stages.py can register them in STAGES without an import cycle."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from toolchain.export.source import resolve
from toolchain.train.recipe import Recipe, Split, Training

SMOKE = {"examples": 64, "dev": 32, "steps": 3, "batch": 8, "max_length": 32}


def pretrained_dir(recipe: Recipe) -> Path:
    """The pretrained model's local dir; pickle-only weights and untrusted remote code are refused."""
    return resolve(recipe.source.pretrained, trust_remote_code=recipe.source.trust_remote_code).path


def smoke_settings(training: Training, smoke: bool) -> Training:
    """TRAINING as is, or cut to a few short steps for a smoke run (--smoke)."""
    if not smoke:
        return training
    return replace(training, max_steps=SMOKE["steps"], batch_size=SMOKE["batch"],
                   max_length=min(training.max_length, SMOKE["max_length"]), logging_steps=1, save_steps=2)


def smoke_limit(split: Split, smoke: bool, n: int) -> Split:
    """SPLIT as is, or limited to N examples for a smoke run."""
    return replace(split, limit=min(split.limit or n, n)) if smoke else split
