"""Training a recipe's own nn.Module from scratch: ``[model] module = "package.module:build"``.

The tokenizer is trained here on the training split (tokenizers.plain_wordpiece); ``build`` gets the
recipe's [model.config] with ``vocab_size`` set to the trained tokenizer's size. Then a plain PyTorch loop:
AdamW with linear warmup and decay, seeded, batches padded to their longest item (items of similar
length batched together), gradient clipping. Dev accuracy as the Hugging Face stages report it.

Writes a *module directory* (toolchain/export/modules.py: MODULE_FILE, safetensors weights,
tokenizer.json) plus training.json, atomically: a bad entry point, a failed run or Ctrl-C writes nothing.
Checkpoints every save_steps beside it let an interrupted run resume; under torchrun the loop runs as DDP
(module_ddp.py: each process a share of every global batch, rank 0 writes).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolchain.artifact import atomic_dir
from toolchain.data.texts import TextSet, read_split
from toolchain.export.modules import MODULE_FILE, TOKENIZER_FILE, WEIGHTS_FILE, build_module, module_dir_record
from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import ToolchainError
from toolchain.train.fit import checkpoints_dir
from toolchain.train.module_ddp import Group, load_checkpoint, resumable, save_checkpoint, shared_tokenizer
from toolchain.train.recipe import Recipe, RecipeError, Training
from toolchain.train.stages import SMOKE, smoke_limit, smoke_settings
from toolchain.train.tokenizers import PAD, plain_wordpiece

DEFAULT_VOCAB = 8000  # the tokenizer's size when [model.config] names no vocab_size
SORT_WINDOW = 50  # batches: items are sorted by length within windows this many batches wide
# These models are small: their ops are too short to split across threads. On a busy 2-core machine two
# threads spin-waiting for each other made a training step 10-40x slower than one thread (measured).
THREADS = 1


def train_module(recipe: Recipe, out: Path, smoke: bool, progress) -> dict[str, Any]:
    """Train the recipe's module on its labelled split; write the module dir OUT; return the metrics."""
    import torch

    if recipe.task != "text-classification":
        raise RecipeError(f"{recipe.path}: [model] recipes train text-classification modules, not {recipe.task!r}; "
                          "set task = \"text-classification\".")
    entry, search = recipe.model.module, recipe.folder
    vocab = int(recipe.model.config.get("vocab_size", DEFAULT_VOCAB))
    build_checked(entry, {**recipe.model.config, "vocab_size": vocab}, search)  # bad entry point/config/IO: fail before any work
    settings = smoke_settings(recipe.train, smoke)
    if int(recipe.model.config.get("max_length", settings.max_length)) < settings.max_length:
        raise RecipeError(f"{recipe.path}: [model.config] max_length is below [train] max_length "
                          f"({settings.max_length}); raise it or shorten [train] max_length.")
    train, dev = _splits(recipe, smoke)
    group, ckpt = Group.from_env(), checkpoints_dir(out)
    tok = shared_tokenizer(group, ckpt, resumable(ckpt), lambda: plain_wordpiece(train.texts, vocab, settings.max_length))
    config = {**recipe.model.config, "vocab_size": tok.get_vocab_size()}
    torch.manual_seed(settings.seed)
    module, _ = build_checked(entry, config, search)
    params = sum(p.numel() for p in module.parameters())
    progress(f"training {entry} ({params / 1e6:.2f}M parameters, vocab {tok.get_vocab_size()}) "
             f"on {len(train.texts)} examples" + (f", {group.world} processes" if group.world > 1 else ""))
    started, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        losses = fit_module(module, _encode(tok, train), settings, progress, ckpt=ckpt, tok=tok)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {"entry": entry, "config": config, "parameters": params,
                               "train_examples": len(train.texts), "train_seconds": round(seconds, 1),
                               "settings": asdict(settings), "losses": losses, "world_size": group.world,
                               "train_loss": losses[-1]["loss"] if losses else None}
    if group.rank != 0:  # the others hold the same weights; rank 0 evaluates and writes
        return metrics
    if dev is not None:
        metrics.update(_dev_metrics(recipe, module, _encode(tok, dev), settings.batch_size, smoke, progress))
    record = module_dir_record(entry, config, recipe.task, recipe.labels, settings.max_length,
                               tok.token_to_id(PAD), search)
    save_module_dir(out, module, tok, record, metrics)
    shutil.rmtree(ckpt, ignore_errors=True)
    return metrics


def build_checked(entry: str, config: dict[str, Any], search: Path):
    """build_module, with an exception raised by the entry point itself (a config it rejects) as one sentence."""
    try:
        return build_module(entry, config, search)
    except ToolchainError:
        raise
    except Exception as exc:
        raise RecipeError(f"{entry} failed on the recipe's [model.config] ({first_line(exc)}); fix [model.config] "
                          "or the build function.") from None


def _dev_metrics(recipe: Recipe, module, dev: list, batch_size: int, smoke: bool, progress) -> dict[str, Any]:
    """Dev accuracy, and whether it reached the recipe's [gate] min_accuracy (not judged on a smoke run)."""
    accuracy = accuracy_of(module, dev, batch_size)
    progress(f"dev accuracy {accuracy:.4f} on {len(dev)} examples")
    metrics: dict[str, Any] = {"dev_accuracy": accuracy, "dev_examples": len(dev)}
    if recipe.gate.min_accuracy is not None and not smoke:
        metrics.update({"min_accuracy": recipe.gate.min_accuracy,
                        "reached_min_accuracy": accuracy >= recipe.gate.min_accuracy})
    return metrics


