"""Users' own nn.Modules as recipes ([model] module = "pkg.mod:build"): the seed GRU and Transformer
classifiers handle padding, train from scratch into a module dir that rebuilds exactly, and bad entry
points are one sentence with nothing written."""

from __future__ import annotations

import json
import random
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from toolchain.export.modules import MODULE_FILE, build_module, read_module_dir  # noqa: E402
from toolchain.runtime.errors import ToolchainError  # noqa: E402
from toolchain.train.module_stage import accuracy_of, fit_module, pad_batch, save_module_dir  # noqa: E402
from toolchain.train.recipe import RecipeError, Training, load_recipe  # noqa: E402
from toolchain.train.tokenizers import plain_wordpiece  # noqa: E402
from toolchain.train.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SST2 = ROOT / "models" / "data" / "sst2"
ENTRIES = {"gru": "toolchain.train.modules.gru:build", "transformer": "toolchain.train.modules.transformer:build"}
TINY = {"gru": {"vocab_size": 50, "embed": 16, "hidden": 16},
        "transformer": {"vocab_size": 50, "d_model": 16, "heads": 2, "layers": 2, "ff": 32, "max_length": 32}}


def tiny(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    module, spec = build_module(ENTRIES[arch], TINY[arch])
    return module.eval(), spec


@pytest.mark.parametrize("arch", sorted(ENTRIES))
def test_a_padded_batch_gives_each_item_its_own_logits(arch):
    module, spec = tiny(arch)
    lengths = [3, 7, 5, 1, 7, 2]
    feeds = spec.example(lengths)
    with torch.inference_mode():
        batch = module(feeds["input_ids"], feeds["attention_mask"])
        alone = torch.cat([module(feeds["input_ids"][i : i + 1, :n], feeds["attention_mask"][i : i + 1, :n])
                           for i, n in enumerate(lengths)])
        wider = torch.nn.functional.pad(feeds["input_ids"], (0, 4)), torch.nn.functional.pad(feeds["attention_mask"], (0, 4))
        assert batch.shape == (len(lengths), 2)
        torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(module(*wider), batch, atol=1e-5, rtol=0)  # more padding changes nothing


def separable(n: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """Token 5 somewhere in the text means positive: a task both architectures learn in a few dozen steps."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [2] + [rng.randrange(6, 50) for _ in range(rng.randrange(2, 12))]
        label = rng.randrange(2)
        if label:
            ids[rng.randrange(1, len(ids))] = 5
        out.append((ids, label))
    return out


@pytest.mark.parametrize("arch", sorted(ENTRIES))
def test_the_loss_goes_down_and_a_saved_module_dir_rebuilds_exactly(arch, tmp_path):
    module, spec = tiny(arch)
    settings = Training(max_steps=60, batch_size=16, learning_rate=1e-2, warmup_ratio=0.0, logging_steps=20)
    losses = fit_module(module, separable(480), settings, progress=lambda msg: None)
    assert [row["step"] for row in losses] == [20, 40, 60]
    assert losses[-1]["loss"] < 0.7 * losses[0]["loss"], losses
    assert accuracy_of(module, separable(200, seed=1), 32) > 0.8

    tok = plain_wordpiece(["good film", "bad film"], 50, 32)
    record = {"entry": ENTRIES[arch], "config": TINY[arch], "task": "text-classification",
              "labels": ["negative", "positive"], "max_length": 32, "pad_id": 0, "search": ""}
    save_module_dir(tmp_path / "m", module, tok, record, {"dev_accuracy": 1.0})
    rebuilt, _ = read_module_dir(tmp_path / "m").build()
    ids, mask, _ = pad_batch(separable(7, seed=2))
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(ids, mask), module(ids, mask), atol=0, rtol=0)


def recipe_text(model: str, out_of_tree: str = "") -> str:
    return textwrap.dedent(f"""\
        task = "text-classification"
        labels = ["negative", "positive"]
        {out_of_tree}
        [model]
        {model}

        [data.train]
        path = "{SST2 / 'train.tsv'}"
        label = "label"

        [data.dev]
        path = "{SST2 / 'dev.tsv'}"
        text = "content"
        label = "label"

        [train]
        max_length = 32
        """)


def write_recipe(folder: Path, model: str, name: str = "r.toml") -> Path:
    path = folder / name
    path.write_text(recipe_text(model), encoding="utf-8")
    return path


@pytest.mark.parametrize("arch", sorted(ENTRIES))
def test_a_smoke_run_writes_a_module_dir_the_runtime_tokenizer_and_export_can_use(arch, tmp_path):
    config = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in TINY[arch].items() if k != "vocab_size") + " }"
    recipe = write_recipe(tmp_path, f'module = "{ENTRIES[arch]}"\nconfig = {config}')
    result = train(recipe, out=tmp_path / "out", smoke=True)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MODULE_FILE, "model.safetensors", "tokenizer.json", "training.json"])
    trained = json.loads((out / "training.json").read_text())
    assert trained["dev_examples"] == 32 and trained["settings"]["max_steps"] == 3
    assert result.metrics["finetune"]["dev_accuracy"] == trained["dev_accuracy"]

    # The module rebuilt from the dir, fed by the saved tokenizer as the runtime feeds it (right padding,
    # pad id 0), scores the dev split exactly as training did.
    from tokenizers import Tokenizer

    from toolchain.data.texts import read_split

    module_dir = read_module_dir(out)
    assert (module_dir.entry, module_dir.pad_id, module_dir.max_length) == (ENTRIES[arch], 0, 32)
    module, _ = module_dir.build()
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    loaded = load_recipe(recipe)
    dev = read_split(SST2 / "dev.tsv", replace(loaded.data.dev, limit=32), loaded.labels)
    enc = tok.encode_batch(dev.texts)
    assert len({len(e.ids) for e in enc}) == 1 and enc[0].ids[0] == tok.token_to_id("[CLS]")
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    with torch.inference_mode():
        right = (module(ids, mask).argmax(-1) == torch.tensor(dev.labels)).float().mean().item()
    assert right == pytest.approx(trained["dev_accuracy"])


USER_MODULES = {
    "not_a_module": ("def build(config):\n    from toolchain.export.modules import text_classifier_io\n"
                     "    return 42, text_classifier_io(10)\n", "where an nn.Module is needed"),
    "wrong_outputs": ("import torch\nfrom toolchain.export.modules import text_classifier_io\n"
                      "class M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                      "        self.e = torch.nn.Embedding(10, 2)\n"
                      "    def forward(self, input_ids, attention_mask):\n"
                      "        return {'scores': self.e(input_ids).mean(1)}\n"
                      "def build(config):\n    return M(), text_classifier_io(10)\n", "but the IO spec names outputs"),
    "broken_import": ("import no_such_package_here\n", "cannot be imported"),
    "build_raises": ("def build(config):\n    return config['width'], None\n", "failed on the recipe's \\[model.config\\] \\('width'\\)"),
}


@pytest.mark.parametrize("case", ["missing", *USER_MODULES])
def test_a_bad_entry_point_is_one_sentence_and_nothing_is_written(case, tmp_path):
    entry = "no_such_pkg.model:build"
    message = "cannot be imported"
    if case in USER_MODULES:  # a user's package beside the recipe (search = the recipe's folder)
        source, message = USER_MODULES[case]
        (tmp_path / f"usermod_{case}.py").write_text(source, encoding="utf-8")
        entry = f"usermod_{case}:build"
    recipe = write_recipe(tmp_path, f'module = "{entry}"')
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ToolchainError, match=message) as err:
        train(recipe, out=tmp_path / "out", smoke=True)
    assert "\n" not in str(err.value) and str(err.value).rstrip().endswith(".")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == before  # nothing written


@pytest.mark.parametrize("arch", sorted(ENTRIES))
def test_an_unknown_config_key_names_the_allowed_ones(arch):
    with pytest.raises(ToolchainError, match="unknown .* key 'hiden'; allowed keys are .*vocab_size"):
        build_module(ENTRIES[arch], {"hiden": 3})


def test_a_users_own_module_beside_the_recipe_trains(tmp_path):
    (tmp_path / "usermod_good.py").write_text(textwrap.dedent("""\
        from toolchain.train.modules.gru import build as gru

        def build(config):
            return gru({**config, "embed": 8, "hidden": 8})
        """), encoding="utf-8")
    result = train(write_recipe(tmp_path, 'module = "usermod_good:build"'), out=tmp_path / "out", smoke=True)
    assert read_module_dir(result.model_dir).search == str(tmp_path)


def test_the_gate_min_accuracy_is_judged_on_a_real_run_not_a_smoke_run(tmp_path):
    text = recipe_text('module = "toolchain.train.modules.gru:build"\nconfig = { embed = 8, hidden = 8 }')
    text = text.replace('label = "label"', 'label = "label"\nlimit = 40').replace("max_length = 32", "max_steps = 2")
    path = tmp_path / "r.toml"
    path.write_text(text + "\n[gate]\nmin_accuracy = 0.99\n", encoding="utf-8")
    real = train(path, out=tmp_path / "real").metrics["finetune"]
    assert real["dev_examples"] == 40 and real["min_accuracy"] == 0.99 and real["reached_min_accuracy"] is False
    assert "reached_min_accuracy" not in train(path, out=tmp_path / "smoke", smoke=True).metrics["finetune"]


@pytest.mark.parametrize("name", ["gru-sst2", "transformer-cls-sst2"])
def test_the_seed_recipes_parse(name):
    recipe = load_recipe(ROOT / "models" / f"{name}.toml")
    assert recipe.model.module == ENTRIES["gru" if name.startswith("gru") else "transformer"]
    assert recipe.gate.min_accuracy == 0.80 and recipe.data.dev is not None
    build_module(recipe.model.module, recipe.model.config)  # every [model.config] key is one build() knows


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("[model]", "[source]\npretrained = \"x\"\n[model]"), "give exactly one of"),
    (lambda t: t.replace('module = "m:build"', 'module = "m:build"\nflavour = 1'), "unknown key 'flavour'"),
    (lambda t: t.replace('module = "m:build"', ""), "missing required key 'module'"),
    (lambda t: t.replace("[train]", "[[pretrain.data]]\npath = \"x.txt\"\n[train]"), "no \\[pretrain\\]"),
])
def test_model_section_mistakes_are_clear_errors(tmp_path, edit, message):
    path = tmp_path / "r.toml"
    path.write_text(edit(recipe_text('module = "m:build"')), encoding="utf-8")
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gru-sst2", "transformer-cls-sst2"])
def test_the_seed_recipes_build_end_to_end_and_classify(name, tmp_path):
    """recipe -> train -> export (torch) -> int8 -> validate -> bench, then the torch-free runtime classifies."""
    from toolchain.pipeline import build
    from toolchain.runtime import load

    summary = build(ROOT / "models" / f"{name}.toml", out=tmp_path / name, smoke=True)
    assert summary["ok"] and summary["model"] == str(tmp_path / f"{name}.model")
    assert {row["variant"] for row in summary["rows"]} >= {"fp32", "int8"}
    manifest = json.loads((tmp_path / name / "manifest.json").read_text())
    assert manifest["exporter"] == "torch" and manifest["tokenizer"]["pad_id"] == 0
    model = load(tmp_path / name, variant="fp32")
    texts = ["a gorgeous , witty film", "dull", "the plot is thin but the acting , at least , is committed"]
    together = model.classify(texts)
    assert [r["label"] for r in together] == [model.classify([t])[0]["label"] for t in texts]
    for one, alone in zip(together, (model.classify([t])[0] for t in texts)):
        assert one["score"] == pytest.approx(alone["score"], abs=1e-5)  # padding changes nothing at run time
