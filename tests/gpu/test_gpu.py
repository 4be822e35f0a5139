"""On a real NVIDIA GPU: the provider is really CUDA, no heavy node silently on CPU, fp32 and fp16 parity with
PyTorch on CUDA (MiniLM and a tiny Llama), and IO-binding generation equal to CPU greedy.
Skipped (with the reason) wherever ONNX Runtime's CUDA provider cannot start; see conftest.py."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.runtime import load, read_manifest
from toolchain.runtime.providers import CUDA, CudaOptions

pytestmark = pytest.mark.gpu

TEXTS = [
    "A man is playing a guitar.",
    "ok",
    "The new movie is awesome, with a script that keeps surprising you until the very last scene.",
    "Ünïcödé and emoji 🙂 survive tokenization.",
    " ".join(["Several sentences of filler text that go on for a while."] * 6),
] * 4
PROMPTS = ["ROMEO:", "the film was a delight", "it rained all day and"]
EXACT = CudaOptions(use_tf32=False)  # TF32 off where results are compared to fp32 PyTorch bit for bit-ish


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _placement_ok(info: dict) -> None:
    assert info["provider"] == "cuda" and info["providers"][0] == CUDA, info
    assert info["placement"].startswith("profiled"), info["placement"]
    assert info["heavy_cpu_fallback"] is False, f"heavy nodes on CPU: {info['cpu_fallback_nodes']}"


def _torch_embed(torch, source: str, texts: list[str], dtype) -> np.ndarray:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(source)
    model = transformers.AutoModel.from_pretrained(source, torch_dtype=dtype).eval().to("cuda")
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to("cuda")
    with torch.inference_mode():
        hidden = model(**enc)[0].float()
    m = enc["attention_mask"].unsqueeze(-1).float()
    vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(vec, dim=-1).cpu().numpy()


def _source(art) -> str:
    import json

    return json.loads((art / "manifest.json").read_text())["source"]["path"]


# -- MiniLM ------------------------------------------------------------------------------------------------
def test_minilm_runs_on_cuda_for_real(gpu_minilm):
    for variant in ("fp32", "fp16"):
        info = load(gpu_minilm, variant=variant, provider="cuda").info()
        _placement_ok(info)
        assert info["io_binding"] is True and info["cuda_options"]["device_id"] == 0
    assert load(gpu_minilm, provider="auto").info()["provider"] == "cuda"


def test_minilm_fp32_matches_pytorch_cuda(gpu_minilm, torch_cuda):
    ref = _torch_embed(torch_cuda, _source(gpu_minilm), TEXTS, torch_cuda.float32)
    exact = load(gpu_minilm, variant="fp32", provider="cuda", cuda=EXACT).embed(TEXTS)
    assert np.abs(exact - ref).max() < 1e-4 and _cos(exact, ref).min() > 0.99999
    tf32 = load(gpu_minilm, variant="fp32", provider="cuda").embed(TEXTS)  # the default: TF32 tensor cores
    assert _cos(tf32, ref).min() > 0.9999


def test_minilm_fp16_close_to_fp32_and_pytorch_fp16(gpu_minilm, torch_cuda):
    fp32 = load(gpu_minilm, variant="fp32", provider="cuda", cuda=EXACT).embed(TEXTS)
    fp16 = load(gpu_minilm, variant="fp16", provider="cuda").embed(TEXTS)
    assert fp16.dtype == np.float32 and np.isfinite(fp16).all()
    assert _cos(fp16, fp32).min() >= 0.999
    ref16 = _torch_embed(torch_cuda, _source(gpu_minilm), TEXTS, torch_cuda.float16)
    assert _cos(fp16, ref16).min() >= 0.999


def test_minilm_fused_fp16_runs_on_cuda_and_stays_close(gpu_minilm):
    """The fused candidate (Attention, SkipLayerNormalization... in fp16): every node on CUDA, close to fp32."""
    fused = load(gpu_minilm, variant="fp16-fused", provider="cuda")
    _placement_ok(fused.info())
    fp32 = load(gpu_minilm, variant="fp32", provider="cuda", cuda=EXACT).embed(TEXTS)
    assert _cos(fused.embed(TEXTS), fp32).min() >= 0.999


def test_minilm_cpu_and_cuda_agree(gpu_minilm):
    cpu = load(gpu_minilm, variant="fp32", provider="cpu").embed(TEXTS)
    cuda = load(gpu_minilm, variant="fp32", provider="cuda", cuda=EXACT).embed(TEXTS)
    assert _cos(cpu, cuda).min() > 0.99999


# -- the tiny decoder ----------------------------------------------------------------------------------------
def _torch_logits(torch, source, ids, mask, dtype) -> np.ndarray:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(source, torch_dtype=dtype).eval().to("cuda")
    position_ids = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    with torch.inference_mode():
        out = model(input_ids=torch.as_tensor(ids).cuda(), attention_mask=torch.as_tensor(mask).cuda(),
                    position_ids=torch.as_tensor(position_ids).cuda())
    return out.logits.float().cpu().numpy()


def test_decoder_runs_on_cuda_for_real(gpu_decoder):
    _, art = gpu_decoder
    for variant in ("fp32", "fp16"):
        _placement_ok(load(art, variant=variant, provider="cuda").info())


def test_decoder_fp32_and_fp16_logits_match_pytorch_cuda(gpu_decoder, torch_cuda):
    src, art = gpu_decoder
    fp32 = load(art, variant="fp32", provider="cuda", cuda=EXACT)
    feeds, mask = fp32.encode(PROMPTS)
    keep = mask.astype(bool)
    ours = fp32.run_feeds(feeds)[keep]
    ref = _torch_logits(torch_cuda, str(src), feeds["input_ids"], mask, torch_cuda.float32)[keep]
    assert np.abs(ours - ref).max() < 1e-3
    ours16 = load(art, variant="fp16", provider="cuda").run_feeds(feeds)[keep]
    ref16 = _torch_logits(torch_cuda, str(src), feeds["input_ids"], mask, torch_cuda.float16)[keep]
    assert _cos(ours16, ours).min() >= 0.999 and _cos(ours16, ref16).min() >= 0.999


def test_io_binding_generate_equals_cpu_greedy(gpu_decoder):
    _, art = gpu_decoder
    cpu = load(art, variant="fp32", provider="cpu")
    cuda = load(art, variant="fp32", provider="cuda", cuda=EXACT)
    assert cuda.info()["io_binding"] is True
    assert cuda.generate(PROMPTS, max_new_tokens=24) == cpu.generate(PROMPTS, max_new_tokens=24)
    assert cuda.generate(PROMPTS[0], max_new_tokens=24) == cpu.generate(PROMPTS[0], max_new_tokens=24)
    streamed = "".join(cuda.generate(PROMPTS[1], max_new_tokens=16, stream=True))
    assert streamed == cpu.generate(PROMPTS[1], max_new_tokens=16)


def test_fused_decoder_fp16_runs_on_cuda_and_matches_cpu(gpu_genai_decoder):
    """ONNX Runtime GenAI's graph (GroupQueryAttention, shared KV buffer): its CUDA kernels are fp16, so the
    fp16 variant is the GPU one; its prompt logits match the CPU fp32 graph's and streaming adds up."""
    _, art = gpu_genai_decoder
    assert read_manifest(art).exporter == "ort-genai"
    fp16 = load(art, variant="fp16", provider="cuda")
    _placement_ok(fp16.info())
    cpu = load(art, variant="fp32", provider="cpu")
    feeds, mask = cpu.encode(PROMPTS)
    keep = mask.astype(bool)
    assert _cos(fp16.run_feeds(feeds)[keep], cpu.run_feeds(feeds)[keep]).min() >= 0.999
    text = fp16.generate(PROMPTS[1], max_new_tokens=16)
    assert "".join(fp16.generate(PROMPTS[1], max_new_tokens=16, stream=True)) == text
