"""bench --provider cuda and the CUDA command-line options without a GPU: the refusal in one sentence, and
the provider, options and PyTorch CUDA baselines plumbed through (children faked)."""

from __future__ import annotations

import json
import shutil

import pytest

from toolchain.bench import core as bench_mod
from toolchain.bench import cuda as cuda_bench
from toolchain.bench import decoder, encoder, harness
from toolchain.bench.core import bench, format_table
from toolchain.bench.decoder import bench_generate
from toolchain.cli.commands import main
from toolchain.runtime import ToolchainError
from toolchain.runtime.manifest import Manifest, Variant, read_manifest
from toolchain.runtime.model import choose_variant


def _cuda_works() -> bool:
    return cuda_bench.cuda_unusable() is None


needs_no_cuda = pytest.mark.skipif("_cuda_works()", reason="CUDA works on this machine: tests/gpu covers it")


@pytest.fixture
def art(tiny_artifact, tmp_path):
    return shutil.copytree(tiny_artifact("bert"), tmp_path / "art")


@needs_no_cuda
def test_bench_cuda_refuses_in_one_sentence(art):
    before = (art / "manifest.json").read_bytes()
    with pytest.raises(ToolchainError) as info:
        bench(art, provider="cuda", runs=1, batches=(1,), seqs=(8,))
    message = str(info.value)
    assert message.startswith("bench --provider cuda needs ONNX Runtime's CUDA provider, but ")
    assert message.endswith("or use --provider cpu.") and "\n" not in message
    assert not (art / "bench.json").exists() and (art / "manifest.json").read_bytes() == before


