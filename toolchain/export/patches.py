"""Trace-time patches: a family's PyTorch code that the ONNX trace gets wrong, replaced (only while optimum's
exporter traces it) by code that computes the same thing without a data-dependent Python branch.

The trace runs the model once on a dummy input and keeps the path that input took: a Python ``if`` on tensor values
becomes a constant. DeepSeek-V3's mixture of experts (transformers' DeepseekV3MoE.moe) runs an expert only
``if token_indices.numel() > 0``, so the traced graph holds only the experts the dummy input was routed to, and
texts routed elsewhere get wrong outputs (a parity miss of ~0.08 on a 2-layer model; the graph was wrong, not the
reference). optimum patches Qwen3-MoE's block the same way; the patch here does so for DeepSeek-V3.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable, Iterator


def _dense_moe(self: Any, hidden_states: Any, topk_indices: Any, topk_weights: Any) -> Any:
    """DeepseekV3MoE.moe without the branch: every expert on every token, weighted by its routing weight (zero for
    tokens not routed to it), summed. The same result up to float rounding, at the cost of running every expert."""
    import torch

    weights = torch.zeros(hidden_states.shape[0], len(self.experts), dtype=topk_weights.dtype,
                          device=hidden_states.device).scatter_add(1, topk_indices, topk_weights)
    out = torch.zeros_like(hidden_states, dtype=topk_weights.dtype)
    for i, expert in enumerate(self.experts):
        out = out + expert(hidden_states) * weights[:, i : i + 1]
    return out.type(hidden_states.dtype)


# model_type -> (module, class, method, replacement) patched while the exporter traces that family's models.
TRACE_PATCHES: dict[str, list[tuple[str, str, str, Callable[..., Any]]]] = {
    "deepseek_v3": [("transformers.models.deepseek_v3.modeling_deepseek_v3", "DeepseekV3MoE", "moe", _dense_moe)],
}


@contextlib.contextmanager
def trace_patches(model_type: str | None) -> Iterator[None]:
    """Apply MODEL_TYPE's TRACE_PATCHES for the duration of the block, restoring the originals after."""
    undo = []
    try:
        for module, cls_name, method, replacement in TRACE_PATCHES.get(model_type or "", []):
            cls = getattr(importlib.import_module(module), cls_name)
            undo.append((cls, method, cls.__dict__[method]))
            setattr(cls, method, replacement)
        yield
    finally:
        for cls, method, original in reversed(undo):
            setattr(cls, method, original)
