"""Encoder-decoder modules as recipes (task text2text-generation, [model]): trained here on the generated
dates, exported as an encoder graph and a cached decoder-step graph, parity on greedy ids (a broken cache
is caught), and the recipe's mistakes refused in one sentence."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from toolchain.export.core import export  # noqa: E402
from toolchain.export.modules import MODULE_FILE  # noqa: E402
from toolchain.runtime import load  # noqa: E402
from toolchain.runtime.errors import ParityError  # noqa: E402
from toolchain.train.recipe import RecipeError, load_recipe  # noqa: E402
from toolchain.train.seq2seq_stage import EVAL_PAIRS  # noqa: E402
from toolchain.train.tokenizers import seq2seq_bpe  # noqa: E402
from toolchain.train.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATES = ROOT / "models" / "data" / "dates"
MODELS = {
    "transformer": ("toolchain.train.modules.seq2seq_transformer:build",
                    "d_model = 32\nheads = 2\nencoder_layers = 1\ndecoder_layers = 1\nff = 64\nmax_length = 96"),
    "lstm": ("toolchain.train.modules.seq2seq_lstm:build", "embed = 32\nhidden = 32\nattention = \"luong\""),
}


def recipe(tmp_path: Path, arch: str, target: str = "iso", extra: str = "", config: str = "") -> Path:
    entry, body = MODELS[arch]
    splits = "".join(f"""
        [data.{name}]
        path = "{DATES / (name + '.tsv')}"
        text = "source"
        target = "{target}"
        limit = {limit}
        """ for name, limit in (("train", 400), ("dev", 40)))
    text = textwrap.dedent(f"""
        name = "tiny-{arch}"
        task = "text2text-generation"
        [model]
        module = "{entry}"
        [model.config]
        vocab_size = 300
        """) + body + "\n" + config + textwrap.dedent(splits) + textwrap.dedent("""
        [train]
        epochs = 1.0
        max_length = 48
        batch_size = 32
        learning_rate = 2e-3
        logging_steps = 5
        """) + extra
    path = tmp_path / f"tiny-{arch}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=sorted(MODELS))
def trained(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    result = train(recipe(tmp, request.param), out=tmp / "model")
    return request.param, tmp, result


def test_training_writes_a_module_dir_with_its_scores_and_eval_pairs(trained):
    _, _, result = trained
    d = result.model_dir
    record = json.loads((d / MODULE_FILE).read_text())
    assert record["task"] == "text2text-generation" and record["labels"] is None
    metrics = json.loads((d / "training.json").read_text())
    assert 0 <= metrics["dev_exact_match"] <= 1 and metrics["dev_examples"] == 40 and metrics["target"] == "iso"
    assert metrics["losses"][-1]["loss"] < metrics["losses"][0]["loss"]  # it learns
    pairs = (d / EVAL_PAIRS).read_text(encoding="utf-8").splitlines()
    assert pairs[0] == "source\ttarget" and len(pairs) == 41
    assert all(len(line.split("\t")) == 2 for line in pairs)


def test_export_writes_two_components_and_parity_passes(trained):
    arch, tmp, result = trained
    manifest = export(result.model_dir, tmp / "art")
    fp32 = manifest["variants"]["fp32"]
    assert sorted(fp32["components"]) == ["decoder", "encoder"]
    assert fp32["metrics"]["parity"]["tokens_match"] is True
    assert manifest["generation"]["bos_token_id"] == 1 and manifest["generation"]["eos_token_ids"] == [2]
    # the Transformer's learned target positions (max_length = 96) cap decoding; the LSTM has none
    assert manifest["generation"]["max_positions"] == (96 if "transformer" in arch else None)
    assert manifest["exporter"] == "torch" and "decoder: dynamo" in manifest["exporter_method"]
    model = load(tmp / "art")
    assert isinstance(model.translate("March 3, 2021", max_new_tokens=12), str)


def test_a_decoder_graph_that_forgets_its_cache_fails_parity(tmp_path, monkeypatch):
    """The step graph attends only to the new token (the cache is still returned): greedy output then
    differs from the module's own uncached decoding, and the export is refused with nothing written."""
    import toolchain.train.modules.seq2seq_transformer as st

    result = train(recipe(tmp_path, "transformer"), out=tmp_path / "model")
    real = st.self_attention

    def forgetful(attn, x, past_k, past_v):
        out, k, v = real(attn, x, past_k[:, :, :0], past_v[:, :, :0])
        return out, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)

    monkeypatch.setattr(st, "self_attention", forgetful)
    with pytest.raises(ParityError, match="tokens differ"):
        export(result.model_dir, tmp_path / "art")
    assert not (tmp_path / "art").exists()


def test_the_tokenizer_keeps_digits_apart_and_round_trips():
    tok = seq2seq_bpe(["2026-11-25", "2026年11月25日", "nov 25 '26", "one thousand"] * 20, 100, 32)
    pieces = tok.encode("2026-11-25", add_special_tokens=False).tokens
    assert [p for p in pieces if p.strip("▁")] == list("2026-11-25")
    for text in ("2026-11-25", "2026年11月25日", "1205"):
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text
    assert tok.encode("one thousand").tokens[-1] == "[EOS]"


def test_a_split_without_a_target_column_is_refused(tmp_path):
    path = recipe(tmp_path, "lstm")
    path.write_text(path.read_text().replace('target = "iso"\n', "", 1))
    with pytest.raises(RecipeError, match="needs a 'target' column for text2text-generation"):
        load_recipe(path)


def test_a_target_column_the_file_lacks_is_one_sentence(tmp_path):
    with pytest.raises(Exception, match="'fr'"):
        train(recipe(tmp_path, "lstm", target="fr"), out=tmp_path / "model", smoke=True)
    assert not (tmp_path / "model").exists()


def test_module_ids_that_are_not_the_tokenizers_are_refused(tmp_path):
    with pytest.raises(RecipeError, match="bos_id 5"):
        train(recipe(tmp_path, "lstm", config="bos_id = 5"), out=tmp_path / "model", smoke=True)


def test_label_smoothing_is_checked(tmp_path):
    path = recipe(tmp_path, "lstm", extra="label_smoothing = 1.5\n")
    with pytest.raises(RecipeError, match="label_smoothing must be in"):
        load_recipe(path)


def test_a_module_recipe_for_a_task_without_a_module_stage_is_refused(tmp_path):
    path = recipe(tmp_path, "lstm")
    path.write_text(path.read_text().replace('task = "text2text-generation"', 'task = "text-generation"'))
    with pytest.raises(RecipeError, match="not 'text-generation'"):
        train(path, out=tmp_path / "model", smoke=True)


def test_the_chinese_target_is_a_recipe_option(tmp_path):
    result = train(recipe(tmp_path, "lstm", target="zh"), out=tmp_path / "model", smoke=True)
    pairs = (result.model_dir / EVAL_PAIRS).read_text(encoding="utf-8")
    assert "年" in pairs or "万" in pairs or "千" in pairs or "百" in pairs
