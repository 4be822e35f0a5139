"""Tiny text models of any architecture optimum exports, built from the architecture's default config (hidden 64,
2 layers, 4 heads, 256 positions, a ~400-token byte-level BPE vocabulary; random weights, seeded), each saved with
its tokenizer.

Config keys differ per family (hidden_size, n_embd, d_model, emb_dim, ...): SHRINK names every spelling of each
size, and FAMILY_KEYS the few settings a family needs besides (a rotary dimension that must fit the head, a
window, expert counts). The tokenizer states no model_max_length, as many hand-made or converted ones do, so the
export must find the usable length from the model itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORPUS = [
    "the film was a delight from start to finish",
    "a dull and lifeless story with no surprises",
    "actors shine in a witty, moving script",
    "it rained all day and the plot dragged on",
    "The quick brown fox jumps over the lazy dog. Numbers 12345 and more!",
] * 20
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4: bos, pad, eos, unk, mask
IDS = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}
HIDDEN, LAYERS, HEADS = 64, 2, 4
POSITIONS = 256  # position tables and stated contexts: parity's longest text (~3000 tokens here) is cut to it

# Every spelling of one size in transformers' configs -> the tiny value. Only keys the config has are set.
SHRINK: tuple[tuple[int, tuple[str, ...]], ...] = (
    (HIDDEN, ("hidden_size", "n_embd", "d_model", "dim", "emb_dim", "embedding_size", "word_embed_proj_dim",
             "input_embedding_size", "output_embedding_size", "pooler_hidden_size", "d_latents", "true_hidden_size",
             "intra_bottleneck_size")),
    (LAYERS, ("num_hidden_layers", "n_layer", "n_layers", "num_layers")),
    (HEADS, ("num_attention_heads", "n_head", "n_heads", "num_heads", "num_self_attention_heads",
            "num_cross_attention_heads")),
    (2, ("num_key_value_heads", "num_kv_heads", "num_experts_per_tok", "n_shared_experts")),
    (128, ("intermediate_size", "ffn_dim", "n_inner", "hidden_dim", "ffn_hidden_size", "d_ff")),
    (32, ("moe_intermediate_size", "q_lora_rank")),
    (HIDDEN // HEADS, ("head_dim", "v_head_dim", "qk_head_dim", "kv_lora_rank")),
    (HIDDEN // HEADS // 2, ("rotary_dim", "qk_rope_head_dim", "qk_nope_head_dim")),
    (4, ("num_experts", "n_routed_experts", "num_local_experts")),
    (1, ("num_hidden_groups", "n_group", "topk_group", "first_k_dense_replace")),
    (POSITIONS, ("max_position_embeddings", "n_positions", "max_seq_len", "n_ctx")),
)

UNSET_TOO = ("num_key_value_heads", "head_dim")  # None in some configs means "derive from the big sizes": set them

# What a family needs besides the sizes above (applied last).
FAMILY_KEYS: dict[str, dict[str, Any]] = {
    "longformer": {"attention_window": 16},
    "big_bird": {"block_size": 16, "num_random_blocks": 2},
    "perceiver": {"num_latents": 16, "num_self_attends_per_block": 2, "d_model": HIDDEN},
    "mobilebert": {"embedding_size": 32, "num_feedforward_networks": 2},
    "squeezebert": {"q_groups": 4, "k_groups": 4, "v_groups": 4, "intermediate_groups": 4, "output_groups": 4},
    "mpt": {"expansion_ratio": 2},
    # head_dim is the rotary part of a head (qk_rope_head_dim); latent attention keeps one key/value head per head
    "deepseek_v3": {"head_dim": HIDDEN // HEADS // 2, "num_key_value_heads": HEADS},
    "phi": {"num_key_value_heads": HEADS},  # as in Phi-1/2 (optimum's cache shapes assume it)
    "xlm": {"n_langs": 1},
    "flaubert": {"n_langs": 1},
    "smollm3": {"no_rope_layer_interval": 2},
    "gpt_neo": {"attention_types": [[["global", "local"], 1]], "window_size": 16},
}


def is_decoder(model_type: str) -> bool:
    """A causal LM family with no masked-LM head: tokenized without a template, padded with its own pad id."""
    from transformers.models.auto import modeling_auto as m

    return model_type in m.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in m.MODEL_FOR_MASKED_LM_MAPPING_NAMES


def tokenizer(decoder: bool):
    """A byte-level BPE fast tokenizer over CORPUS with SPECIALS first; encoders wrap each text in <s> ... </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if not decoder:
        raw.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                           special_tokens=[("<s>", 0), ("</s>", 2)])
    names = dict(zip(("bos_token", "pad_token", "eos_token", "unk_token", "mask_token"), SPECIALS))
    if not decoder:
        names.update(cls_token="<s>", sep_token="</s>")
    inputs = ["input_ids", "attention_mask"] if decoder else ["input_ids", "token_type_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=raw, model_input_names=inputs, **names)


def tiny_config(model_type: str, vocab_size: int, labels: dict[int, str] | None = None):
    """MODEL_TYPE's default config with every size made tiny (only the keys it has), the tokenizer's special ids."""
    from transformers import AutoConfig

    base = AutoConfig.for_model(model_type)
    present = set(base.to_dict()) | set(getattr(base, "attribute_map", {}))
    settings: dict[str, Any] = {"vocab_size": vocab_size, **IDS}
    for value, keys in SHRINK:
        settings.update({k: value for k in keys
                         if k in present and (getattr(base, k, None) is not None or k in UNSET_TOO)})
    settings.update(FAMILY_KEYS.get(model_type, {}))
    if labels:
        settings.update(num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()})
    return AutoConfig.for_model(model_type, **settings)


AUTO = {"feature-extraction": "AutoModel", "text-classification": "AutoModelForSequenceClassification",
        "text-generation": "AutoModelForCausalLM"}
LABELS = {0: "negative", 1: "positive"}


def build(model_type: str, task: str, out: Path, seed: int = 0) -> Path:
    """Save a seeded random tiny MODEL_TYPE for TASK (safetensors + fast tokenizer) into OUT; return OUT."""
    import torch
    import transformers

    torch.manual_seed(seed)
    tok = tokenizer(is_decoder(model_type))
    config = tiny_config(model_type, len(tok), LABELS if task == "text-classification" else None)
    model = getattr(transformers, AUTO[task]).from_config(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out
