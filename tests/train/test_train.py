"""Training from recipes (smoke runs): loads with transformers, exports, resumes; data errors are clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import classifier_recipe

from toolchain.train.recipe import load_recipe
from toolchain.runtime import ToolchainError
from toolchain.train.trainer import train

MODELS = Path(__file__).resolve().parents[2] / "models"
TRAINED = sorted(p for p in MODELS.glob("*.toml") if load_recipe(p).train or load_recipe(p).pretrain)

RECIPE = classifier_recipe("{model}", "{train}")


@pytest.mark.parametrize("path", TRAINED, ids=[p.stem for p in TRAINED])
def test_every_training_recipe_smoke_trains_loads_and_exports(path, tmp_path):
    import transformers

    from toolchain.export.core import export
    from toolchain.export.modules import read_module_dir

    recipe = load_recipe(path)
    result = train(path, out=tmp_path / "model", smoke=True)
    out = result.model_dir
    assert (out / "model.safetensors").is_file() and (out / "training.json").is_file()
    metrics = json.loads((out / "training.json").read_text())
    if recipe.model is not None and recipe.task == "text2text-generation":  # an encoder-decoder module dir
        assert read_module_dir(out).task == recipe.task and (out / "eval-pairs.tsv").is_file()
        assert 0.0 <= metrics["dev_exact_match"] <= 1.0 and metrics["train_examples"] == 64
    elif recipe.model is not None:  # a user's own nn.Module: a module dir (export/modules.py), not an HF model dir
        assert read_module_dir(out).labels == ["negative", "positive"]
        assert 0.0 <= metrics["dev_accuracy"] <= 1.0 and metrics["train_examples"] == 64
    elif recipe.task == "image-classification":  # an HF image classifier with its image processor
        model = transformers.AutoModelForImageClassification.from_pretrained(str(out))
        assert model.config.model_type == recipe.source.architecture
        assert (out / "preprocessor_config.json").is_file() and 0.0 <= metrics["dev_accuracy"] <= 1.0
    elif recipe.task == "image-to-text":  # an HF vision encoder-decoder with its caption tokenizer and image processor
        model = transformers.AutoModelForImageTextToText.from_pretrained(str(out))
        assert model.config.model_type == recipe.source.architecture and (out / "tokenizer.json").is_file()
        assert (out / "preprocessor_config.json").is_file() and 0.0 <= metrics["test_seen_exact_match"] <= 1.0
    elif recipe.task == "text-classification":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(out))
        assert model.config.id2label == {0: "negative", 1: "positive"}
        assert 0.0 <= metrics["dev_accuracy"] <= 1.0 and metrics["train_examples"] == 64
    else:  # a decoder trained on plain text, with its held-out text kept for the quantization gate
        model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
        assert model.config.model_type == recipe.source.architecture
        assert metrics["val_loss"] > 0 and metrics["sample"].startswith("ROMEO:")
        assert (out / "heldout.txt").read_text().strip()
    if recipe.pretrain:
        assert (tmp_path / "model.pretrained" / "model.safetensors").is_file()
        assert result.metrics["pretrain"]["held_out_loss"] > 0
        assert result.metrics["pretrain"]["objective"] == recipe.pretrain.objective
    assert not (tmp_path / "model.checkpoints").exists()  # removed once the model is written
    manifest = export(out, tmp_path / "art", task=recipe.task)
    assert manifest["labels"] == (["negative", "positive"] if recipe.task == "text-classification"
                                  else recipe.labels if recipe.task == "image-classification" else None)


@pytest.fixture
def recipe_dir(tiny_model, tmp_path):
    (tmp_path / "train.tsv").write_text("label\tsentence\n" + "".join(f"{i % 2}\tsentence number {i}\n" for i in range(40)))
    model = tiny_model("bert", "text-classification")

    def make(train_text: str | None = None, **replace) -> Path:
        if train_text is not None:
            (tmp_path / "train.tsv").write_text(train_text)
        text = RECIPE.format(model=model, train="train.tsv")
        for old, new in replace.items():
            text = text.replace(old, new)
        path = tmp_path / "r.toml"
        path.write_text(text)
        return path

    return make


@pytest.mark.parametrize(
    "train_text, replace, message",
    [
        (None, {"train.tsv": "missing.tsv"}, "missing.tsv does not exist"),
        ("label\ttext\n1\thi\n", {}, r"has columns \['label', 'text'\], not 'sentence'"),
        ("label\tsentence\n1\tfine\n7\tbad label\n", {}, r"line 3: label '7' is not one of the declared labels \['negative', 'positive'\]"),
        ("label\tsentence\n", {}, "has no examples \\(empty split\\)"),
    ],
)
def test_data_problems_are_clear_errors(recipe_dir, tmp_path, train_text, replace, message):
    path = recipe_dir(train_text, **{'"' + k + '"': '"' + v + '"' for k, v in replace.items()})
    with pytest.raises(ToolchainError, match=message):
        train(path, out=tmp_path / "out", smoke=True)
    assert not (tmp_path / "out").exists()


def test_label_names_are_accepted(recipe_dir, tmp_path):
    path = recipe_dir("label\tsentence\npositive\tgreat\nnegative\tawful\n1\tgood\n")
    result = train(path, out=tmp_path / "out", smoke=True)
    assert result.metrics["finetune"]["train_examples"] == 3


def test_interrupted_training_resumes_from_checkpoint(recipe_dir, tmp_path, monkeypatch):
    import toolchain.train.fit as fit_mod

    real = fit_mod.progress_callback

    def interrupting():
        base = real()

        class Interrupt(base):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 3:
                    raise KeyboardInterrupt  # as Ctrl-C after the step-2 checkpoint
                return super().on_step_end(args, state, control, **kwargs)

        return Interrupt

    path = recipe_dir()
    recipe = load_recipe(path)
    recipe.train.max_steps, recipe.train.save_steps, recipe.train.batch_size = 4, 2, 4
    monkeypatch.setattr(fit_mod, "progress_callback", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert (tmp_path / "out.checkpoints" / "checkpoint-2").is_dir()

    monkeypatch.setattr(fit_mod, "progress_callback", real)
    said = []
    result = train(recipe, out=tmp_path / "out", progress=said.append)
    assert any("resuming from the last checkpoint" in s for s in said)
    assert result.metrics["finetune"]["step"] == 4
    assert not (tmp_path / "out.checkpoints").exists()
