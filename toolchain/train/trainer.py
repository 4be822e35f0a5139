"""Train: finetune or pretrain-then-finetune a model from a recipe with transformers' Trainer.

Writes a Hugging Face model dir (safetensors weights, fast tokenizer, labels in config.json, and
training.json with the dev metrics), atomically. Checkpoints live beside the output and make an
interrupted run resume where it stopped; they are removed once the model is written.

The stages themselves (per task, in STAGES) are in stages.py, fitting and saving in fit.py, tokenizers
trained from scratch in tokenizers.py; this module only sequences them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toolchain.artifact.atomic import writing
from toolchain.export.source import import_optional
from toolchain.train.fit import checkpoints_dir
from toolchain.train.module_stage import train_module
from toolchain.train.seq2seq_stage import train_seq2seq
from toolchain.train.recipe import Recipe, RecipeError, load_recipe
from toolchain.runtime.tasks import Unsupported
from toolchain.train.stages import HELD_OUT, STAGES, pretrain

__all__ = ["HELD_OUT", "MODULE_STAGES", "STAGES", "TrainResult", "default_out", "train"]

# The stage per task for a recipe's own nn.Module ([model] module = "pkg.mod:build").
MODULE_STAGES: dict[str, Any] = {"text-classification": train_module, "text2text-generation": train_seq2seq}


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, Any]


def default_out(recipe: Recipe) -> Path:
    """Where a recipe's trained model goes by default: dist/NAME.model."""
    return Path("dist") / f"{recipe.name}.model"


def train(recipe: str | Path | Recipe, out: str | Path | None = None, smoke: bool = False,
          progress: Callable[[str], None] = lambda msg: None) -> TrainResult:
    """Run the recipe's [pretrain] (if any) and [train] stages; return the trained model dir and its metrics."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out) if out else default_out(recipe)
    if recipe.train is None and recipe.pretrain is None:
        raise RecipeError(f"{recipe.path} has no [train] or [pretrain] section; there is nothing to train.")
    import_optional("torch")
    base, metrics = None, {}
    pre_out = out.with_name(out.name + ".pretrained")
    # A full disk or read-only --out, in the checkpoints or the final save, is one sentence, not a traceback.
    with writing(out, in_place=False, also=(checkpoints_dir(out), pre_out, checkpoints_dir(pre_out))):
        if recipe.model is not None:  # a user's own nn.Module ([model] module = "pkg.mod:build")
            if recipe.task not in MODULE_STAGES:
                raise RecipeError(f"{recipe.path}: [model] recipes train {' or '.join(MODULE_STAGES)} modules, not "
                                  f"{recipe.task!r}; set task to one of those.")
            metrics["finetune"] = MODULE_STAGES[recipe.task](recipe, out, smoke, progress)
            return TrainResult(out, metrics)
        if recipe.pretrain is not None:
            base, metrics["pretrain"] = pretrain(recipe, pre_out, smoke, progress)
        if recipe.train is not None:
            stage = STAGES.get(recipe.task)
            if not callable(stage):
                why = f" ({stage.reason})" if isinstance(stage, Unsupported) else ""
                trainable = ", ".join(t for t, s in STAGES.items() if callable(s))
                raise RecipeError(f"{recipe.path}: training for task {recipe.task!r} is not supported{why}; "
                                  f"recipes can train {trainable}.")
            metrics["finetune"] = STAGES[recipe.task](recipe, base, out, smoke, progress)
            return TrainResult(out, metrics)
    return TrainResult(base, metrics)
