"""An LSTM encoder-decoder translator, as the seed documents build it: an Encoder (nn.LSTM, optionally
reading both ways) and a Decoder (nn.LSTM with Luong attention over the encoder's outputs).

Read top to bottom: the config, the encoder, the decoder, the model, the two export graphs, build().
Sources are right-padded (pad_id, attention_mask 0). The forward LSTM reads each item left to right, so
padding only ever comes after its real tokens; with ``bidirectional`` a second LSTM reads each item
reversed *within its own length* (gru.py's gather, not a flip of the padded row). The decoder's initial
state is a "bridge" from the masked mean of the encoder outputs, and attention masks padded positions,
so a padded batch gives each item exactly the logits it gets alone. No packed sequences: every op exports.

The export graphs keep runtime/seq2seq_io.py's contract:
  encoder  input_ids, attention_mask  ->  memory (B, S, H), past.h, past.c (B, layers, H)
  decoder  input_ids (B, 1), encoder_attention_mask, memory, past.h, past.c  ->  logits (B, V), present.h, present.c
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from toolchain.export.modules import IOSpec, Seq2SeqSpec, TensorIO
from toolchain.runtime.errors import SourceError
from toolchain.train.modules.gru import reverse_within_length

ATTENTION = ("luong", "none")  # luong: "general" scores h^T W m; none: the decoder ignores memory


@dataclass
class LSTMSeq2SeqConfig:
    vocab_size: int = 1000    # one tokenizer for sources and targets: one embedding table
    embed: int = 128          # token embedding width E
    hidden: int = 256         # LSTM state width H (encoder and decoder)
    layers: int = 1           # LSTM layers, in the encoder and the decoder
    dropout: float = 0.1      # on embeddings, between LSTM layers, before the projection (training only)
    attention: str = "luong"
    bidirectional: bool = True
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, S, H), mask (B, S) 1 real / 0 pad -> (B, H): the mean over real positions only."""
    m = mask.unsqueeze(-1).to(x.dtype)                        # (B, S, 1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class Encoder(nn.Module):
    """Embedded source (B, S, E) -> memory (B, S, H) and the decoder's initial h, c (B, layers, H)."""

    def __init__(self, config: LSTMSeq2SeqConfig):
        super().__init__()
        self.config = config
        between = config.dropout if config.layers > 1 else 0.0
        self.drop = nn.Dropout(config.dropout)
        self.forward_lstm = nn.LSTM(config.embed, config.hidden, config.layers, batch_first=True, dropout=between)
        self.backward_lstm = None
        if config.bidirectional:
            self.backward_lstm = nn.LSTM(config.embed, config.hidden, config.layers, batch_first=True, dropout=between)
            self.merge = nn.Linear(2 * config.hidden, config.hidden)  # both directions -> H
        self.bridge = nn.Linear(config.hidden, 2 * config.layers * config.hidden)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # x: (B, S, E) right-padded; attention_mask: (B, S)
        B, L, H = x.size(0), self.config.layers, self.config.hidden
        x = self.drop(x)
        memory, _ = self.forward_lstm(x)                              # (B, S, H)
        if self.backward_lstm is not None:
            lengths = attention_mask.sum(dim=1)                       # (B,)
            back, _ = self.backward_lstm(reverse_within_length(x, lengths))
            back = reverse_within_length(back, lengths)               # (B, S, H): realigned with the source
            memory = torch.tanh(self.merge(torch.cat([memory, back], dim=-1)))
        state = torch.tanh(self.bridge(masked_mean(memory, attention_mask)))  # (B, 2 * L * H)
        h, c = state.view(B, 2, L, H).unbind(dim=1)                   # (B, L, H) each
        return memory, h, c


