"""Decoders export with their KV cache, and parity is greedy continuations equal to PyTorch's."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import DECODER_ARCHS
from toolchain.runtime import ParityError, load, read_manifest


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_decoder_exports_with_kv_cache_and_greedy_parity(tiny_decoder, arch):
    src, art = tiny_decoder(arch)
    m = read_manifest(art)
    assert m.task == "text-generation"
    parity = m.variants["fp32"].metrics["parity"]
    assert parity["tokens_match"] is True and parity["max_abs_diff"] <= parity["atol"]
    names = [i.name for i in m.inputs]
    assert "past_key_values.0.key" in names and "past_key_values.1.value" in names
    assert any(o.name.startswith("present.") for o in m.outputs)
    assert m.generation.eos_token_ids == (0,)
    graph = onnx.load(str(art / "model.onnx"), load_external_data=False).graph
    assert len([i for i in graph.input if i.name.startswith("past_key_values")]) == 4  # one graph, 2 layers x k/v
    assert load(art).generate("To be", max_new_tokens=5) == load(art).generate(["To be"], max_new_tokens=5)[0]
    # Llama-family graphs come from ONNX Runtime GenAI's builder (fused attention, right-padded prompts).
    # Phi-3: the builder fails on this tiny config ('multi_cache'), so auto falls back to optimum and says why.
    fused = arch in ("llama", "qwen2", "mistral")
    assert m.exporter == ("ort-genai" if fused else "optimum")
    assert bool(m.exporter_info.fallback) == (arch == "phi3")
    assert m.generation.padding_side == ("right" if fused else "left")
    assert any(n.op_type == "GroupQueryAttention" for n in graph.node) == fused


def test_auto_falls_back_to_optimum_when_the_fused_graph_misses_parity(tiny_decoder, tmp_path, monkeypatch):
    from toolchain.export import core as export_module
    from toolchain.export import genai as genai_export

    src, _ = tiny_decoder("llama")
    real = genai_export.build

    def broken(source, into, trust_remote_code=False):
        import onnx
        from onnx import numpy_helper

        path = real(source, into, trust_remote_code)
        model = onnx.load(str(path))
        head = next(t for t in model.graph.initializer if "lm_head" in t.name)
        head.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(head)[:, ::-1].copy(), head.name))
        onnx.save(model, str(path))
        return path

    monkeypatch.setattr(genai_export, "build", broken)
    manifest = export_module.export(src, tmp_path / "art", task="text-generation")
    assert manifest["exporter"] == "optimum"
    assert "ort-genai" in manifest["exporter_fallback"] and "PyTorch" in manifest["exporter_fallback"]
    assert load(tmp_path / "art").generate(["To be", "the film was"], max_new_tokens=4)
    with pytest.raises(ParityError):
        export_module.export(src, tmp_path / "forced", task="text-generation", exporter="ort-genai")
    assert not (tmp_path / "forced").exists()


def test_exporter_choice_is_checked(tiny_decoder, tmp_path):
    from toolchain.export.core import export
    from toolchain.runtime import ToolchainError

    src, _ = tiny_decoder("gpt2")
    with pytest.raises(ToolchainError, match="does not handle a gpt2 model"):
        export(src, tmp_path / "a", task="text-generation", exporter="ort-genai")
    with pytest.raises(ToolchainError, match="exporter 'tvm' is not known"):
        export(src, tmp_path / "b", task="text-generation", exporter="tvm")


def test_head_sizes_the_fused_attention_cannot_run_go_to_optimum():
    from toolchain.export import genai as genai_export

    llama = {"architectures": ["LlamaForCausalLM"], "hidden_size": 32, "num_attention_heads": 4}
    assert not genai_export.handles(llama)  # head size 8
    assert genai_export.handles({**llama, "hidden_size": 64})
    assert not genai_export.handles({**llama, "hidden_size": 64, "auto_map": {"AutoModel": "x.Y"}})
    assert not genai_export.handles({"architectures": ["GPT2LMHeadModel"], "hidden_size": 64, "num_attention_heads": 4})


def test_greedy_parity_catches_a_wrong_continuation(tiny_decoder, tmp_path, monkeypatch):
    from toolchain.export.core import export
    from toolchain.runtime import generate as gen_module

    src, _ = tiny_decoder("llama")
    real = gen_module.pick

    def off_by_one(logits, seen, s, rng):
        out = real(logits, seen, s, rng)
        return (out + 1) % logits.shape[1]

    monkeypatch.setattr(gen_module, "pick", off_by_one)
    with pytest.raises(ParityError, match="tokens differ from PyTorch's"):
        export(src, tmp_path / "bad", task="text-generation")
    assert not (tmp_path / "bad").exists()


def test_decoder_quantizes_through_the_gate(tiny_decoder, tmp_path):
    import shutil

    from toolchain.variants.quantize import quantize

    _, art = tiny_decoder("llama")
    dst = tmp_path / "art"
    shutil.copytree(art, dst)
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(["the film was a delight from start to finish", "actors shine in a witty script"] * 10))
    report = quantize(dst, "int8-dynamic", calib=calib, limit=20)
    gate = read_manifest(dst).variants["int8"].metrics["gate"]
    assert {"token_agreement", "perplexity", "fp32_perplexity", "perplexity_ratio"} <= set(gate)
    # the thresholds stated here (the generate gate's default budget 0.02), not read back from what the gate
    # wrote; tests/variants/test_gate_rules.py checks the rule itself on synthetic rows, both ways
    budget = 0.02
    assert report.passed == (gate["token_agreement"] >= 1 - 4 * budget and gate["perplexity_ratio"] <= 1 + budget)
    out = load(dst, variant="int8").generate("the film", max_new_tokens=4)
    assert isinstance(out, str)
    assert np.isfinite(gate["perplexity"])


def test_decoder_bench_reports_tokens_per_second_against_both_baselines(tiny_decoder, tmp_path):
    import json
    import shutil

    from toolchain.bench.core import bench, format_table

    _, art = tiny_decoder("gpt2")
    dst = tmp_path / "art"
    shutil.copytree(art, dst)
    report = bench(dst, batches=(1, 2), runs=1, vs_pytorch=True)
    rows = report["rows"]
    assert {"fp32", "pytorch", "optimum"} <= set(rows), report["notes"]
    for name in ("fp32", "pytorch", "optimum"):
        for shape in rows[name]["shapes"]:
            assert shape["tokens_per_s"] > 0 and shape["ttft_ms"] > 0 and shape["tokens"] >= 1
    assert "tokens_per_s_vs_pytorch" in rows["fp32"]["shapes"][0] and "tokens_per_s_vs_optimum" in rows["fp32"]["shapes"][0]
    assert "ttft" in format_table(report) and "decode step" in format_table(report)
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["variants"]["fp32"]["latency"]["cpu"]["p50_ms"] > 0
    assert (dst / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
