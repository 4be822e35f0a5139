"""Train: finetune or pretrain-then-finetune a model from a recipe with transformers' Trainer.

Writes a Hugging Face model dir (safetensors weights, fast tokenizer, labels in config.json, and
training.json with the dev metrics), atomically. Checkpoints live beside the output and make an
interrupted run resume where it stopped; they are removed once the model is written.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from toolchain.artifact.atomic import atomic_dir, writing
from toolchain.data.texts import read_split
from toolchain.train.recipe import Recipe, RecipeError, Split, Training, load_recipe
from toolchain.export.source import import_optional, resolve

HELD_OUT = "heldout.txt"  # language models: the validation text, for the quantization gate
SMOKE = {"examples": 64, "dev": 32, "steps": 3, "batch": 8, "max_length": 32}


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, Any]


def default_out(recipe: Recipe) -> Path:
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
    with writing(out, in_place=False, also=(_checkpoints(out), pre_out, _checkpoints(pre_out))):
        if recipe.pretrain is not None:
            base, metrics["pretrain"] = _pretrain(recipe, pre_out, smoke, progress)
        if recipe.train is not None:
            if recipe.task not in STAGES:
                raise RecipeError(f"{recipe.path}: training for task {recipe.task!r} is not supported; "
                                  f"recipes can train {', '.join(STAGES)}.")
            metrics["finetune"] = STAGES[recipe.task](recipe, base, out, smoke, progress)
            return TrainResult(out, metrics)
    return TrainResult(base, metrics)


# -- stages -----------------------------------------------------------------------------------------
def _settings(training: Training, smoke: bool) -> Training:
    if not smoke:
        return training
    return replace(training, max_steps=SMOKE["steps"], batch_size=SMOKE["batch"],
                   max_length=min(training.max_length, SMOKE["max_length"]), logging_steps=1, save_steps=2)


def _limit(split: Split, smoke: bool, n: int) -> Split:
    return replace(split, limit=min(split.limit or n, n)) if smoke else split


def _finetune(recipe: Recipe, base: Path | None, out: Path, smoke: bool, progress) -> dict[str, Any]:
    import transformers

    settings = _settings(recipe.train, smoke)
    start_from = base or _pretrained_dir(recipe)
    labels = recipe.labels
    train = read_split(recipe.resolve(recipe.data.train.path), _limit(recipe.data.train, smoke, SMOKE["examples"]), labels)
    dev = None
    if recipe.data.dev is not None:
        dev = read_split(recipe.resolve(recipe.data.dev.path), _limit(recipe.data.dev, smoke, SMOKE["dev"]), labels)
    progress(f"finetuning {start_from} on {len(train.texts)} examples ({recipe.task})")
    trust = recipe.source.trust_remote_code
    tok = transformers.AutoTokenizer.from_pretrained(str(start_from), use_fast=True, trust_remote_code=trust)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(start_from), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)}, ignore_mismatched_sizes=True, use_safetensors=True,
        trust_remote_code=trust)

    def encode(split):
        enc = tok(split.texts, truncation=True, max_length=settings.max_length)
        return [{"input_ids": ids, "attention_mask": m, "labels": y}
                for ids, m, y in zip(enc["input_ids"], enc["attention_mask"], split.labels)]

    collator = transformers.DataCollatorWithPadding(tok)
    trainer, seconds = _fit(model, tok, encode(train), collator, settings, out, progress, group_by_length=True)
    metrics: dict[str, Any] = {"train_examples": len(train.texts), "train_seconds": round(seconds, 1),
                               "settings": asdict(settings), "base": str(start_from)}
    metrics.update(trainer.state.log_history[-1] if trainer.state.log_history else {})
    if dev is not None:
        pred = trainer.predict(encode(dev))
        accuracy = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
        metrics.update({"dev_accuracy": accuracy, "dev_examples": len(dev.texts)})
        progress(f"dev accuracy {accuracy:.4f} on {len(dev.texts)} examples")
        if recipe.gate.min_accuracy is not None and not smoke:
            metrics["min_accuracy"] = recipe.gate.min_accuracy
            metrics["reached_min_accuracy"] = accuracy >= recipe.gate.min_accuracy
    _save(model, tok, out, metrics, settings)
    return metrics


def _causal_lm(recipe: Recipe, base: Path | None, out: Path, smoke: bool, progress) -> dict[str, Any]:
    """A decoder trained from scratch (or further trained) on plain text, next-token prediction."""
    import transformers

    settings = _settings(recipe.train, smoke)
    path = recipe.resolve(recipe.data.train.path)
    if not path.is_file():
        raise RecipeError(f"data file {path} does not exist; fix 'path' in the recipe or add the file under models/data/.")
    text = path.read_text(encoding="utf-8", errors="replace")
    if smoke:
        text = text[:20_000]
    if not text.strip():
        raise RecipeError(f"data file {path} is empty; a language model needs text to train on.")
    cut = int(len(text) * (1 - recipe.data.held_out))
    cut = text.rfind("\n", 0, cut) + 1 or cut
    train_text, val_text = text[:cut], text[cut:]
    if recipe.source.architecture:
        tok = _train_tokenizer(recipe, train_text.splitlines(), settings)
        config = transformers.AutoConfig.for_model(
            recipe.source.architecture, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, **{"max_position_embeddings": settings.max_length, **recipe.source.config})
        model = transformers.AutoModelForCausalLM.from_config(config)
        start = f"a {recipe.source.architecture} from scratch"
    else:
        start = str(base or _pretrained_dir(recipe))
        trust = recipe.source.trust_remote_code
        tok = transformers.AutoTokenizer.from_pretrained(start, use_fast=True, trust_remote_code=trust)
        model = transformers.AutoModelForCausalLM.from_pretrained(start, use_safetensors=True, trust_remote_code=trust)
    params = sum(p.numel() for p in model.parameters())
    progress(f"training {start} ({params / 1e6:.1f}M parameters, vocab {len(tok)}) on {len(train_text):,} characters")

    def blocks(chunk: str) -> list[dict[str, list[int]]]:
        ids = tok(chunk, add_special_tokens=False)["input_ids"]
        n = settings.max_length
        return [{"input_ids": ids[i : i + n]} for i in range(0, max(1, len(ids) - n + 1), n)]

    collator = transformers.DataCollatorForLanguageModeling(tok, mlm=False)
    trainer, seconds = _fit(model, tok, blocks(train_text), collator, settings, out, progress, group_by_length=False)
    val_loss = float(trainer.evaluate(blocks(val_text))["eval_loss"])
    sample_ids = tok("ROMEO:", return_tensors="pt")["input_ids"].to(model.device)
    sample = tok.decode(model.generate(sample_ids, max_new_tokens=48, do_sample=False)[0], skip_special_tokens=True)
    progress(f"validation loss {val_loss:.3f} (perplexity {math.exp(min(val_loss, 50)):.1f}); greedy sample: {sample!r}")
    metrics = {"train_characters": len(train_text), "train_seconds": round(seconds, 1), "val_loss": val_loss,
               "val_perplexity": math.exp(min(val_loss, 50)), "parameters": params, "sample": sample,
               "settings": asdict(settings), "base": start}
    metrics.update(trainer.state.log_history[-1] if trainer.state.log_history else {})
    _save(model, tok, out, metrics, settings, extra={HELD_OUT: val_text})
    return metrics


STAGES = {"text-classification": _finetune, "text-generation": _causal_lm}


def _pretrain(recipe: Recipe, out: Path, smoke: bool, progress) -> tuple[Path, dict[str, Any]]:
    import transformers

    spec = recipe.pretrain
    settings = _settings(spec.train, smoke)
    texts: list[str] = []
    for split in spec.data:
        texts += read_split(recipe.resolve(split.path), _limit(split, smoke, SMOKE["examples"]), None).texts
    held_out = texts[-max(8, len(texts) // 100):]
    texts = texts[: len(texts) - len(held_out)]
    progress(f"pretraining a {recipe.source.architecture} from scratch on {len(texts)} texts (masked language modelling)")
    tok = _train_tokenizer(recipe, texts, settings)
    config = transformers.AutoConfig.for_model(
        recipe.source.architecture, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
        **{"max_position_embeddings": settings.max_length + 2, **recipe.source.config})
    model = transformers.AutoModelForMaskedLM.from_config(config)
    progress(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, vocab {len(tok)}")

    def blocks(items: list[str]) -> list[dict[str, list[int]]]:
        """Concatenate the token stream and cut it into max_length blocks: no padding wasted."""
        ids = [i for row in tok(items, add_special_tokens=False)["input_ids"] for i in row + [tok.sep_token_id]]
        size = settings.max_length - 2
        return [{"input_ids": tok.build_inputs_with_special_tokens(ids[i : i + size])}
                for i in range(0, max(1, len(ids) - size + 1), size)]

    collator = transformers.DataCollatorForLanguageModeling(tok, mlm_probability=settings.mlm_probability)
    trainer, seconds = _fit(model, tok, blocks(texts), collator, settings, out, progress, group_by_length=False)
    loss = float(trainer.evaluate(blocks(held_out))["eval_loss"])
    metrics = {"texts": len(texts), "train_seconds": round(seconds, 1), "held_out_mlm_loss": loss,
               "settings": asdict(settings), "parameters": sum(p.numel() for p in model.parameters())}
    progress(f"pretraining done: held-out masked-LM loss {loss:.3f}")
    _save(model, tok, out, metrics, settings)
    return out, metrics


# -- helpers ----------------------------------------------------------------------------------------
def _pretrained_dir(recipe: Recipe) -> Path:
    """The pretrained model's local dir; pickle-only weights and untrusted remote code are refused."""
    return resolve(recipe.source.pretrained, trust_remote_code=recipe.source.trust_remote_code).path


