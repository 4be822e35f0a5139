"""`toolchain bench --provider cuda`: the CUDA check up front and the PyTorch CUDA baselines.

The encoder and decoder benches measure every engine the same way on either provider; this module adds
what only CUDA needs: a refusal in one sentence where ONNX Runtime's CUDA provider cannot start (never a
silent CPU bench), which PyTorch baselines run on the GPU (fp32 and fp16 eager, as a CUDA user would run
them) and the torch device a PyTorch child must use. It imports no other bench module; only the spawned
PyTorch children import torch.
"""

from __future__ import annotations

from typing import Any

from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.providers import CudaOptions, CudaStartError, cuda_problem, session_providers

# PyTorch rows per provider: (row name, dtype). On CUDA fp16 eager is what the fp16 variant competes with.
TORCH_BASELINES: dict[str, tuple[tuple[str, str], ...]] = {
    "cpu": (("pytorch", "fp32"),),
    "cuda": (("pytorch", "fp32"), ("pytorch-fp16", "fp16")),
}


def _tiny_model() -> bytes:
    """A one-node graph (Identity), enough to start a provider without an artifact."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def cuda_unusable(cuda: CudaOptions | dict | None = None) -> str | None:
    """Why ONNX Runtime's CUDA provider cannot run here with these options, or None when it can."""
    import onnxruntime as ort

    options = CudaOptions.coerce(cuda)
    blob = _tiny_model()

    def make(provider_list: list[str]):
        try:
            return ort.InferenceSession(blob, providers=session_providers(provider_list, options))
        except Exception as exc:  # onnxruntime's untyped errors
            raise CudaStartError(first_line(exc)) from None

    ort.set_default_logger_severity(4)  # the failure is reported in our sentence, not ORT's log lines
    try:
        return cuda_problem(make, ort.get_available_providers(), options)
    finally:
        ort.set_default_logger_severity(2)


def require_cuda(cuda: CudaOptions | dict | None = None) -> None:
    """Raise one sentence when bench cannot run on CUDA here."""
    reason = cuda_unusable(cuda)
    if reason:
        raise ToolchainError(f"bench --provider cuda needs ONNX Runtime's CUDA provider, but {reason}; run it on a "
                             "machine with an NVIDIA GPU and onnxruntime-gpu, or use --provider cpu.")


def torch_device(torch: Any, job: dict[str, Any]) -> str:
    """The torch device for a bench child: the provider's, never a silent substitute."""
    if job["provider"] != "cuda":
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} cannot use CUDA here, so there is no PyTorch CUDA baseline")
    return f"cuda:{(job.get('cuda') or {}).get('device_id', 0)}"
