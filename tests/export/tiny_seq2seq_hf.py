"""Tiny Hugging Face encoder-decoders (T5, BART, Marian, mBART) built from configs with random weights, each saved
with a tiny fast tokenizer (a `tokenizers` WordLevel model wrapped in PreTrainedTokenizerFast: no sentencepiece
needed), for the seq2seq export tests. Also a tiny BERT (not an encoder-decoder) for the refusal test.
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "the film was a delight from start to finish",
    "a dull and lifeless story with no surprises",
    "actors shine in a witty , moving script",
    "it rained all day and the plot dragged on .",
    "the quick brown fox jumps over the lazy dog",
]
FAMILIES = ("t5", "bart", "marian", "mbart")
# Special tokens per family, in id order: the ids the configs below use (pad, eos, bos / unk).
SPECIALS = {
    "t5": ["<pad>", "</s>", "<unk>"],  # T5: pad 0, eos 1, unk 2; the decoder starts from pad
    "bart": ["<s>", "<pad>", "</s>", "<unk>"],  # BART: bos 0, pad 1, eos 2; the decoder starts from eos
    "marian": ["</s>", "<unk>", "<pad>"],  # Marian: eos 0, unk 1, pad 2; the decoder starts from pad
    "mbart": ["<s>", "<pad>", "</s>", "<unk>"],  # mBART: like BART
}
# Weight scales well above the default 0.02: the random models then attend sharply and say different things at
# each step (a decoder that ignores its state would show), with clear margins between their top two tokens.
INIT_SCALE = {"t5": 10.0, "bart": 0.1, "marian": 0.05, "mbart": 0.5}
LAYERS, D_MODEL = 2, 32  # encoder and decoder layers, and the hidden size, of every tiny model
SMALL = {"d_model": D_MODEL, "encoder_layers": LAYERS, "decoder_layers": LAYERS, "encoder_attention_heads": 2,
         "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 64}


def tokenizer(family: str, out: Path):
    """A WordLevel fast tokenizer over SENTENCES, with the family's special tokens first, appending EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[family]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=specials))
    eos = "</s>"
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, tok.token_to_id(eos))])
    names = {"pad_token": "<pad>", "eos_token": eos, "unk_token": "<unk>"}
    if "<s>" in specials:
        names["bos_token"] = "<s>"
    tok_fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=64,
                                       model_input_names=["input_ids", "attention_mask"], **names)
    tok_fast.save_pretrained(str(out))
    return tok_fast


def _config(family: str, vocab_size: int):
    import transformers

    if family == "t5":
        return transformers.T5Config(vocab_size=vocab_size, d_model=D_MODEL, d_kv=16, d_ff=64, num_layers=LAYERS,
                                     num_decoder_layers=LAYERS, num_heads=2, pad_token_id=0, eos_token_id=1,
                                     decoder_start_token_id=0, initializer_factor=INIT_SCALE["t5"])
    if family == "marian":
        return transformers.MarianConfig(vocab_size=vocab_size, pad_token_id=2, eos_token_id=0,
                                         decoder_start_token_id=2, forced_eos_token_id=None,
                                         init_std=INIT_SCALE["marian"], **SMALL)
    config_class = {"bart": transformers.BartConfig, "mbart": transformers.MBartConfig}[family]
    # BART starts from EOS (decoder_start_token_id); mBART sets none, so generate() (and decoder_start_and_eos)
    # fall back to BOS. No forced_bos/forced_eos: generate() would force tokens the plain greedy loop does not.
    start = {"decoder_start_token_id": 2} if family == "bart" else {}
    return config_class(vocab_size=vocab_size, pad_token_id=1, bos_token_id=0, eos_token_id=2, forced_eos_token_id=None,
                        forced_bos_token_id=None, init_std=INIT_SCALE[family], **start, **SMALL)


def build(family: str, out: Path) -> Path:
    """Save a randomly initialised tiny FAMILY encoder-decoder (safetensors) and its fast tokenizer into OUT."""
    import torch
    import transformers

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(family, out)
    config = _config(family, len(tok) + 7)  # a few ids the tokenizer never makes
    model_class = {"t5": transformers.T5ForConditionalGeneration, "bart": transformers.BartForConditionalGeneration,
                   "marian": transformers.MarianMTModel, "mbart": transformers.MBartForConditionalGeneration}[family]
    model = model_class(config).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def build_bert(out: Path) -> Path:
    """A tiny BERT (an encoder only) with a WordLevel tokenizer: what export_hf_seq2seq must refuse."""
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer("bart", out)
    config = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(str(out), safe_serialization=True)
    return out
