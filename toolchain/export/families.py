"""What the export must know per model family that the config does not say outright: how many of the
position embeddings an input can use, the limit of models without a position table, which pad id the graph
expects the runtime to pad with, and how a decoder's states are pooled."""

from __future__ import annotations

from typing import Any, Callable

from toolchain.runtime.errors import ExportError

# Families whose embeddings number positions from pad_token_id + 1 (fairseq's RoBERTa scheme: the pad
# token's own position is pad_token_id and real tokens follow it), so pad_token_id + 1 rows of
# max_position_embeddings are never usable: roberta-base has 514 rows for 512 tokens. An input longer
# than the rest indexes past the table (ONNX Runtime: "indices element out of data bounds").
PADDING_OFFSET_FAMILIES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm", "data2vec-text", "ibert",
    "longformer", "mpnet", "xmod", "luke", "markuplm", "layoutlmv3", "lilt",
})


def usable_positions(config: Any, model: Any = None) -> int | None:
    """How many tokens the position embeddings take: max_position_embeddings less the padding offset of
    families that number positions from pad_token_id + 1 (the registry above, or, for a model of a family
    not named there, embeddings that carry a padding_idx as RobertaEmbeddings does). None when unstated."""
    positions = getattr(config, "max_position_embeddings", None)
    if not positions:
        return None
    if config.model_type in PADDING_OFFSET_FAMILIES:
        pad = getattr(config, "pad_token_id", None)
        return int(positions) - (1 if pad is None else int(pad)) - 1
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    offset = getattr(embeddings, "padding_idx", None)
    return int(positions) - (offset + 1 if isinstance(offset, int) else 0)


def graph_pad(tok: Any, config: Any) -> tuple[int, str]:
    """(pad id, pad token) for the runtime to pad batches with. The config's pad_token_id where it names a
    token of the vocabulary: graphs compare ids with it (GPT-2 classifiers score the last token that is not
    it, RoBERTa numbers positions after it), so padding with another id changes a text's result with the
    batch it is in. Else the tokenizer's pad token, its eos or unk token (masked out by the attention mask)."""
    pad_id = getattr(config, "pad_token_id", None)
    if isinstance(pad_id, int) and 0 <= pad_id < len(tok):
        return pad_id, str(tok.convert_ids_to_tokens(pad_id))
    pad_token = tok.pad_token or tok.eos_token or tok.unk_token
    return (int(tok.convert_tokens_to_ids(pad_token)) if pad_token is not None else 0), str(pad_token)


# Config keys that state the trained context of models whose positions come from no table the input could run
# past (ALiBi, rotary): MPT's max_seq_len, ChatGLM's seq_length. Read only where max_position_embeddings is absent.
CONTEXT_KEYS = ("max_seq_len", "seq_length", "n_ctx")
# A tokenizer's model_max_length above this is transformers' "no limit" placeholder (1e30), not a length.
SANE_TOKENIZER_MAX = 1_000_000


def stated_context(config: Any) -> tuple[int, str] | None:
    """(length, the config key that states it) for models without a position table, or None."""
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value, f"config.{key}"
    return None


def tokenizer_limit(tok: Any) -> int | None:
    """The tokenizer's model_max_length where it states a real one."""
    value = getattr(tok, "model_max_length", None)
    return int(value) if isinstance(value, int) and 0 < value < SANE_TOKENIZER_MAX else None


def _attention_window(config: Any) -> int:
    window = config.attention_window
    return int(window if isinstance(window, int) else max(window))


# Families whose traced graph fixes how much padding the model adds itself (Longformer pads to a multiple of its
# attention window, and the trace keeps the dummy input's amount): the runtime pads batches to that multiple.
PAD_MULTIPLE: dict[str, Callable[[Any], int]] = {"longformer": _attention_window}


def pad_multiple(config: Any) -> int | None:
    """What the runtime must pad batches to a multiple of, for families in PAD_MULTIPLE; else None."""
    rule = PAD_MULTIPLE.get(getattr(config, "model_type", ""))
    return rule(config) if rule else None


def _big_bird_full_attention(config: Any) -> int | None:
    if getattr(config, "attention_type", "") != "block_sparse":
        return None
    return (5 + 2 * int(config.num_random_blocks)) * int(config.block_size)


# Families whose traced graph holds only up to a length, with what bounds it: BigBird attends fully up to
# (5 + 2 x num_random_blocks) x block_size tokens and block-sparsely beyond, a switch made in Python that the
# trace (at a short dummy input) fixes to full attention.
LENGTH_CAPS: dict[str, tuple[Callable[[Any], int | None], str]] = {
    "big_bird": (_big_bird_full_attention, "big_bird's full-attention length ((5 + 2 x num_random_blocks) x "
                                           "block_size; beyond it PyTorch attends block-sparsely, which the graph "
                                           "does not)"),
}


def family_cap(config: Any) -> tuple[int, str] | None:
    """(length, why) for families in LENGTH_CAPS whose config turns the cap on; else None."""
    rule, why = LENGTH_CAPS.get(getattr(config, "model_type", ""), (None, ""))
    length = rule(config) if rule else None
    return (length, why) if length else None


# Families whose states depend on the padding beside a text, with why: the runtime runs each of their texts alone
# (the manifest's tokenizer.pad_batches is false), and parity checks them that way.
READS_PADDING = {
    "convbert": "its span-based convolution mixes each token with its neighbours, padding included",
    "nystromformer": "its landmark means average over every position, padding included",
}


def pads_batches(config: Any) -> bool:
    """False for families in READS_PADDING."""
    return getattr(config, "model_type", "") not in READS_PADDING


def is_decoder(config: Any) -> bool:
    """A causal language-model family (no masked-LM head): its token states read only what came before them, so a
    sentence vector is the last real token's state."""
    from transformers.models.auto import modeling_auto

    model_type = getattr(config, "model_type", "")
    return (model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and model_type not in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def default_pooling(config: Any) -> dict[str, Any]:
    """The pooling of a model that names none (no sentence-transformers config): decoders take the last real token
    (as Qwen3-Embedding, gte-Qwen2 and e5-mistral do), encoders the mean of the real tokens."""
    return {"mode": "last" if is_decoder(config) else "mean", "normalize": True}


# Architectures optimum exports that the toolchain cannot serve, with the reason in one clause: model_type ->
# (reason, the tasks it applies to; None: every task). `toolchain export` refuses them before any work, and the
# README lists them.
UNSUPPORTED: dict[str, tuple[str, frozenset[str] | None]] = {
    "longformer": ("optimum's traced Longformer graph does not match PyTorch (max difference 0.3 on a 2-layer model "
                   "at lengths other than the traced one, 0.08 with global attention even at that one); export a "
                   "RoBERTa-style encoder instead", None),
}


def model_type_of(source: Any) -> str | None:
    """The model_type in a transformers source's config.json, read without loading the model (None for a module
    dir, or a config that cannot be read: that is reported where it is loaded, with its own fix)."""
    import json

    config = source.path / "config.json"
    if source.kind == "module" or not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def check_supported(source: Any, task: str) -> None:
    """ExportError naming the architecture and the reason, where UNSUPPORTED lists the source's model_type."""
    model_type = model_type_of(source)
    reason, tasks = UNSUPPORTED.get(model_type, (None, None))
    if reason and (tasks is None or task in tasks):
        raise ExportError(f"{model_type} models cannot be exported for {task}: {reason}.")
