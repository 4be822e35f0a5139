"""A Transformer encoder-decoder translator, as the seed documents build it: token embeddings (scaled by
sqrt(d_model)) plus learned positions -> nn.TransformerEncoder -> nn.TransformerDecoder -> nn.Linear.

Read top to bottom: the config, the model (training forward), the incremental decoding step, the two export
graphs, build(). Sources are right-padded (pad_id, attention_mask 0): attention never reads a padded
position (src_key_padding_mask, memory_key_padding_mask), so a padded batch gives each item its own logits.

The export graphs keep runtime/seq2seq_io.py's contract:
  encoder  input_ids, attention_mask  ->  cross.k.{i}, cross.v.{i} (B, heads, S, D) for each decoder layer i
  decoder  input_ids (B, 1), encoder_attention_mask, cross.k/v.{i}, past.k/v.{i} (B, heads, P, D)
           ->  logits (B, V), present.k/v.{i} (B, heads, P + 1, D)
The decoding step is nn.TransformerDecoderLayer written out by hand over the *same* weights (self_attn,
multihead_attn, linear1/2, norm1/2/3), with a self-attention cache; the cross-attention keys and values are
computed once, by the encoder graph. The new token's position is the cache's length P.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from toolchain.export.modules import IOSpec, Seq2SeqSpec, TensorIO
from toolchain.runtime.errors import SourceError
from toolchain.train.modules.seq2seq_lstm import source_example


@dataclass
class TransformerSeq2SeqConfig:
    vocab_size: int = 1000    # one tokenizer for sources and targets: one embedding table
    d_model: int = 128        # width C
    heads: int = 4            # C / heads = D, the head width
    encoder_layers: int = 2
    decoder_layers: int = 2
    ff: int = 512             # feed-forward width
    dropout: float = 0.1
    max_length: int = 128     # learned positions, for sources and for targets
    norm_first: bool = True   # pre-norm layers (False: post-norm, as in the original Transformer)
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


def embed_tokens(embed: nn.Embedding, positions: nn.Embedding, ids: torch.Tensor, start: Any = 0) -> torch.Tensor:
    """ids (B, T) -> (B, T, C): token embedding * sqrt(C) plus the positions start .. start + T - 1."""
    pos = torch.arange(ids.size(1), device=ids.device) + start               # (T,)
    return embed(ids) * math.sqrt(embed.embedding_dim) + positions(pos)      # (B, T, C)


class TransformerSeq2Seq(nn.Module):
    """forward(input_ids, attention_mask, decoder_input_ids) -> logits (B, T, V), teacher forcing."""

    def __init__(self, config: TransformerSeq2SeqConfig):
        super().__init__()
        self.config = config
        C = config.d_model
        self.embed = nn.Embedding(config.vocab_size, C, padding_idx=config.pad_id)
        self.source_positions = nn.Embedding(config.max_length, C)
        self.target_positions = nn.Embedding(config.max_length, C)
        self.drop = nn.Dropout(config.dropout)
        layer = dict(d_model=C, nhead=config.heads, dim_feedforward=config.ff, dropout=config.dropout,
                     batch_first=True, norm_first=config.norm_first)
        # enable_nested_tensor=False: the same (exportable) code path in training, eval and export
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), config.encoder_layers,
                                             norm=nn.LayerNorm(C), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), config.decoder_layers,
                                             norm=nn.LayerNorm(C))
        self.out = nn.Linear(C, config.vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                decoder_input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids, attention_mask: (B, S) right-padded; decoder_input_ids: (B, T) = [bos] + target[:-1]
        x = self.drop(embed_tokens(self.embed, self.source_positions, input_ids))            # (B, S, C)
        memory = self.encoder(x, src_key_padding_mask=attention_mask == 0)                   # (B, S, C)
        T = decoder_input_ids.size(1)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)          # (T, T), -inf above
        y = self.drop(embed_tokens(self.embed, self.target_positions, decoder_input_ids))    # (B, T, C)
        h = self.decoder(y, memory, tgt_mask=causal, tgt_is_causal=True,
                         memory_key_padding_mask=attention_mask == 0)                        # (B, T, C)
        return self.out(h)                                                                   # (B, T, V)

    # The export graphs: built on each access around this module's own submodules, so they share its
    # weights and its state_dict holds every weight exactly once. They take its train/eval mode too:
    # torch.onnx.export (TorchScript) restores a graph's own mode to every submodule when it is done.
    @property
    def encoder_graph(self) -> nn.Module:
        return EncoderGraph(self.embed, self.source_positions, self.encoder, self.decoder).train(self.training)

    @property
    def decoder_graph(self) -> nn.Module:
        return DecoderGraph(self.embed, self.target_positions, self.decoder, self.out).train(self.training)


# The decoding step, by hand. Shapes: x (B, 1, C) the new token; k, v (B, heads, P, D); D = C / heads.

def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, heads, T, D)."""
    B, T, C = x.shape
    return x.view(B, T, heads, C // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, D) -> (B, T, C)."""
    B, heads, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, heads * D)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """q (B, h, 1, D) over k, v (B, h, P, D); KEEP (B, 1, 1, P) False where a key is padding -> (B, h, 1, D)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))             # (B, h, 1, P)
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.softmax(dim=-1) @ v


def cross_keys(attn: nn.MultiheadAttention, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A decoder layer's cross-attention keys and values from memory (B, S, C): (B, heads, S, D) each."""
    C = attn.embed_dim
    w, b = attn.in_proj_weight, attn.in_proj_bias                         # rows: q, k, v
    k = F.linear(memory, w[C:2 * C], b[C:2 * C])
    v = F.linear(memory, w[2 * C:], b[2 * C:])
    return split_heads(k, attn.num_heads), split_heads(v, attn.num_heads)


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, past_k: torch.Tensor,
                   past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The new token attends over the cache and itself: (B, 1, C) and the cache one longer (P + 1)."""
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)  # (B, 1, C) each
    k = torch.cat([past_k, split_heads(k, attn.num_heads)], dim=2)                  # (B, h, P + 1, D)
    v = torch.cat([past_v, split_heads(v, attn.num_heads)], dim=2)
    out = attend(split_heads(q, attn.num_heads), k, v)                              # causal: only the past
    return attn.out_proj(merge_heads(out)), k, v


def cross_attention(attn: nn.MultiheadAttention, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    keep: torch.Tensor) -> torch.Tensor:
    """The new token (B, 1, C) attends over the source's real positions -> (B, 1, C)."""
    C = attn.embed_dim
    q = F.linear(x, attn.in_proj_weight[:C], attn.in_proj_bias[:C])
    return attn.out_proj(merge_heads(attend(split_heads(q, attn.num_heads), k, v, keep)))


