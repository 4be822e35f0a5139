"""What the export must know per model family that the config does not say outright: how many of the
position embeddings an input can use, and which pad id the graph expects the runtime to pad with."""

from __future__ import annotations

from typing import Any

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