def _splits(recipe: Recipe, smoke: bool) -> tuple[TextSet, TextSet | None]:
    """The labelled training split and the dev split (None when the recipe has none), smoke-limited."""
    data = recipe.data
    train = read_split(recipe.resolve(data.train.path), smoke_limit(data.train, smoke, SMOKE["examples"]), recipe.labels)
    dev = None
    if data.dev is not None:
        dev = read_split(recipe.resolve(data.dev.path), smoke_limit(data.dev, smoke, SMOKE["dev"]), recipe.labels)
    return train, dev


def _encode(tok, split: TextSet) -> list[tuple[list[int], int]]:
    """(token ids, label) per example; truncated at the tokenizer's max_length, not padded."""
    tok.no_padding()
    try:
        return [(e.ids, label) for e, label in zip(tok.encode_batch(split.texts), split.labels)]
    finally:
        tok.enable_padding(pad_id=tok.token_to_id(PAD), pad_token=PAD)


def pad_batch(items: list[tuple[list[int], int]]):
    """Right-pad to the longest item: (input_ids (B, T), attention_mask (B, T), labels (B,)) int64 tensors."""
    import torch

    width = max(len(ids) for ids, _ in items)
    ids = torch.zeros((len(items), width), dtype=torch.int64)  # [PAD] is id 0
    mask = torch.zeros((len(items), width), dtype=torch.int64)
    for row, (seq, _) in enumerate(items):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
        mask[row, : len(seq)] = 1
    return ids, mask, torch.tensor([label for _, label in items], dtype=torch.int64)


def batches(examples: list, batch_size: int, rng: random.Random) -> list[list]:
    """One epoch's batches: shuffled, then sorted by length within windows (less padding), batch order shuffled."""
    order = list(examples)
    rng.shuffle(order)
    window = batch_size * SORT_WINDOW
    out = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda e: len(e[0]))
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def classifier_loss(module, batch: list, settings: Training):
    """Cross-entropy of a text classifier on one batch of (token ids, label)."""
    import torch

    ids, mask, labels = pad_batch(batch)
    return torch.nn.functional.cross_entropy(module(ids, mask), labels)


def fit_module(module, examples: list, settings: Training, progress, step_loss=classifier_loss,
               ckpt: Path | None = None, tok=None) -> list[dict[str, float]]:
    """Train MODULE in place (STEP_LOSS(module, batch, settings), AdamW, linear warmup then decay); the logged
    losses. Batches group EXAMPLES of similar length (their first item's length). Under torchrun each process
    takes its share of every batch (module_ddp.py). CKPT: where to keep checkpoints (every save_steps steps,
    with TOK) and resume from the newest; None keeps none."""
    import torch

    group = Group.from_env()
    rng = random.Random(settings.seed)
    per_epoch = math.ceil(len(examples) / settings.batch_size)
    total = settings.max_steps if settings.max_steps > 0 else max(1, math.ceil(settings.epochs * per_epoch))
    warmup = int(settings.warmup_ratio * total)
    optimizer = torch.optim.AdamW(module.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    resume = resumable(ckpt)
    loop = load_checkpoint(resume, module, optimizer, schedule) if resume else {}
    if resume:
        progress(f"resuming from the last checkpoint in {ckpt} ({resume.name})")
    start, logged = loop.get("step", 0), loop.get("logged", [])
    running, seen = loop.get("running", 0.0), loop.get("seen", 0)
    model = group.wrap(module)  # after the weights are restored: DDP broadcasts rank 0's
    module.train()
    step = 0
    while step < total:
        for batch in batches(examples, settings.batch_size, rng):  # replayed from the seed up to a resumed step
            step += 1
            if step <= start:
                continue
            shard, weight = group.shard(batch)
            loss = step_loss(model, shard, settings) * weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            running, seen = running + group.mean(loss), seen + 1
            if step % settings.logging_steps == 0 or step == total:
                logged.append({"step": step, "epoch": round(step / per_epoch, 3), "loss": running / seen})
                progress(f"step {step}/{total}  epoch {step / per_epoch:.2f}  loss {running / seen:.4f}")
                running, seen = 0.0, 0
            if ckpt is not None and step % settings.save_steps == 0 and step < total:
                save_checkpoint(ckpt, step, module, optimizer, schedule, tok,
                                {"logged": logged, "running": running, "seen": seen, "world_size": group.world})
            if step >= total:
                break
    module.eval()
    return logged


def accuracy_of(module, examples: list, batch_size: int) -> float:
    """Share of EXAMPLES whose argmax logit is the label (module in eval mode, no gradients)."""
    import torch

    module.eval()
    right = 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            ids, mask, labels = pad_batch(examples[start : start + batch_size])
            right += int((module(ids, mask).argmax(-1) == labels).sum())
    return right / max(1, len(examples))


def save_module_dir(out: Path, module, tok, record: dict[str, Any], metrics: dict[str, Any],
                    extra: dict[str, str] | None = None) -> None:
    """Write the module dir OUT in one step: MODULE_FILE, safetensors weights, tokenizer.json, training.json,
    and EXTRA (file name -> text, such as the evaluation pairs of a translation module)."""
    from safetensors.torch import save_file

    with atomic_dir(out, marker="training.json") as tmp:
        state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        tok.save(str(tmp / TOKENIZER_FILE))
        (tmp / MODULE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (tmp / "training.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n", encoding="utf-8")
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
