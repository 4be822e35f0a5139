"""The image-to-text training stage: a word-level caption tokenizer trained here, a ViT + GPT-2 vision
encoder-decoder built from the recipe's configs whose loss scores each caption position (not the one after),
trained and saved with its tokenizer and image processor, with exact match and BLEU-4 on seen and held-out rows."""

from __future__ import annotations

import json

import pytest

from tiny_vision import shapes_table
from toolchain.data import shapes
from toolchain.train.caption_stage import Captions, _collator, _rows, build_captioner, caption_tokenizer, score_captions
from toolchain.train.recipe import RecipeError, load_recipe
from toolchain.train.stages import STAGES
from toolchain.train.trainer import train

RECIPE = """task = "image-to-text"
[source]
architecture = "vision-encoder-decoder"
config = {{ encoder = {{ model_type = "vit", image_size = 32, patch_size = 8, hidden_size = 16, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 32 }}, decoder = {{ model_type = "gpt2", n_embd = {dec}, n_layer = 1, n_head = 2, n_positions = 24 }} }}
[data.train]
path = "data/train.tsv"
image = "image"
{target}
[data.dev]
path = "data/dev.tsv"
image = "image"
target = "caption"
[train]
epochs = 1.0
batch_size = 8
learning_rate = 1e-3
augment = {augment}
"""


def recipe(folder, target='target = "caption"', dec=16, augment="[]", task="image-to-text"):
    shapes_table(folder / "data", 16, "train")
    shapes_table(folder / "data", 16, "dev")
    path = folder / "r.toml"
    path.write_text(RECIPE.format(target=target, dec=dec, augment=augment).replace("image-to-text", task))
    return path


def test_the_caption_tokenizer_is_one_token_a_word_and_ends_with_eos():
    tok = caption_tokenizer(["a small red circle above a large blue square", "a medium green star"], 32)
    assert [tok.convert_ids_to_tokens(i) for i in range(4)] == ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    ids = tok("A small Red star")["input_ids"]
    assert len(ids) == 5 and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "a small red star"
    assert tok("a pink star")["input_ids"][1] == tok.unk_token_id


def test_the_loss_scores_each_caption_position(tmp_path):
    """labels are the next tokens already: the loss is the cross-entropy of logits[t] against labels[t]."""
    import torch

    tok = caption_tokenizer(["a small red circle", "a large blue square"], 32)
    model, processor = build_captioner(load_recipe(recipe(tmp_path)), tok)
    labels = torch.tensor([tok("a small red circle")["input_ids"], tok("a large blue square")["input_ids"]])
    pixels = torch.randn(2, 3, 32, 32)
    out = model(pixel_values=pixels, labels=labels)
    same_position = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), labels.reshape(-1))
    assert float(out.loss) == pytest.approx(float(same_position), rel=1e-5)
    assert processor.size == {"height": 32, "width": 32} and model.config.decoder_start_token_id == tok.bos_token_id


def test_trains_and_saves_tokenizer_and_processor_with_caption_scores(tmp_path):
    import transformers

    result = train(recipe(tmp_path), out=tmp_path / "model", smoke=True)
    out = result.model_dir
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json", "training.json"} <= files
    metrics = json.loads((out / "training.json").read_text())
    assert metrics["train_examples"] == 16 and metrics["dev_examples"] == 16
    assert metrics["dev_seen_examples"] + metrics["dev_heldout_examples"] == 16  # the table's heldout column
    assert 0 <= metrics["dev_exact_match"] <= 1 and 0 <= metrics["dev_heldout_bleu4"] <= 1
    model = transformers.AutoModelForImageTextToText.from_pretrained(out)
    assert type(model).__name__ == "VisionEncoderDecoderModel" and model.config.decoder.add_cross_attention


def test_scores_split_seen_and_heldout(tmp_path):
    from toolchain.train.caption_stage import Captions

    data = Captions(tmp_path, [tmp_path] * 4, ["a red star", "a blue star", "a red circle", "A Big Square"],
                    [False, True, False, True])
    scores = score_captions(["a red star", "a blue circle", "a red circle", "a big square"], data, "dev")
    assert scores["dev_exact_match"] == 0.75 and scores["dev_seen_exact_match"] == 1.0
    assert scores["dev_heldout_exact_match"] == 0.5 and scores["dev_seen_bleu4"] == pytest.approx(1.0)


def test_recipes_name_image_and_caption_columns_and_equal_hidden_sizes(tmp_path):
    assert callable(STAGES["image-to-text"])
    with pytest.raises(RecipeError, match=r"needs an 'image' and a 'target' column for image-to-text"):
        train(recipe(tmp_path, target=""), out=tmp_path / "m", smoke=True)
    with pytest.raises(RecipeError, match=r"hidden size 16 differs from the decoder's 24; make them equal\.$"):
        train(recipe(tmp_path, dec=24), out=tmp_path / "m2", smoke=True)


def test_redraw_draws_each_training_caption_anew_every_time(tmp_path):
    import torch
    import transformers

    captions = ["a large blue square below a small red circle", "a medium green star"]
    tok = caption_tokenizer(captions, 32)
    rows = _rows(Captions(tmp_path, [tmp_path] * 2, captions, None), tok, redraw=True)
    assert [r["pixel_values"].caption for r in rows] == captions  # a scene to draw, not a decoded file
    assert all(isinstance(r["pixel_values"], shapes.Scene) for r in rows)
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    collate = _collator(processor, seed=0)
    first, second = collate(rows), collate(rows)
    assert first["pixel_values"].shape == (2, 3, 32, 32) and torch.equal(first["labels"], second["labels"])
    assert not torch.equal(first["pixel_values"], second["pixel_values"])  # never the same picture twice
    assert torch.equal(_collator(processor, seed=0)(rows)["pixel_values"], first["pixel_values"])  # seeded


def test_redraw_trains_and_needs_shapes_captions(tmp_path):
    result = train(recipe(tmp_path, augment='["redraw"]'), out=tmp_path / "model", smoke=True)
    assert json.loads((result.model_dir / "training.json").read_text())["settings"]["augment"] == ["redraw"]
    table = tmp_path / "data" / "train.tsv"
    lines = table.read_text().splitlines()
    cells = lines[3].split("\t")
    cells[1] = "a witty, moving film"
    table.write_text("\n".join(lines[:3] + ["\t".join(cells)] + lines[4:]) + "\n")
    path = tmp_path / "r.toml"  # the same recipe, the table changed under it
    with pytest.raises(RecipeError, match=r'train.tsv line 4: augment \["redraw"\] draws pictures of shapes captions'):
        train(path, out=tmp_path / "m2", smoke=True)


def test_augmentations_that_change_the_caption_are_refused(tmp_path):
    with pytest.raises(RecipeError, match=r"augment 'flip' would change what a caption says"):
        train(recipe(tmp_path, augment='["flip"]'), out=tmp_path / "m", smoke=True)
    with pytest.raises(RecipeError, match=r"augment 'redraw' is for image-to-text; an image classifier takes flip"):
        load_recipe(recipe(tmp_path, augment='["redraw"]', task="image-classification").parent / "r.toml")
