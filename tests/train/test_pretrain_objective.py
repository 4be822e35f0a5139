"""[pretrain] objective: masked-lm (the default, BERT) or causal-lm (GPT-2); checked when the recipe loads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conftest import CORPUS

from toolchain.train.recipe import RecipeError, load_recipe

MODELS = Path(__file__).resolve().parents[2] / "models"


def _recipe(tmp_path, architecture: str, objective: str | None) -> Path:
    (tmp_path / "text.txt").write_text("\n".join(CORPUS) + "\n")
    lines = ['task = "text-classification"', "[source]", f'architecture = "{architecture}"', "vocab_size = 300",
             "[pretrain]", *([f'objective = "{objective}"'] if objective else []), "[[pretrain.data]]",
             'path = "text.txt"', "[pretrain.train]", "max_length = 16"]
    path = tmp_path / "r.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_recipes_name_their_objective_and_masked_lm_is_the_default(tmp_path):
    assert load_recipe(MODELS / "bert-mini-sst2.toml").pretrain.objective == "masked-lm"
    assert load_recipe(MODELS / "gpt2-sst2.toml").pretrain.objective == "causal-lm"
    assert load_recipe(_recipe(tmp_path, "bert", None)).pretrain.objective == "masked-lm"


@pytest.mark.parametrize("architecture,objective,says", [
    ("gpt2", "next-token", "'next-token' is not known; use one of masked-lm, causal-lm"),
    ("bert", "causal-lm", "trains a gpt2 or llama from scratch, not bert"),
    ("gpt2", None, "trains a bert or distilbert or roberta from scratch, not gpt2"),
])
def test_an_objective_that_does_not_fit_is_one_sentence(tmp_path, architecture, objective, says):
    with pytest.raises(RecipeError, match=says):
        load_recipe(_recipe(tmp_path, architecture, objective))


def test_causal_lm_makes_a_gpt2_with_pad_eos_and_full_blocks(tmp_path):
    from toolchain.train.objectives import objective_of, pretrain_model
    from toolchain.train.tokenizers import train_tokenizer

    recipe = load_recipe(_recipe(tmp_path, "gpt2", "causal-lm"))
    recipe.source = replace(recipe.source, config={"n_embd": 16, "n_layer": 1, "n_head": 2})
    settings = recipe.pretrain.train
    tok = train_tokenizer(recipe, CORPUS, settings)
    assert "token_type_ids" not in tok("a text")  # GPT-2 would add them to its embeddings
    model = pretrain_model(recipe, tok, settings)
    assert type(model).__name__ == "GPT2LMHeadModel" and model.config.n_positions == settings.max_length
    assert model.config.pad_token_id == model.config.eos_token_id == tok.pad_token_id == tok.eos_token_id
    blocks = objective_of(recipe).blocks(tok, CORPUS[:8], settings)
    assert blocks and all(len(b["input_ids"]) == settings.max_length for b in blocks)  # no padding
    stream = [i for b in blocks for i in b["input_ids"]]
    first = tok(CORPUS[0], add_special_tokens=False)["input_ids"]
    assert stream[: len(first) + 1] == first + [tok.eos_token_id]  # texts end with end-of-text


def test_masked_lm_blocks_keep_their_special_tokens(tmp_path):
    from toolchain.train.objectives import objective_of, pretrain_model
    from toolchain.train.tokenizers import train_tokenizer

    recipe = load_recipe(_recipe(tmp_path, "bert", None))
    recipe.source = replace(recipe.source, config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "intermediate_size": 32})
    settings = recipe.pretrain.train
    tok = train_tokenizer(recipe, CORPUS, settings)
    assert type(pretrain_model(recipe, tok, settings)).__name__ == "BertForMaskedLM"
    blocks = objective_of(recipe).blocks(tok, CORPUS[:8], settings)
    assert all(b["input_ids"][0] == tok.cls_token_id and b["input_ids"][-1] == tok.sep_token_id for b in blocks)


def test_train_summary_names_the_objective_and_reads_older_metrics():
    from types import SimpleNamespace

    from toolchain.cli.render import train_summary

    new = {"pretrain": {"objective": "causal-lm", "held_out_loss": 5.594, "train_seconds": 349.0}}
    assert "pretraining (causal-lm) held-out loss 5.594 (349 s)" in train_summary(SimpleNamespace(model_dir="m", metrics=new))
    old = {"pretrain": {"held_out_mlm_loss": 2.5, "train_seconds": 10.0}}  # a training.json from before objectives
    assert "pretraining (masked-lm) held-out loss 2.500" in train_summary(SimpleNamespace(model_dir="m", metrics=old))