def layer_step(layer: nn.TransformerDecoderLayer, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor,
               cross_k: torch.Tensor, cross_v: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """nn.TransformerDecoderLayer.forward (eval mode: no dropout) for one new token, with a cache."""

    def feed_forward(h: torch.Tensor) -> torch.Tensor:
        return layer.linear2(layer.activation(layer.linear1(h)))

    if layer.norm_first:
        a, k, v = self_attention(layer.self_attn, layer.norm1(x), past_k, past_v)
        x = x + a
        x = x + cross_attention(layer.multihead_attn, layer.norm2(x), cross_k, cross_v, keep)
        x = x + feed_forward(layer.norm3(x))
    else:
        a, k, v = self_attention(layer.self_attn, x, past_k, past_v)
        x = layer.norm1(x + a)
        x = layer.norm2(x + cross_attention(layer.multihead_attn, x, cross_k, cross_v, keep))
        x = layer.norm3(x + feed_forward(x))
    return x, k, v


class EncoderGraph(nn.Module):
    """(input_ids, attention_mask) -> (cross.k.0, cross.v.0, cross.k.1, ...)."""

    def __init__(self, embed: nn.Embedding, positions: nn.Embedding, encoder: nn.TransformerEncoder,
                 decoder: nn.TransformerDecoder):
        super().__init__()
        self.embed, self.positions, self.encoder, self.decoder = embed, positions, encoder, decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = embed_tokens(self.embed, self.positions, input_ids)                       # (B, S, C)
        memory = self.encoder(x, src_key_padding_mask=attention_mask == 0)            # (B, S, C)
        return tuple(t for layer in self.decoder.layers for t in cross_keys(layer.multihead_attn, memory))


class DecoderGraph(nn.Module):
    """One step: (input_ids (B, 1), encoder_attention_mask, cross.k/v.{i}..., past.k/v.{i}...)
    -> (logits (B, V), present.k/v.{i}...)."""

    def __init__(self, embed: nn.Embedding, positions: nn.Embedding, decoder: nn.TransformerDecoder, out: nn.Linear):
        super().__init__()
        self.embed, self.positions, self.decoder, self.out = embed, positions, decoder, out
        # torch.export binds inputs to forward's parameters by name, and a *state tuple would be one
        # parameter: this instance's forward gets one named parameter per graph input instead.
        self.forward = named_parameters(self.step, ["input_ids", "encoder_attention_mask",
                                                    *[n.replace(".", "_") for n in state_names(len(decoder.layers))]])

    def step(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
             *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = 2 * len(self.decoder.layers)
        cross, past = state[:n], state[n:]                                  # k, v, k, v, ... per layer
        x = embed_tokens(self.embed, self.positions, input_ids, start=past[0].size(2))  # (B, 1, C) at P
        keep = (encoder_attention_mask != 0)[:, None, None, :]             # (B, 1, 1, S)
        present = []
        for i, layer in enumerate(self.decoder.layers):
            x, k, v = layer_step(layer, x, past[2 * i], past[2 * i + 1], cross[2 * i], cross[2 * i + 1], keep)
            present += [k, v]
        logits = self.out(self.decoder.norm(x))[:, 0]                       # (B, V)
        return (logits, *present)


def named_parameters(fn: Callable[..., Any], names: list[str]) -> Callable[..., Any]:
    """FN(*args) behind a signature naming each positional argument."""

    def call(*args: Any) -> Any:
        return fn(*args)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    call.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in names])  # type: ignore[attr-defined]
    return call


