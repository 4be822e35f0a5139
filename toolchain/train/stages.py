"""The training stages: finetune a classifier, train a causal language model, pretrain a masked LM from
scratch. STAGES maps a recipe's task to its stage; each reads the recipe's data, fits with fit.py and
writes an HF-style model dir."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolchain.data.texts import read_split
from toolchain.runtime.tasks import Unsupported
from toolchain.train.fit import fit, save_model
from toolchain.train.caption_stage import train_captioner
from toolchain.train.image_stage import train_image_classifier
from toolchain.train.objectives import objective_of, pretrain_model
from toolchain.train.recipe import Recipe, RecipeError, Training
from toolchain.train.smoke import SMOKE, pretrained_dir, smoke_limit, smoke_settings
from toolchain.train.tokenizers import train_tokenizer

HELD_OUT = "heldout.txt"  # language models: the validation text, for the quantization gate


def pad_on_the_right(tok, config) -> None:
    """One pad token for tokenizer and config, padding on the right. Decoder classifiers (GPT-2) score the
    last token that is not config.pad_token_id and number positions from 0 whatever the mask says, so a pad
    id the config does not know, or left padding, would change a text's score with the batch it is in."""
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # GPT-2's own tokenizer names no pad token
    if config.pad_token_id is None:
        config.pad_token_id = tok.pad_token_id
    tok.padding_side = "right"


def finetune(recipe: Recipe, base: Path | None, out: Path, smoke: bool, progress) -> dict[str, Any]:
    """A sequence classifier finetuned on the recipe's labelled split; dev accuracy when there is a dev split."""
    import transformers

    settings = smoke_settings(recipe.train, smoke)
    start_from = base or pretrained_dir(recipe)
    labels = recipe.labels
    train = read_split(recipe.resolve(recipe.data.train.path), smoke_limit(recipe.data.train, smoke, SMOKE["examples"]), labels)
    dev = None
    if recipe.data.dev is not None:
        dev = read_split(recipe.resolve(recipe.data.dev.path), smoke_limit(recipe.data.dev, smoke, SMOKE["dev"]), labels)
    progress(f"finetuning {start_from} on {len(train.texts)} examples ({recipe.task})")
    trust = recipe.source.trust_remote_code
    tok = transformers.AutoTokenizer.from_pretrained(str(start_from), use_fast=True, trust_remote_code=trust)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(start_from), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)}, ignore_mismatched_sizes=True, use_safetensors=True,
        trust_remote_code=trust)
    pad_on_the_right(tok, model.config)

    def encode(split):
        enc = tok(split.texts, truncation=True, max_length=settings.max_length)
        return [{"input_ids": ids, "attention_mask": m, "labels": y}
                for ids, m, y in zip(enc["input_ids"], enc["attention_mask"], split.labels)]

    collator = transformers.DataCollatorWithPadding(tok)
    trainer, seconds = fit(model, tok, encode(train), collator, settings, out, progress, group_by_length=True)
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
    save_model(model, tok, out, metrics, settings)
    return metrics


def _text_split(recipe: Recipe, smoke: bool) -> tuple[str, str]:
    """The recipe's plain-text file cut at a line break into training text and held-out validation text."""
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
    return text[:cut], text[cut:]


def _causal_model(recipe: Recipe, base: Path | None, train_text: str, settings: Training):
    """(tokenizer, model, where it started): a new architecture with its own tokenizer, or a pretrained model."""
    import transformers

    if recipe.source.architecture:
        tok = train_tokenizer(recipe, train_text.splitlines(), settings)
        config = transformers.AutoConfig.for_model(
            recipe.source.architecture, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, **{"max_position_embeddings": settings.max_length, **recipe.source.config})
        return tok, transformers.AutoModelForCausalLM.from_config(config), f"a {recipe.source.architecture} from scratch"
    start = str(base or pretrained_dir(recipe))
    trust = recipe.source.trust_remote_code
    tok = transformers.AutoTokenizer.from_pretrained(start, use_fast=True, trust_remote_code=trust)
    model = transformers.AutoModelForCausalLM.from_pretrained(start, use_safetensors=True, trust_remote_code=trust)
    return tok, model, start


