"""train: recipes, tokenizers, per-task stages and the trainer (pretrain, finetune, causal LM). Entry: train().

Modules, bottom to top: recipe < tokenizers, fit < stages (STAGES: task -> stage) < trainer."""

from toolchain.train.trainer import train

__all__ = ["train"]