class Decoder(nn.Module):
    """Embedded target (B, T, E), memory and state -> logits (B, T, V) and the state after the last step.

    Causal by construction (an LSTM), so one call over T tokens equals T calls of one token each."""

    def __init__(self, config: LSTMSeq2SeqConfig):
        super().__init__()
        self.config = config
        between = config.dropout if config.layers > 1 else 0.0
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.embed, config.hidden, config.layers, batch_first=True, dropout=between)
        if config.attention == "luong":
            self.score = nn.Linear(config.hidden, config.hidden, bias=False)      # Luong "general": h^T W m
            self.combine = nn.Linear(2 * config.hidden, config.hidden)          # tanh(W [context; h])
        self.out = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, y: torch.Tensor, encoder_attention_mask: torch.Tensor, memory: torch.Tensor,
                h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # y: (B, T, E); encoder_attention_mask: (B, S); memory: (B, S, H); h, c: (B, L, H)
        state = (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())  # nn.LSTM wants (L, B, H)
        out, (h, c) = self.lstm(self.drop(y), state)                 # out: (B, T, H)
        if self.config.attention == "luong":
            out = self.attend(out, memory, encoder_attention_mask)   # (B, T, H)
        logits = self.out(self.drop(out))                            # (B, T, V)
        return logits, h.transpose(0, 1), c.transpose(0, 1)          # state back to (B, L, H)

    def attend(self, out: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """out (B, T, H) attends over memory (B, S, H), padded positions masked -> attentional state (B, T, H)."""
        scores = self.score(out) @ memory.transpose(1, 2)            # (B, T, S)
        scores = scores.masked_fill(mask.unsqueeze(1) == 0, float("-inf"))
        context = scores.softmax(dim=-1) @ memory                    # (B, T, H)
        return torch.tanh(self.combine(torch.cat([context, out], dim=-1)))


class LSTMSeq2Seq(nn.Module):
    """forward(input_ids, attention_mask, decoder_input_ids) -> logits (B, T, V), teacher forcing."""

    def __init__(self, config: LSTMSeq2SeqConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed, padding_idx=config.pad_id)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                decoder_input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids, attention_mask: (B, S) right-padded; decoder_input_ids: (B, T) = [bos] + target[:-1]
        memory, h, c = self.encoder(self.embed(input_ids), attention_mask)
        logits, _, _ = self.decoder(self.embed(decoder_input_ids), attention_mask, memory, h, c)
        return logits                                                # (B, T, V)

    # The export graphs: built on each access around this module's own submodules, so they share its
    # weights and its state_dict holds every weight exactly once. They take its train/eval mode too:
    # torch.onnx.export (TorchScript) restores a graph's own mode to every submodule when it is done.
    @property
    def encoder_graph(self) -> nn.Module:
        return EncoderGraph(self.embed, self.encoder).train(self.training)

    @property
    def decoder_graph(self) -> nn.Module:
        return DecoderGraph(self.embed, self.decoder).train(self.training)


class EncoderGraph(nn.Module):
    """(input_ids, attention_mask) -> (memory, past.h, past.c)."""

    def __init__(self, embed: nn.Embedding, encoder: Encoder):
        super().__init__()
        self.embed, self.encoder = embed, encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.encoder(self.embed(input_ids), attention_mask)


class DecoderGraph(nn.Module):
    """One step: (input_ids (B, 1), encoder_attention_mask, memory, past.h, past.c) -> (logits (B, V), present.h, present.c)."""

    def __init__(self, embed: nn.Embedding, decoder: Decoder):
        super().__init__()
        self.embed, self.decoder = embed, decoder

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor, memory: torch.Tensor,
                h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, h, c = self.decoder(self.embed(input_ids), encoder_attention_mask, memory, h, c)
        return logits[:, -1], h, c                                   # (B, V), (B, L, H), (B, L, H)


def seq2seq_spec(config: LSTMSeq2SeqConfig) -> Seq2SeqSpec:
    """The two graphs' IO, with example inputs for sources of given lengths (and a batch-first state)."""
    batch, source = {0: "batch"}, {0: "batch", 1: "source"}

    def encoder_example(lengths: list[int]) -> dict[str, Any]:
        return source_example(lengths, config.vocab_size, config.pad_id)

    def decoder_example(lengths: list[int]) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(1)
        B, S, L, H = len(lengths), max(lengths), config.layers, config.hidden
        return {"input_ids": torch.randint(3, config.vocab_size, (B, 1), generator=gen),
                "encoder_attention_mask": source_example(lengths, config.vocab_size, config.pad_id)["attention_mask"],
                "memory": torch.randn(B, S, H, generator=gen),
                "past.h": torch.randn(B, L, H, generator=gen).tanh(), "past.c": torch.randn(B, L, H, generator=gen)}

    encoder = IOSpec(inputs=(TensorIO("input_ids", "int64", source), TensorIO("attention_mask", "int64", source)),
                     outputs=(TensorIO("memory", "float32", source), TensorIO("past.h", "float32", batch),
                              TensorIO("past.c", "float32", batch)),
                     example=encoder_example)
    decoder = IOSpec(inputs=(TensorIO("input_ids", "int64", batch), TensorIO("encoder_attention_mask", "int64", source),
                             TensorIO("memory", "float32", source), TensorIO("past.h", "float32", batch),
                             TensorIO("past.c", "float32", batch)),
                     outputs=(TensorIO("logits", "float32", batch), TensorIO("present.h", "float32", batch),
                              TensorIO("present.c", "float32", batch)),
                     example=decoder_example)
    return Seq2SeqSpec(encoder, decoder, bos_id=config.bos_id, eos_id=config.eos_id, pad_id=config.pad_id)


def source_example(lengths: list[int], vocab_size: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded random sources: input_ids and attention_mask (B, max(lengths)) int64."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.full((len(lengths), max(lengths)), pad_id, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, vocab_size, (n,), generator=gen)  # past pad, bos, eos
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def build(config: dict) -> tuple[nn.Module, Seq2SeqSpec]:
    """The recipe entry point: ``[model] module = "toolchain.train.modules.seq2seq_lstm:build"``."""
    known = {f.name for f in fields(LSTMSeq2SeqConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise SourceError(f"[model.config] has an unknown LSTM seq2seq key {unknown[0]!r}; allowed keys are "
                          f"{', '.join(sorted(known))}.")
    cfg = LSTMSeq2SeqConfig(**config)
    if cfg.attention not in ATTENTION:
        raise SourceError(f"[model.config] attention = {cfg.attention!r} is not one of {', '.join(ATTENTION)}; "
                          "pick one.")
    return LSTMSeq2Seq(cfg), seq2seq_spec(cfg)


__all__ = ["LSTMSeq2Seq", "LSTMSeq2SeqConfig", "build", "seq2seq_spec", "source_example"]