def causal_lm(recipe: Recipe, base: Path | None, out: Path, smoke: bool, progress) -> dict[str, Any]:
    """A decoder trained from scratch (or further trained) on plain text, next-token prediction."""
    import transformers

    settings = smoke_settings(recipe.train, smoke)
    train_text, val_text = _text_split(recipe, smoke)
    tok, model, start = _causal_model(recipe, base, train_text, settings)
    params = sum(p.numel() for p in model.parameters())
    progress(f"training {start} ({params / 1e6:.1f}M parameters, vocab {len(tok)}) on {len(train_text):,} characters")

    def blocks(chunk: str) -> list[dict[str, list[int]]]:
        ids = tok(chunk, add_special_tokens=False)["input_ids"]
        n = settings.max_length
        return [{"input_ids": ids[i : i + n]} for i in range(0, max(1, len(ids) - n + 1), n)]

    collator = transformers.DataCollatorForLanguageModeling(tok, mlm=False)
    trainer, seconds = fit(model, tok, blocks(train_text), collator, settings, out, progress, group_by_length=False)
    val_loss = float(trainer.evaluate(blocks(val_text))["eval_loss"])
    sample_ids = tok("ROMEO:", return_tensors="pt")["input_ids"].to(model.device)
    sample = tok.decode(model.generate(sample_ids, max_new_tokens=48, do_sample=False)[0], skip_special_tokens=True)
    progress(f"validation loss {val_loss:.3f} (perplexity {math.exp(min(val_loss, 50)):.1f}); greedy sample: {sample!r}")
    metrics = {"train_characters": len(train_text), "train_seconds": round(seconds, 1), "val_loss": val_loss,
               "val_perplexity": math.exp(min(val_loss, 50)), "parameters": params, "sample": sample,
               "settings": asdict(settings), "base": start}
    metrics.update(trainer.state.log_history[-1] if trainer.state.log_history else {})
    save_model(model, tok, out, metrics, settings, extra={HELD_OUT: val_text})
    return metrics


# The finetuning stage per task: train() looks the recipe's task up here; a new task adds one entry.
STAGES: dict[str, Any] = {
    "text-classification": finetune,
    "text-generation": causal_lm,
    "image-classification": train_image_classifier,
    "image-to-text": train_captioner,
    "text2text-generation": Unsupported("encoder-decoders train as a [model] module (models/transformer-seq2seq.toml, "
                                         "models/lstm-seq2seq.toml); Hugging Face T5/BART/Marian export as they are"),
    "feature-extraction": Unsupported("embedding recipes export a pretrained sentence encoder as it is (models/minilm.toml); "
                                      "finetune it for a task such as text-classification instead"),
}


def pretrain(recipe: Recipe, out: Path, smoke: bool, progress) -> tuple[Path, dict[str, Any]]:
    """A model of the recipe's architecture pretrained from scratch with its [pretrain] objective."""
    spec = recipe.pretrain
    objective = objective_of(recipe)
    settings = smoke_settings(spec.train, smoke)
    texts: list[str] = []
    for split in spec.data:
        texts += read_split(recipe.resolve(split.path), smoke_limit(split, smoke, SMOKE["examples"]), None).texts
    held_out = texts[-max(8, len(texts) // 100):]
    texts = texts[: len(texts) - len(held_out)]
    progress(f"pretraining a {recipe.source.architecture} from scratch on {len(texts)} texts ({objective.what})")
    tok = train_tokenizer(recipe, texts, settings)
    model = pretrain_model(recipe, tok, settings)
    progress(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, vocab {len(tok)}")
    collator = objective.collator(tok, settings)
    trainer, seconds = fit(model, tok, objective.blocks(tok, texts, settings), collator, settings, out, progress,
                           group_by_length=False)
    loss = float(trainer.evaluate(objective.blocks(tok, held_out, settings))["eval_loss"])
    metrics = {"texts": len(texts), "train_seconds": round(seconds, 1), "objective": objective.name,
               "held_out_loss": loss, "settings": asdict(settings),
               "parameters": sum(p.numel() for p in model.parameters())}
    if objective.name == "masked-lm":
        metrics["held_out_mlm_loss"] = loss  # the name earlier training.json files use
    progress(f"pretraining done: held-out {objective.what} loss {loss:.3f}")
    save_model(model, tok, out, metrics, settings)
    return out, metrics
