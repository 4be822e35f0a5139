"""A GRU sentiment classifier, as the seed documents build it: nn.Embedding -> nn.GRU -> nn.Linear.

Read top to bottom: the config, the model, build(). Batches are right-padded (pad_id, attention_mask 0).
The forward GRU reads each item left to right and the item's logits come from its hidden state at its
last real token, so padding never reaches them. With ``bidirectional`` a second GRU reads each item
reversed *within its own length* (a gather, not a flip of the padded row), so the backward pass also
starts at the item's last real token. The result: a padded batch gives the same logits as each item
alone, and every op exports to ONNX (GRU, Gather, no packed sequences).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from toolchain.export.modules import IOSpec, text_classifier_io
from toolchain.runtime.errors import SourceError


@dataclass
class GRUConfig:
    vocab_size: int = 8000
    embed: int = 128          # token embedding width E
    hidden: int = 128         # GRU state width H
    layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.2      # on embeddings and on the pooled state (training only)
    classes: int = 2
    pad_id: int = 0


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (B, T, C) right-padded, lengths (B,): each item's real tokens reversed, its padding left in place."""
    T = x.size(1)
    t = torch.arange(T, device=x.device).unsqueeze(0)                 # (1, T)
    last = (lengths - 1).unsqueeze(1)                                  # (B, 1)
    index = torch.where(t <= last, last - t, t)                        # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(2)))  # (B, T, C)


def last_real(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """h (B, T, H) -> (B, H): the state at each item's last real token."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.size(2))  # (B, 1, H)
    return h.gather(1, index).squeeze(1)


class GRUClassifier(nn.Module):
    def __init__(self, config: GRUConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed, padding_idx=config.pad_id)
        self.drop = nn.Dropout(config.dropout)
        self.forward_gru = nn.GRU(config.embed, config.hidden, num_layers=config.layers, batch_first=True,
                                  dropout=config.dropout if config.layers > 1 else 0.0)
        self.backward_gru = None
        if config.bidirectional:
            self.backward_gru = nn.GRU(config.embed, config.hidden, num_layers=config.layers, batch_first=True,
                                       dropout=config.dropout if config.layers > 1 else 0.0)
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(directions * config.hidden, config.classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # input_ids, attention_mask: (B, T), right-padded
        lengths = attention_mask.sum(dim=1)                  # (B,)
        x = self.drop(self.embed(input_ids))                 # (B, T, E)
        h, _ = self.forward_gru(x)                           # (B, T, H)
        pooled = [last_real(h, lengths)]                     # (B, H): read left to right up to the last token
        if self.backward_gru is not None:
            hb, _ = self.backward_gru(reverse_within_length(x, lengths))  # (B, T, H)
            pooled.append(last_real(hb, lengths))            # (B, H): read right to left down to the first token
        return self.head(self.drop(torch.cat(pooled, dim=-1)))  # (B, classes)


def build(config: dict) -> tuple[nn.Module, IOSpec]:
    """The recipe entry point: ``[model] module = "toolchain.train.modules.gru:build"``."""
    known = {f.name for f in fields(GRUConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise SourceError(f"[model.config] has an unknown GRU key {unknown[0]!r}; allowed keys are {', '.join(sorted(known))}.")
    cfg = GRUConfig(**config)
    model = GRUClassifier(cfg)
    return model, text_classifier_io(cfg.vocab_size, cfg.pad_id)


__all__ = ["GRUClassifier", "GRUConfig", "build"]
