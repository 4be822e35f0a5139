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
        model_max_length=max_length)


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
