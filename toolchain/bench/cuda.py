"""`toolchain bench --provider cuda`: the CUDA check up front and the PyTorch CUDA baselines.

bench.py measures every engine the same way on either provider; this module adds what only CUDA needs:
a refusal in one sentence where ONNX Runtime's CUDA provider cannot start (never a silent CPU bench), the
PyTorch baselines on the GPU (fp32 and fp16 eager, as a CUDA user would run them), and transformers'
generate() on the GPU for decoders. Only the spawned PyTorch children import torch.
"""

from __future__ import annotations

import time
from typing import Any

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
            raise CudaStartError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None

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


def torch_generate_child(job: dict[str, Any]) -> dict[str, Any]:
    """transformers' generate() on the GPU in job["dtype"], greedy (spawned child)."""
    import torch
    import transformers

    from toolchain.bench.core import _peak_rss_mb
    from toolchain.bench.decoder import PROMPT, _rate

    device = torch_device(torch, job)
    dtype = torch.float16 if job.get("dtype") == "fp16" else torch.float32
    tok = transformers.AutoTokenizer.from_pretrained(job["source"])
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = transformers.AutoModelForCausalLM.from_pretrained(job["source"], torch_dtype=dtype).eval().to(device)
    out = {}
    for batch in job["batches"]:
        enc = tok([PROMPT] * batch, return_tensors="pt", padding=True)
        enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}

        def run():
            with torch.inference_mode():
                first = time.perf_counter()
                model.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=pad)
                torch.cuda.synchronize()
                first = time.perf_counter() - first
                ids = model.generate(**enc, max_new_tokens=job["new_tokens"], do_sample=False, pad_token_id=pad)
                torch.cuda.synchronize()
            return ids.shape[1] - enc["input_ids"].shape[1], first

        out[batch] = _rate(run, job["runs"])
    return {"batches": out, "peak_rss_mb": _peak_rss_mb(),
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / (1 << 20)}
