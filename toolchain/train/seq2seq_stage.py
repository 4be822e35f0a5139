"""Training an encoder-decoder module from scratch: ``task = "text2text-generation"`` with ``[model]``.

The recipe names the module (toolchain/train/modules/seq2seq_lstm.py or seq2seq_transformer.py, or a user's
own) and the columns: ``[data.train] text = "source"``, ``target = "iso"`` (or ``"zh"``: the target is a
recipe option). One tokenizer (tokenizers.seq2seq_bpe) is trained here on the training split's sources and
targets. Then the plain PyTorch loop of module_stage.py with a teacher-forcing loss: the decoder reads
[BOS] + target and predicts target + [EOS]; under torchrun (`toolchain train --nproc N`) each process takes its
share of every batch, with checkpoints to resume from and one tokenizer for all (module_ddp.py). Dev and test
are scored by PyTorch greedy decoding (export/seq2seq_module.py): exact match and character error rate, by
rank 0, which alone writes.

Writes a module directory (MODULE_FILE, safetensors weights, tokenizer.json, training.json) atomically.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolchain.data.metrics import char_error_rate, exact_match
from toolchain.data.pairs import PairSet, read_pairs
from toolchain.export.modules import module_dir_record
from toolchain.export.seq2seq_module import greedy_batched, pad_sources
from toolchain.train.fit import checkpoints_dir
from toolchain.train.module_ddp import Group, resumable, shared_tokenizer
from toolchain.train.module_stage import THREADS, build_checked, fit_module, save_module_dir
from toolchain.train.recipe import Recipe, RecipeError, Split, Training
from toolchain.train.stages import SMOKE, smoke_limit, smoke_settings
from toolchain.train.tokenizers import BOS, EOS, PAD, seq2seq_bpe

DEFAULT_VOCAB = 1000
EXTRA_TOKENS = 8  # greedy decoding at evaluation runs to the longest training target plus this many tokens
IGNORE = -100  # cross-entropy's ignore_index: target padding
EVAL_PAIRS = "eval-pairs.tsv"  # the dev split with the recipe's target as "source"/"target": what the gate scores


def train_seq2seq(recipe: Recipe, out, smoke: bool, progress) -> dict[str, Any]:
    """Train the recipe's encoder-decoder module; write the module dir OUT; return the metrics."""
    import torch

    entry, search = recipe.model.module, recipe.folder
    settings = smoke_settings(recipe.train, smoke)
    train = _pairs(recipe, recipe.data.train, smoke, SMOKE["examples"])
    vocab = int(recipe.model.config.get("vocab_size", DEFAULT_VOCAB))
    group, ckpt = Group.from_env(), checkpoints_dir(Path(out))
    tok = shared_tokenizer(group, ckpt, resumable(ckpt),
                           lambda: seq2seq_bpe(train.sources + train.targets, vocab, settings.max_length))
    config = {**recipe.model.config, "vocab_size": tok.get_vocab_size()}
    torch.manual_seed(settings.seed)
    module, spec = build_checked(entry, config, search)
    _check_ids(recipe, tok, spec)
    examples = _encode(tok, train)
    max_new = max(len(t) for _, t in examples) + EXTRA_TOKENS
    params = sum(p.numel() for p in module.parameters())
    progress(f"training {entry} ({params / 1e6:.2f}M parameters, vocab {tok.get_vocab_size()}) on "
             f"{len(examples)} pairs ({recipe.data.train.text} -> {recipe.data.train.target})"
             + (f", {group.world} processes" if group.world > 1 else ""))
    started, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        losses = fit_module(module, examples, settings, progress, step_loss=_loss_for(spec), ckpt=ckpt, tok=tok)
    finally:
        torch.set_num_threads(threads)
    metrics: dict[str, Any] = {"entry": entry, "config": config, "parameters": params, "train_examples": len(examples),
                               "train_seconds": round(time.perf_counter() - started, 1), "settings": asdict(settings),
                               "losses": losses, "train_loss": losses[-1]["loss"] if losses else None,
                               "world_size": group.world, "target": recipe.data.train.target, "max_new_tokens": max_new}
    if group.rank != 0:  # the others hold the same weights; rank 0 scores and writes
        return metrics
    extra = {}
    for name in ("dev", "test"):
        split = getattr(recipe.data, name)
        if split is not None:
            pairs = _pairs(recipe, split, smoke, SMOKE["dev"])
            metrics.update(score(module, spec, tok, pairs, max_new, name, progress))
            if name == "dev":
                extra[EVAL_PAIRS] = pairs_tsv(pairs)
                if recipe.gate.min_accuracy is not None and not smoke:  # [gate] min_accuracy: dev exact match
                    metrics.update({"min_accuracy": recipe.gate.min_accuracy,
                                    "reached_min_accuracy": metrics["dev_exact_match"] >= recipe.gate.min_accuracy})
    record = module_dir_record(entry, config, recipe.task, None, settings.max_length, spec.pad_id, search)
    save_module_dir(out, module, tok, record, metrics, extra)
    shutil.rmtree(ckpt, ignore_errors=True)
    return metrics


