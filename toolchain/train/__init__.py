"""train: recipes, data, tokenizers and the trainer (pretrain, finetune, causal LM). Entry: train()."""

from toolchain.train.trainer import train

__all__ = ["train"]