@needs_no_cuda
def test_cli_bench_cuda_exits_2_with_one_line(art, capsys):
    assert main(["bench", str(art), "--provider", "cuda", "--runs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bench --provider cuda needs")


@needs_no_cuda
def test_torch_children_never_fall_back_to_cpu():
    job = {"provider": "cuda", "threads": 1, "auto_class": "AutoModel", "source": "/nonexistent", "cuda": {},
           "runs": 1, "feeds": [], "texts": [], "batches": [1], "new_tokens": 2, "dtype": "fp16"}
    with pytest.raises(RuntimeError, match="cannot use CUDA here, so there is no PyTorch CUDA baseline"):
        encoder.torch_encoder_child(job)
    with pytest.raises(RuntimeError, match="cannot use CUDA here"):
        decoder.torch_generate_child(job)


def _fake_child(jobs):
    def run(fn, job):
        jobs.append((fn.__name__, job))
        if fn.__name__ in ("onnx_child", "torch_generate_child"):  # decoders: per batch
            return {"batches": {b: {"seconds": 0.1, "tokens": 4, "ttft_ms": 5.0} for b in job["batches"]},
                    "peak_rss_mb": 10.0}
        ms = 1.0 if fn is encoder.onnx_encoder_child else 2.0 if job.get("dtype") == "fp32" else 1.5
        shapes = [{"batch": b, "seq": s, "p50_ms": ms, "p95_ms": ms * 1.1, "items_per_s": b * 1000 / ms}
                  for (b, s), _ in job["feeds"]]
        return {"shapes": shapes, "real": None, "provider_used": job["provider"], "peak_rss_mb": 10.0}

    return run


def test_bench_cuda_plumbs_provider_options_and_torch_baselines(art, monkeypatch):
    jobs = []
    monkeypatch.setattr(cuda_bench, "require_cuda", lambda cuda=None: jobs.append(("require_cuda", cuda)))
    monkeypatch.setattr(harness, "in_child", _fake_child(jobs))
    report = bench(art, provider="cuda", real=False, runs=2, batches=(1,), seqs=(8,),
                   cuda={"device_id": 0, "gpu_mem_limit": "1GB"})
    assert jobs[0] == ("require_cuda", {"device_id": 0, "gpu_mem_limit": 10**9, "cudnn_conv_algo_search": "EXHAUSTIVE",
                                        "use_tf32": True, "check_placement": True})
    onnx = [j for n, j in jobs[1:] if n == "onnx_encoder_child"]
    torch = [j for n, j in jobs[1:] if n == "torch_encoder_child"]
    assert [j["provider"] for j in onnx] == ["cuda"] and onnx[0]["cuda"]["gpu_mem_limit"] == 10**9
    assert [(j["provider"], j["dtype"]) for j in torch] == [("cuda", "fp32"), ("cuda", "fp16")]
    assert set(report["rows"]) == {"fp32", "pytorch", "pytorch-fp16"} and report["provider"] == "cuda"
    assert report["rows"]["pytorch-fp16"]["precision"] == "fp16"
    assert report["rows"]["fp32"]["shapes"][0]["p50_vs_pytorch"] == pytest.approx(0.5)
    table = format_table(report)
    assert "provider cuda" in table and "pytorch-fp16" in table
    data = json.loads((art / "manifest.json").read_text())
    assert set(data["variants"]["fp32"]["latency"]) == {"cuda"} and "cuda" in data["bench"]


def test_bench_cpu_keeps_one_torch_baseline(art, monkeypatch):
    jobs = []
    monkeypatch.setattr(cuda_bench, "require_cuda", lambda cuda=None: pytest.fail("no CUDA check for cpu"))
    monkeypatch.setattr(harness, "in_child", _fake_child(jobs))
    report = bench(art, provider="cpu", real=False, runs=2, batches=(1,), seqs=(8,))
    assert set(report["rows"]) == {"fp32", "pytorch"}
    assert [(j["provider"], j["dtype"]) for n, j in jobs if n == "torch_encoder_child"] == [("cpu", "fp32")]


def test_decoder_bench_on_cuda_uses_generate_on_the_gpu(tmp_path, monkeypatch):
    jobs = []
    monkeypatch.setattr(harness, "in_child", _fake_child(jobs))
    manifest = Manifest(tmp_path, "text-generation", {"fp32": Variant("fp32", "model.onnx", "0" * 64, 100, "fp32")},
                        {"max_length": 64, "source": {"path": str(tmp_path)}})
    rows = bench_generate(manifest, ["fp32"], (1, 2), "cuda", 2, 1, True, new_tokens=4, cuda={"device_id": 0})
    assert [n for n, _ in jobs] == ["onnx_child", "torch_generate_child", "torch_generate_child"]  # no optimum on CUDA
    assert [j.get("dtype") for n, j in jobs[1:]] == ["fp32", "fp16"]
    assert all(j["provider"] == "cuda" and j["cuda"] == {"device_id": 0} for _, j in jobs)
    assert set(rows) == {"fp32", "pytorch", "pytorch-fp16"} and rows["pytorch-fp16"]["precision"] == "fp16"


def test_cli_cuda_options_reach_load_and_bench(tiny_artifact, monkeypatch, capsys):
    seen = {}

    def fake(name):
        def call(*args, **kwargs):
            seen[name] = kwargs
            raise ToolchainError("stop here.")
        return call

    import toolchain.runtime

    monkeypatch.setattr(toolchain.runtime, "load", fake("load"))
    monkeypatch.setattr(bench_mod, "bench", fake("bench"))
    art = str(tiny_artifact("bert"))
    assert main(["run", art, "hi", "--provider", "cuda", "--device-id", "1", "--gpu-mem-limit", "2GB"]) == 2
    assert seen["load"]["cuda"] == {"device_id": 1, "gpu_mem_limit": "2GB"} and seen["load"]["provider"] == "cuda"
    assert main(["bench", art, "--provider", "cuda", "--device-id", "0"]) == 2
    assert seen["bench"]["cuda"] == {"device_id": 0} and seen["bench"]["provider"] == "cuda"
    assert main(["run", art, "hi"]) == 2 and seen["load"]["cuda"] == {}


def test_cli_bad_gpu_mem_limit_is_one_sentence(tiny_artifact, capsys):
    assert main(["run", str(tiny_artifact("bert")), "hi", "--gpu-mem-limit", "lots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gpu_mem_limit 'lots' is not a size" in err[0]


def test_manifest_from_a_cuda_bench_drives_auto(art, monkeypatch):
    """What bench --provider cuda records is what auto reads on CUDA, and only there."""
    monkeypatch.setattr(cuda_bench, "require_cuda", lambda cuda=None: None)
    monkeypatch.setattr(harness, "in_child", _fake_child([]))
    data = json.loads((art / "manifest.json").read_text())
    data["variants"]["fp16"] = dict(data["variants"]["fp32"], precision="fp16")
    (art / "manifest.json").write_text(json.dumps(data))
    bench(art, provider="cuda", real=False, vs_pytorch=False, runs=2, batches=(1,), seqs=(8,), variants=["fp16"])
    data = json.loads((art / "manifest.json").read_text())
    data["variants"]["fp32"]["latency"] = {"cuda": {"p50_ms": 2.0}}
    (art / "manifest.json").write_text(json.dumps(data))
    m = read_manifest(art)
    assert m.variants["fp16"].latency["cuda"]["p50_ms"] == 1.0
    assert choose_variant(m, "auto", "cuda") == "fp16" and choose_variant(m, "auto", "cpu") == "fp32"
