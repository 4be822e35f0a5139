"""GPU tests run only where ONNX Runtime's CUDA provider really starts (tests/gpu/run_on_gpu.sh prepares such a
machine); everywhere else each test marked `gpu` is skipped with the reason, so the CPU suite stays green.
Nothing heavy is imported on a machine without an NVIDIA device."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
from pathlib import Path

import pytest


@functools.lru_cache(maxsize=None)
def cuda_skip_reason() -> str | None:
    """Why ONNX Runtime cannot run on CUDA here, or None when it can."""
    if not shutil.which("nvidia-smi") and not any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl")):
        return "no NVIDIA GPU on this machine (no nvidia-smi, no /dev/nvidia*)"
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401  a compatible torch loads CUDA and cuDNN first: ONNX Runtime's documented way to share them
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from pip's nvidia-* packages; prints what it cannot find
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            ort.preload_dlls()
    from toolchain.bench.cuda import cuda_unusable

    reason = cuda_unusable()
    return f"ONNX Runtime cannot use CUDA here: {reason}" if reason else None


def pytest_collection_modifyitems(config, items):
    gpu_items = [i for i in items if i.get_closest_marker("gpu")]
    if gpu_items and cuda_skip_reason():
        skip = pytest.mark.skip(reason=cuda_skip_reason())
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def torch_cuda():
    """torch with CUDA, for the PyTorch baselines; skips the test where torch has none."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} has no CUDA here: no PyTorch CUDA baseline to compare with")
    return torch


@pytest.fixture(scope="session")
def gpu_work(tmp_path_factory) -> Path:
    """TOOLCHAIN_GPU_WORK (run_on_gpu.sh sets it, so the bench reuses the artifacts) or a temporary folder."""
    work = os.environ.get("TOOLCHAIN_GPU_WORK")
    if work:
        Path(work).mkdir(parents=True, exist_ok=True)
        return Path(work)
    return tmp_path_factory.mktemp("gpu-work")


@pytest.fixture(scope="session")
def gpu_minilm(gpu_work) -> Path:
    from .artifacts import minilm, with_fp16, with_fused_fp16

    return with_fused_fp16(with_fp16(minilm(gpu_work)))


@pytest.fixture(scope="session")
def gpu_decoder(gpu_work) -> tuple[Path, Path]:
    from .artifacts import decoder, with_fp16

    src, art = decoder(gpu_work)
    return src, with_fp16(art)


@pytest.fixture(scope="session")
def gpu_genai_decoder(gpu_work) -> tuple[Path, Path]:
    from .artifacts import decoder, with_fp16

    src, art = decoder(gpu_work, exporter="ort-genai")
    return src, with_fp16(art)
