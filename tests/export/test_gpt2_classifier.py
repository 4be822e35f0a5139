"""GPT-2 classifies from its last token that is not padding: a padded batch must score each text as it
scores alone, in PyTorch (as finetuning pads) and through the exported artifact in the runtime."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import CORPUS, LABELS

TEXTS = ["a delight", "the plot dragged on and on without a single surprise, dull", "witty", "it rained all day"]


def _tokenizer(pad_token: str | None, extra: tuple[str, ...] = ()):
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", *extra],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                                pad_token=pad_token, model_input_names=["input_ids", "attention_mask"])


def build_gpt2_classifier(out, pad_token: str | None = "<|endoftext|>", config_pad: int = 0, extra=()):
    """A tiny random GPT2ForSequenceClassification with config.pad_token_id = CONFIG_PAD, saved into OUT."""
    import torch
    import transformers

    torch.manual_seed(0)
    tok = _tokenizer(pad_token, extra)
    config = transformers.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                     bos_token_id=0, eos_token_id=0, pad_token_id=config_pad, num_labels=2,
                                     id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model = transformers.GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return tok, model


def _torch_scores(tok, model, texts):
    import torch

    enc = tok(texts, padding=len(texts) > 1, return_tensors="pt")
    with torch.inference_mode():
        return torch.softmax(model(**enc).logits, -1).numpy()


def test_finetuning_pads_so_a_batch_scores_each_text_as_alone(tmp_path):
    from toolchain.train.stages import pad_on_the_right

    tok, model = build_gpt2_classifier(tmp_path / "m", pad_token=None)
    tok.padding_side = "left"  # what a decoder's tokenizer may come with
    model.config.pad_token_id = None  # as GPT-2's own config: no pad token at all
    pad_on_the_right(tok, model.config)
    assert tok.padding_side == "right" and model.config.pad_token_id == tok.pad_token_id == tok.eos_token_id
    batch = _torch_scores(tok, model, TEXTS)
    alone = np.concatenate([_torch_scores(tok, model, [t]) for t in TEXTS])
    np.testing.assert_allclose(batch, alone, atol=1e-5)


def test_left_padding_would_change_scores(tmp_path):
    """Why the padding side matters: GPT-2 numbers positions from 0 whatever the mask says."""
    tok, model = build_gpt2_classifier(tmp_path / "m")
    tok.padding_side = "left"
    batch = _torch_scores(tok, model, TEXTS)
    alone = np.concatenate([_torch_scores(tok, model, [t]) for t in TEXTS])
    assert not np.allclose(batch, alone, atol=1e-4)


@pytest.mark.parametrize("case", ["pad-is-eos", "config-names-its-own-pad"])
def test_exported_gpt2_classifier_scores_a_padded_batch_as_each_text_alone(case, tmp_path):
    from toolchain.export.core import export
    from toolchain.runtime import load, read_manifest

    if case == "pad-is-eos":  # as the recipe trains it: bos = eos = pad
        tok, model = build_gpt2_classifier(tmp_path / "m")
    else:  # the tokenizer names no pad token, the config a special token of its own (id 1), not eos (id 0)
        tok, model = build_gpt2_classifier(tmp_path / "m", pad_token=None, config_pad=1, extra=("<pad>",))
    export(tmp_path / "m", tmp_path / "art", task="text-classification")
    assert read_manifest(tmp_path / "art").tokenizer.pad_id == model.config.pad_token_id
    runtime = load(tmp_path / "art", provider="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = runtime.scores(TEXTS)
        alone = np.concatenate([runtime.scores([t]) for t in TEXTS])
    np.testing.assert_allclose(batch, alone, atol=1e-5)
    torch_alone = np.concatenate([_torch_scores(tok, model, [t]) for t in TEXTS])
    np.testing.assert_allclose(batch, torch_alone, atol=1e-4)
