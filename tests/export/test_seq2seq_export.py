"""Hugging Face encoder-decoders through export(): optimum's graphs rewritten to the two-graph contract,
parity enforced (greedy ids equal transformers' generate()), the Translator serving them, and int8
variants of several components gated on their outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("optimum.exporters.onnx")
torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
import tiny_seq2seq_hf as tiny  # noqa: E402

from toolchain.export.core import export  # noqa: E402
from toolchain.runtime import load  # noqa: E402
from toolchain.runtime.errors import SourceError  # noqa: E402
from toolchain.variants.quantize import quantize  # noqa: E402

SOURCES = ["a witty and moving film", "the plot", "hello world, this is a longer source sentence"]


@pytest.fixture(scope="module")
def bart(tmp_path_factory):
    root = tmp_path_factory.mktemp("bart")
    src = tiny.build("bart", root / "model")
    manifest = export(src, root / "art", task="text2text-generation")
    return src, root / "art", manifest


def test_the_artifact_has_an_encoder_and_a_decoder_and_passed_parity(bart):
    src, art, manifest = bart
    fp32 = manifest["variants"]["fp32"]
    assert sorted(fp32["components"]) == ["decoder", "encoder"]
    assert manifest["exporter"] == "optimum-seq2seq"
    assert fp32["metrics"]["parity"]["tokens_match"] is True
    assert manifest["generation"]["bos_token_id"] == 2 and manifest["generation"]["eos_token_ids"] == [2]
    assert manifest["generation"]["max_positions"] == json.loads((src / "config.json").read_text())[
        "max_position_embeddings"]  # BART's decoder numbers target positions from a table
    assert (art / "encoder.onnx").is_file() and (art / "decoder.onnx").is_file()


def test_translate_equals_transformers_greedy_generate(bart):
    import transformers

    src, art, _ = bart
    model = load(art)
    ref = transformers.AutoModelForSeq2SeqLM.from_pretrained(src).eval()
    tok = transformers.AutoTokenizer.from_pretrained(src)
    for text, ours in zip(SOURCES, model.translate(SOURCES, max_new_tokens=10)):
        enc = tok([text], return_tensors="pt")
        with torch.inference_mode():
            out = ref.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=10)
        assert ours == tok.decode(out[0], skip_special_tokens=True)


def test_int8_quantizes_each_component_and_is_gated(bart, tmp_path):
    _, art, _ = bart
    calib = tmp_path / "sources.txt"
    calib.write_text("\n".join(SOURCES * 4) + "\n", encoding="utf-8")
    report = quantize(art, "int8-dynamic", calib=calib, max_drop=0.99)
    assert report.passed and report.gate.metrics["texts"] == 12
    plans = [t["plan"] for t in report.tried]
    assert plans[0] == "every component quantized" and "decoder quantized (encoder kept in fp32)" in plans
    manifest = json.loads((art / "manifest.json").read_text())
    int8 = manifest["variants"]["int8"]["components"]
    assert sorted(int8) == ["decoder", "encoder"]
    quantized = {"every component quantized": ["decoder", "encoder"], "decoder quantized (encoder kept in fp32)":
                 ["decoder"], "encoder quantized (decoder kept in fp32)": ["encoder"]}[report.plan]
    for component in ("encoder", "decoder"):  # quantized: a new file; kept in fp32: the fp32 file, shared
        if component in quantized:  # a name no other variant uses (a hash is added where one was taken)
            assert int8[component]["file"].startswith(f"{component}.int8.")
        else:
            assert int8[component]["file"] == f"{component}.onnx"
    assert load(art, variant="int8").translate("the plot", max_new_tokens=4) is not None


def test_a_strict_budget_can_keep_the_encoder_in_fp32(bart, tmp_path):
    """With a budget of 0 only a candidate that changes no output passes; the closest is kept when none does."""
    _, art, _ = bart
    calib = tmp_path / "sources.txt"
    calib.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    report = quantize(art, "int8-dynamic", calib=calib, max_drop=0.0)
    assert len(report.tried) == 3
    manifest = json.loads((art / "manifest.json").read_text())
    files = {c: v["file"] for c, v in manifest["variants"]["int8"]["components"].items()}
    fp32 = {c: v["file"] for c, v in manifest["variants"]["fp32"]["components"].items()}
    kept = [c for c in files if files[c] == fp32[c]]  # a component left in fp32 shares the fp32 file
    assert len(kept) == {"every component quantized": 0}.get(report.plan, 1)


def test_int8_static_is_refused_for_encoder_decoders(bart, tmp_path):
    _, art, _ = bart
    calib = tmp_path / "sources.txt"
    calib.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(Exception, match="int8-dynamic for encoder-decoders"):
        quantize(art, "int8-static", calib=calib)


def test_an_encoder_only_model_is_refused_for_text2text(tmp_path):
    src = tiny.build_bert(tmp_path / "bert")
    with pytest.raises(SourceError, match="cannot be loaded as AutoModelForSeq2SeqLM for task 'text2text-generation'"):
        export(src, tmp_path / "art", task="text2text-generation")
    assert not (tmp_path / "art").exists()
