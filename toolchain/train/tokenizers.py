"""Tokenizers trained on a recipe's own text, for models built from scratch: byte-level BPE for decoders
(llama, gpt2) and RoBERTa, WordPiece for the BERT family."""

from __future__ import annotations

import tempfile

from toolchain.train.recipe import Recipe, Training


def _byte_level_bpe(texts: list[str], vocab: int, max_length: int):
    """Byte-level BPE with one end-of-text token (bos = eos = pad), as GPT-2 style decoders use."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator((t + "\n" for t in texts), trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        model_max_length=max_length, model_input_names=["input_ids", "attention_mask"])  # as GPT-2's: no token_type_ids


def _roberta(texts: list[str], vocab: int, max_length: int, tmp: str):
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(tmp)
    return transformers.RobertaTokenizerFast(f"{tmp}/vocab.json", f"{tmp}/merges.txt", model_max_length=max_length)


def _wordpiece(texts: list[str], vocab: int, max_length: int, tmp: str):
    import transformers
    from tokenizers import BertWordPieceTokenizer

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=vocab, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    wp.save_model(tmp)
    return transformers.BertTokenizerFast(f"{tmp}/vocab.txt", do_lower_case=True, model_max_length=max_length)


def train_tokenizer(recipe: Recipe, texts: list[str], settings: Training):
    """A tokenizer for the recipe's architecture, trained on TEXTS with the recipe's vocab_size."""
    vocab, arch = recipe.source.vocab_size, recipe.source.architecture
    if arch in ("llama", "gpt2"):
        return _byte_level_bpe(texts, vocab, settings.max_length)
    with tempfile.TemporaryDirectory() as tmp:
        if arch == "roberta":
            return _roberta(texts, vocab, settings.max_length, tmp)
        return _wordpiece(texts, vocab, settings.max_length, tmp)


PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"  # ids 0, 1, 2


def plain_wordpiece(texts: list[str], vocab: int, max_length: int):
    """A bare `tokenizers.Tokenizer` for modules trained from scratch (toolchain/train/module_stage.py):
    lowercased WordPiece, "[CLS] text" (so no text is ever empty), right padding with [PAD] = id 0 to the
    longest item, truncation at MAX_LENGTH. Saved as tokenizer.json, it is all the runtime needs."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=[PAD, UNK, CLS]))
    tok.post_processor = processors.TemplateProcessing(single=f"{CLS} $A", special_tokens=[(CLS, tok.token_to_id(CLS))])
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=tok.token_to_id(PAD), pad_token=PAD)
    return tok


BOS, EOS, SEQ_UNK = "[BOS]", "[EOS]", "[UNK]"  # with PAD: ids 0, 1, 2, 3 of seq2seq_bpe


def seq2seq_bpe(texts: list[str], vocab: int, max_length: int):
    """A bare `tokenizers.Tokenizer` shared by the source and the target of a translation module
    (toolchain/train/seq2seq_stage.py): NFKC and lowercase, BPE over Metaspace words with every digit its
    own token (so numbers and dates never become one opaque token, and an unseen date is made of seen
    pieces), "text [EOS]" for sources, [PAD] [BOS] [EOS] [UNK] = ids 0..3. Decoding with Metaspace gives
    back spacing exactly ("2026-11-25", "2026年11月25日")."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=SEQ_UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=[PAD, BOS, EOS, SEQ_UNK]))
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    tok.enable_truncation(max_length=max_length)
    return tok
