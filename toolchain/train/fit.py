"""Fitting and saving: transformers' Trainer with checkpoints beside the output (an interrupted run
resumes from the last complete one), a progress bar with loss and examples/s, and the atomic save of the
trained model dir (safetensors weights, tokenizer, training.json)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from toolchain.artifact.atomic import atomic_dir
from toolchain.train.recipe import RecipeError, Training


class ListDataset:
    """A list of feature dicts as a map-style dataset (what Trainer needs, without the datasets package)."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def progress_callback():
    from transformers.trainer_callback import ProgressCallback

    class LossAndThroughput(ProgressCallback):
        """The usual bar, with loss and examples/s in its postfix instead of printed dicts."""

        started = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                seen = state.global_step * args.per_device_train_batch_size * args.world_size
                rate = seen / max(1e-9, time.perf_counter() - self.started)
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", ex_s=f"{rate:.1f}")

    return LossAndThroughput


def fit(model, tok, rows, collator, settings: Training, out: Path, progress, group_by_length: bool):
    """Trainer.train with checkpoints beside OUT, resuming from the last one if a run was interrupted."""
    import torch
    import transformers
    from transformers.trainer_callback import ProgressCallback

    if not rows:
        raise RecipeError("the training split produced no examples; check the data file and its limit.")
    ckpt = checkpoints_dir(out)
    resume = last_complete_checkpoint(ckpt)
    if resume:
        progress(f"resuming from the last checkpoint in {ckpt} ({resume.name})")
    args = transformers.TrainingArguments(
        output_dir=str(ckpt), per_device_train_batch_size=per_device_batch(settings.batch_size), per_device_eval_batch_size=64,
        learning_rate=settings.learning_rate, num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        warmup_ratio=settings.warmup_ratio, weight_decay=settings.weight_decay, lr_scheduler_type="linear",
        logging_steps=settings.logging_steps, save_steps=settings.save_steps, save_total_limit=1,
        save_safetensors=True, eval_strategy="no", report_to=[], seed=settings.seed,
        group_by_length=group_by_length, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ListDataset(rows), data_collator=collator,
                                   processing_class=tok)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(progress_callback())
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    history = trainer.state.log_history  # the last entry (train summary) goes into training.json
    if history:
        history[-1].update(loss_curve=[h["loss"] for h in history if "loss" in h], world_size=args.world_size)
    return trainer, time.perf_counter() - started


def world_size() -> int:
    """Processes training together: torchrun sets WORLD_SIZE in each (train/distributed.py), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_device_batch(batch_size: int) -> int:
    """The recipe's batch_size is the global batch: under torchrun each of the WORLD_SIZE processes takes an
    equal share, so a recipe learns the same whether it runs as 1 process or N (same steps, same examples)."""
    n = world_size()
    if batch_size % n:
        raise RecipeError(f"batch_size {batch_size} does not split evenly over {n} processes; make it a multiple of {n}.")
    return batch_size // n


def checkpoints_dir(out: Path) -> Path:
    """Where the Trainer's checkpoints for OUT live: beside it, removed once OUT is written."""
    return out.with_name(out.name + ".checkpoints")


def last_complete_checkpoint(ckpt: Path) -> Path | None:
    """The newest checkpoint that was completely written, or None. Trainer writes trainer_state.json
    last, so a run killed while saving leaves a checkpoint without it (or with half of it): such
    checkpoints are removed, never resumed from."""
    def step(p: Path) -> int:
        tail = p.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    for p in sorted((p for p in ckpt.glob("checkpoint-*") if p.is_dir() and step(p) >= 0), key=step, reverse=True):
        try:
            json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
            return p
        except (OSError, ValueError):
            shutil.rmtree(p, ignore_errors=True)
    return None


def save_model(model, tok, out: Path, metrics: dict[str, Any], settings: Training, extra: dict[str, str] | None = None) -> None:
    """Write model, tokenizer, EXTRA text files and training.json into OUT atomically; drop the checkpoints.
    Under torchrun only global rank 0 writes (the others hold the same weights)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    with atomic_dir(out, marker="training.json") as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / "training.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    shutil.rmtree(checkpoints_dir(out), ignore_errors=True)
