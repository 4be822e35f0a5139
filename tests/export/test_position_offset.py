"""RoBERTa-family models number positions from pad_token_id + 1: the usable length is
max_position_embeddings - pad_token_id - 1, also where the tokenizer names no maximum length (else the
over-long parity input indexes past the position table and the export fails in ONNX Runtime)."""

from __future__ import annotations

import pytest

from conftest import CORPUS, LABELS

POSITIONS, PAD = 24, 1  # a small table: the parity texts' longest input is far longer


def build_roberta_without_max_length(out, task: str):
    """A tiny random RoBERTa for TASK whose tokenizer states no model_max_length, saved into OUT."""
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    torch.manual_seed(0)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    (out / "_bpe").mkdir(parents=True)
    bpe.save_model(str(out / "_bpe"))
    tok = transformers.RobertaTokenizerFast(vocab_file=str(out / "_bpe" / "vocab.json"), merges_file=str(out / "_bpe" / "merges.txt"))
    assert tok.model_max_length > 1_000_000  # names no maximum
    config = transformers.RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, max_position_embeddings=POSITIONS, pad_token_id=PAD,
                                        bos_token_id=0, eos_token_id=2, num_labels=2, id2label=LABELS,
                                        label2id={v: k for k, v in LABELS.items()})
    auto = transformers.AutoModelForSequenceClassification if task == "text-classification" else transformers.AutoModel
    auto.from_config(config).eval().save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


@pytest.mark.parametrize("task,known", [("text-classification", True), ("feature-extraction", True),
                                        ("text-classification", False)],
                         ids=["classifier", "encoder", "family-not-in-the-registry"])
def test_roberta_without_a_tokenizer_maximum_exports_at_its_usable_length(task, known, tmp_path, monkeypatch):
    from toolchain.export import families
    from toolchain.export.core import export

    if not known:  # a RoBERTa clone under another model_type: its embeddings' padding_idx tells the offset
        monkeypatch.setattr(families, "PADDING_OFFSET_FAMILIES", frozenset())
    src = build_roberta_without_max_length(tmp_path / "m", task)
    manifest = export(src, tmp_path / "art", task=task)  # parity runs an over-long input through the graph
    assert manifest["max_length"] == POSITIONS - PAD - 1
    assert manifest["variants"]["fp32"]["metrics"]["parity"]["max_abs_diff"] <= manifest["variants"]["fp32"]["tolerance"]["atol"]


def test_usable_positions_per_family():
    import transformers

    from toolchain.export.families import usable_positions

    assert usable_positions(transformers.XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert usable_positions(transformers.RobertaConfig(max_position_embeddings=40, pad_token_id=3)) == 36
    assert usable_positions(transformers.BertConfig(max_position_embeddings=512, pad_token_id=0)) == 512
    assert usable_positions(transformers.GPT2Config(n_positions=64)) == 64
    assert usable_positions(transformers.T5Config()) is None  # relative positions: no table to run past
