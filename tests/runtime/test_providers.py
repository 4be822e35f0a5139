"""Provider negotiation: CUDA only when it really initialises; 'cuda' never silently falls back."""

from __future__ import annotations

import logging

import onnxruntime as ort
import pytest

from toolchain.runtime import ProviderError, load
from toolchain.runtime import providers
from toolchain.runtime.providers import CPU, CUDA, negotiate


class FakeSession:
    def __init__(self, providers):
        self._providers = providers

    def get_providers(self):
        return self._providers


def factory(cuda_works: bool):
    asked = []

    def make(providers):
        asked.append(list(providers))
        if CUDA in providers and cuda_works:
            return FakeSession([CUDA, CPU])
        return FakeSession([CPU])  # what ONNX Runtime does when CUDA fails: silently CPU

    return make, asked


def test_auto_uses_cuda_when_it_initialises():
    make, asked = factory(cuda_works=True)
    n = negotiate("auto", make, [CUDA, CPU])
    assert n.provider == "cuda" and n.fallback_reason is None
    assert asked == [[CUDA, CPU]]


def test_auto_reports_silent_fallback():
    make, _ = factory(cuda_works=False)
    n = negotiate("auto", make, [CUDA, CPU])
    assert n.provider == "cpu"
    assert "did not initialise" in n.fallback_reason


def test_auto_without_cuda_build():
    make, asked = factory(cuda_works=True)
    n = negotiate("auto", make, [CPU])
    assert n.provider == "cpu" and "no CUDA provider" in n.fallback_reason
    assert asked == [[CPU]]


def _fallback_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "falling back to CPU" in r.getMessage()]


@pytest.mark.parametrize("device", [True, False])
def test_auto_fallback_warns_only_where_there_is_a_gpu(device, monkeypatch, caplog):
    """A GPU that failed to start is news (one warning); no NVIDIA device at all is not (reason recorded only)."""
    monkeypatch.setattr(providers, "has_nvidia_device", lambda: device)
    monkeypatch.setattr(providers, "_warned", set())
    make, _ = factory(cuda_works=False)
    with caplog.at_level(logging.DEBUG, logger="toolchain.runtime"):
        reasons = [negotiate("auto", make, [CUDA, CPU]).fallback_reason for _ in range(3)]
    assert all("did not initialise" in r for r in reasons)
    if device:
        assert len(_fallback_warnings(caplog)) == 1 and "no NVIDIA device" not in reasons[0]
    else:
        assert _fallback_warnings(caplog) == [] and "no NVIDIA device" in reasons[0]
        with pytest.raises(ProviderError, match="provider 'cuda' was requested"):  # cuda still fails loudly
            negotiate("cuda", make, [CUDA, CPU])


def test_has_nvidia_device_reads_device_nodes(monkeypatch):
    monkeypatch.setattr(providers.glob, "glob", lambda pattern: [])
    assert providers.has_nvidia_device() is False
    monkeypatch.setattr(providers.glob, "glob", lambda pattern: ["/dev/nvidia0"] if "nvidia" in pattern else [])
    assert providers.has_nvidia_device() is True


def test_load_without_a_gpu_is_quiet(tiny_artifact, monkeypatch, caplog):
    """On this kind of machine (CUDA build of onnxruntime, no device) a load logs no fallback warning."""
    monkeypatch.setattr(providers, "has_nvidia_device", lambda: False)
    monkeypatch.setattr(providers, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="toolchain.runtime"):
        info = load(tiny_artifact("bert"), provider="auto").info()
    if info["provider"] == "cpu" and CUDA in ort.get_available_providers():
        assert "no NVIDIA device" in info["fallback_reason"]
    assert _fallback_warnings(caplog) == []


@pytest.mark.parametrize("available", [[CUDA, CPU], [CPU]])
def test_cuda_never_falls_back(available):
    make, _ = factory(cuda_works=False)
    with pytest.raises(ProviderError, match="provider 'cuda' was requested"):
        negotiate("cuda", make, available)


def test_cpu_is_cpu():
    make, asked = factory(cuda_works=True)
    assert negotiate("cpu", make, [CUDA, CPU]).provider == "cpu"
    assert asked == [[CPU]]


def _cuda_usable() -> bool:
    return ort.get_device() == "GPU" and CUDA in ort.get_available_providers() and _probe()


def _probe() -> bool:
    try:
        import subprocess

        return subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    except OSError:
        return False


def test_real_provider_on_this_machine(tiny_artifact):
    art = tiny_artifact("bert")
    auto = load(art, provider="auto")
    if _cuda_usable():
        assert auto.info()["provider"] == "cuda"
        assert load(art, provider="cuda").info()["providers"][0] == CUDA
    else:
        assert auto.info()["provider"] == "cpu"
        with pytest.raises(ProviderError):
            load(art, provider="cuda")
    assert load(art, provider="cpu").info()["providers"] == [CPU]