def _train_tokenizer(recipe: Recipe, texts: list[str], settings: Training):
    """A WordPiece (BERT family) or byte-level BPE (RoBERTa) tokenizer trained on the pretraining text."""
    import tempfile

    import transformers
    from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer

    vocab = recipe.source.vocab_size
    with tempfile.TemporaryDirectory() as tmp:
        if recipe.source.architecture in ("llama", "gpt2"):  # byte-level BPE, one end-of-text token
            from tokenizers import decoders, models, pre_tokenizers, trainers
            from tokenizers import Tokenizer as RawTokenizer

            raw = RawTokenizer(models.BPE())
            raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            raw.decoder = decoders.ByteLevel()
            raw.train_from_iterator((t + "\n" for t in texts), trainers.BpeTrainer(
                vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
            return transformers.PreTrainedTokenizerFast(
                tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                model_max_length=settings.max_length)
        if recipe.source.architecture == "roberta":
            bpe = ByteLevelBPETokenizer()
            bpe.train_from_iterator(texts, vocab_size=vocab, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
            bpe.save_model(tmp)
            return transformers.RobertaTokenizerFast(f"{tmp}/vocab.json", f"{tmp}/merges.txt",
                                                     model_max_length=settings.max_length)
        wp = BertWordPieceTokenizer(lowercase=True)
        wp.train_from_iterator(texts, vocab_size=vocab, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        wp.save_model(tmp)
        return transformers.BertTokenizerFast(f"{tmp}/vocab.txt", do_lower_case=True, model_max_length=settings.max_length)


class _Dataset:
    """A list of feature dicts as a map-style dataset (what Trainer needs, without the datasets package)."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def _progress_callback():
    from transformers.trainer_callback import ProgressCallback

    class LossAndThroughput(ProgressCallback):
        """The usual bar, with loss and examples/s in its postfix instead of printed dicts."""

        started = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                seen = state.global_step * args.per_device_train_batch_size
                rate = seen / max(1e-9, time.perf_counter() - self.started)
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", ex_s=f"{rate:.1f}")

    return LossAndThroughput


def _fit(model, tok, rows, collator, settings: Training, out: Path, progress, group_by_length: bool):
    """Trainer.train with checkpoints beside OUT, resuming from the last one if a run was interrupted."""
    import torch
    import transformers
    from transformers.trainer_callback import ProgressCallback

    if not rows:
        raise RecipeError("the training split produced no examples; check the data file and its limit.")
    ckpt = _checkpoints(out)
    resume = _last_complete_checkpoint(ckpt)
    if resume:
        progress(f"resuming from the last checkpoint in {ckpt} ({resume.name})")
    args = transformers.TrainingArguments(
        output_dir=str(ckpt), per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=64,
        learning_rate=settings.learning_rate, num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        warmup_ratio=settings.warmup_ratio, weight_decay=settings.weight_decay, lr_scheduler_type="linear",
        logging_steps=settings.logging_steps, save_steps=settings.save_steps, save_total_limit=1,
        save_safetensors=True, eval_strategy="no", report_to=[], seed=settings.seed,
        group_by_length=group_by_length, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Dataset(rows), data_collator=collator,
                                   processing_class=tok)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_progress_callback())
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return trainer, time.perf_counter() - started


def _checkpoints(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoints")


def _last_complete_checkpoint(ckpt: Path) -> Path | None:
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


def _save(model, tok, out: Path, metrics: dict[str, Any], settings: Training, extra: dict[str, str] | None = None) -> None:
    with atomic_dir(out, marker="training.json") as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / "training.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    shutil.rmtree(_checkpoints(out), ignore_errors=True)