def state_names(layers: int) -> list[str]:
    """The decoder's inputs after encoder_attention_mask: cross.k.0, cross.v.0, ..., past.k.0, past.v.0, ..."""
    return [f"{kind}.{kv}.{i}" for kind in ("cross", "past") for i in range(layers) for kv in ("k", "v")]


def seq2seq_spec(config: TransformerSeq2SeqConfig) -> Seq2SeqSpec:
    """The two graphs' IO, with example inputs for sources of given lengths (and a past of 2)."""
    L, heads, D = config.decoder_layers, config.heads, config.d_model // config.heads
    source = {0: "batch", 1: "source"}
    axes = {"cross": {0: "batch", 2: "source"}, "past": {0: "batch", 2: "past_sequence"},
            "present": {0: "batch", 2: "past_sequence + 1"}}
    cross = [TensorIO(n, "float32", axes["cross"]) for n in state_names(L)[:2 * L]]
    past = [TensorIO(n, "float32", axes["past"]) for n in state_names(L)[2 * L:]]
    present = [TensorIO(n.replace("past.", "present."), "float32", axes["present"]) for n in state_names(L)[2 * L:]]

    def encoder_example(lengths: list[int]) -> dict[str, Any]:
        return source_example(lengths, config.vocab_size, config.pad_id)

    def decoder_example(lengths: list[int]) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(1)
        B, S = len(lengths), max(lengths)
        feeds = {"input_ids": torch.randint(3, config.vocab_size, (B, 1), generator=gen),
                 "encoder_attention_mask": source_example(lengths, config.vocab_size, config.pad_id)["attention_mask"]}
        feeds.update({t.name: torch.randn(B, heads, S, D, generator=gen) for t in cross})
        feeds.update({t.name: torch.randn(B, heads, 2, D, generator=gen) for t in past})
        return feeds

    encoder = IOSpec(inputs=(TensorIO("input_ids", "int64", source), TensorIO("attention_mask", "int64", source)),
                     outputs=tuple(cross), example=encoder_example)
    decoder = IOSpec(inputs=(TensorIO("input_ids", "int64", {0: "batch"}),
                             TensorIO("encoder_attention_mask", "int64", source), *cross, *past),
                     outputs=(TensorIO("logits", "float32", {0: "batch"}), *present), example=decoder_example)
    return Seq2SeqSpec(encoder, decoder, bos_id=config.bos_id, eos_id=config.eos_id, pad_id=config.pad_id,
                       max_target_positions=config.max_length)


def build(config: dict) -> tuple[nn.Module, Seq2SeqSpec]:
    """The recipe entry point: ``[model] module = "toolchain.train.modules.seq2seq_transformer:build"``."""
    known = {f.name for f in fields(TransformerSeq2SeqConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise SourceError(f"[model.config] has an unknown Transformer seq2seq key {unknown[0]!r}; allowed keys are "
                          f"{', '.join(sorted(known))}.")
    cfg = TransformerSeq2SeqConfig(**config)
    if cfg.d_model % cfg.heads:
        raise SourceError(f"[model.config] d_model = {cfg.d_model} does not split into heads = {cfg.heads}; make "
                          "d_model a multiple of heads.")
    return TransformerSeq2Seq(cfg), seq2seq_spec(cfg)


__all__ = ["TransformerSeq2Seq", "TransformerSeq2SeqConfig", "build", "seq2seq_spec"]
