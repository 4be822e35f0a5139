"""A Transformer sentiment classifier, as the seed documents build it:
nn.Embedding (+ learned positions) -> nn.TransformerEncoder -> nn.Linear.

Read top to bottom: the config, the model, build(). Batches are right-padded (pad_id, attention_mask 0).
Padding never reaches a real token: attention ignores it (src_key_padding_mask) and the sentence vector
is the mean over real tokens only (a masked mean), so a padded batch gives the same logits as each item
alone. Every op exports to ONNX with torch.onnx.export.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from toolchain.export.modules import IOSpec, text_classifier_io
from toolchain.runtime.errors import SourceError


@dataclass
class TransformerConfig:
    vocab_size: int = 8000
    max_length: int = 128     # positions learned; longer inputs are truncated by the tokenizer
    d_model: int = 128        # width C
    heads: int = 4
    layers: int = 2
    ff: int = 256             # feed-forward width
    dropout: float = 0.1
    classes: int = 2
    pad_id: int = 0


class TransformerClassifier(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        self.positions = nn.Embedding(config.max_length, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(config.d_model, config.heads, config.ff, config.dropout,
                                           batch_first=True, norm_first=True)
        # enable_nested_tensor=False: the same (exportable) code path in training, eval and export
        self.encoder = nn.TransformerEncoder(layer, config.layers, norm=nn.LayerNorm(config.d_model),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(config.d_model, config.classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # input_ids, attention_mask: (B, T), right-padded
        T = input_ids.size(1)
        pos = torch.arange(T, device=input_ids.device).unsqueeze(0)     # (1, T)
        x = self.drop(self.embed(input_ids) + self.positions(pos))      # (B, T, C)
        h = self.encoder(x, src_key_padding_mask=attention_mask == 0)   # (B, T, C); True = ignore
        m = attention_mask.unsqueeze(-1).to(h.dtype)                    # (B, T, 1)
        pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)      # (B, C): mean over real tokens
        return self.head(self.drop(pooled))                             # (B, classes)


def build(config: dict) -> tuple[nn.Module, IOSpec]:
    """The recipe entry point: ``[model] module = "toolchain.train.modules.transformer:build"``."""
    known = {f.name for f in fields(TransformerConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise SourceError(f"[model.config] has an unknown Transformer key {unknown[0]!r}; allowed keys are "
                          f"{', '.join(sorted(known))}.")
    cfg = TransformerConfig(**config)
    return TransformerClassifier(cfg), text_classifier_io(cfg.vocab_size, cfg.pad_id)


__all__ = ["TransformerClassifier", "TransformerConfig", "build"]