def pairs_tsv(pairs: PairSet) -> str:
    """PAIRS as a TSV that data.texts.read_texts reads with its targets (columns source, target)."""
    rows = ["source\ttarget", *(f"{s}\t{t}" for s, t in zip(pairs.sources, pairs.targets))]
    return "\n".join(rows) + "\n"


def _pairs(recipe: Recipe, split: Split, smoke: bool, n: int) -> PairSet:
    split = smoke_limit(split, smoke, n)
    return read_pairs(recipe.resolve(split.path), source=split.text, target=split.target, limit=split.limit)


def _check_ids(recipe: Recipe, tok, spec) -> None:
    """The module's pad/bos/eos ids must be the tokenizer's, or it would learn and stop on the wrong tokens."""
    ids = {"pad_id": (PAD, spec.pad_id), "bos_id": (BOS, spec.bos_id), "eos_id": (EOS, spec.eos_id)}
    wrong = [f"{key} {have} (the tokenizer's {token} is {tok.token_to_id(token)})" for key, (token, have) in ids.items()
             if tok.token_to_id(token) != have]
    if wrong:
        raise RecipeError(f"{recipe.path}: the module's {', '.join(wrong)}; remove those keys from [model.config] so "
                          "the defaults 0, 1, 2 apply.")


def _encode(tok, pairs: PairSet) -> list[tuple[list[int], list[int]]]:
    """(source ids ending in [EOS], target ids ending in [EOS]) per pair; sources truncated at max_length."""
    eos = tok.token_to_id(EOS)
    sources = [e.ids for e in tok.encode_batch(pairs.sources, add_special_tokens=True)]
    targets = [e.ids + [eos] for e in tok.encode_batch(pairs.targets, add_special_tokens=False)]
    return list(zip(sources, targets))


def _loss_for(spec):
    """The teacher-forcing loss of one batch: decoder input [BOS] + target, labels target + [EOS]."""

    def seq2seq_loss(module, batch: list, settings: Training):
        import torch

        ids, mask = pad_sources([s for s, _ in batch], spec.pad_id)
        labels, _ = pad_sources([t for _, t in batch], IGNORE)                  # (B, T), padding = IGNORE
        decoder_in, _ = pad_sources([[spec.bos_id] + t[:-1] for _, t in batch], spec.pad_id)
        logits = module(ids, mask, decoder_in)                                   # (B, T, V)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                                 label_smoothing=settings.label_smoothing)

    return seq2seq_loss


def score(module, spec, tok, pairs: PairSet, max_new: int, name: str, progress) -> dict[str, Any]:
    """Exact match and character error rate of PyTorch greedy decoding on PAIRS, as NAME_exact_match, ..."""
    module.eval()
    sources = [e.ids for e in tok.encode_batch(pairs.sources, add_special_tokens=True)]
    outputs = [tok.decode(ids, skip_special_tokens=True) for ids in greedy_batched(module, spec, sources, max_new)]
    em, cer = exact_match(outputs, pairs.targets), char_error_rate(outputs, pairs.targets)
    wrong = [(s, o, t) for s, o, t in zip(pairs.sources, outputs, pairs.targets) if o != t]
    progress(f"{name}: exact match {em:.4f}, CER {cer:.4f} on {len(outputs)} pairs"
             + (f"; e.g. {wrong[0][0]!r} -> {wrong[0][1]!r}, not {wrong[0][2]!r}" if wrong else ""))
    sample = random.Random(0).sample(wrong, min(5, len(wrong)))
    return {f"{name}_exact_match": em, f"{name}_cer": cer, f"{name}_examples": len(outputs),
            f"{name}_errors": [{"source": s, "output": o, "target": t} for s, o, t in sample]}
