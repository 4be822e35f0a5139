"""Decoder graphs from ONNX Runtime GenAI's model builder (package onnxruntime-genai-cuda).

optimum's text-generation-with-past export traces the Hugging Face model: about 475 nodes for a
4-layer Llama after ONNX Runtime's own optimizations, most of them shape arithmetic, and per-node
overhead dominates a decode step of a small model. The model builder writes the same model with
ONNX Runtime's fused contrib ops instead (GroupQueryAttention with rotary embedding inside,
SkipSimplifiedLayerNormalization, packed QKV and gate/up projections): 55 nodes for the same model,
1.8x the tokens/s measured here. Its graph takes the same inputs and outputs as optimum's
(input_ids, attention_mask, past_key_values.N.key/value -> logits, present.N.key/value) but reads
each row's length from the attention mask's sum, so prompts are right-padded (``padding_side``
"right" in the manifest) and there is no position_ids input.

Only the builder's graph is used; ONNX Runtime GenAI's own runtime is not (the toolchain's runtime
serves the graph). Parity against PyTorch is checked exactly as for optimum's graphs.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from pathlib import Path
from typing import Any

from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import ExportError
from toolchain.export.source import Source, import_optional

# Hugging Face architectures the builder writes (the ones it handles as plain causal LMs).
ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM",
    "GemmaForCausalLM", "Gemma2ForCausalLM", "GraniteForCausalLM", "OlmoForCausalLM", "SmolLM3ForCausalLM",
})
# What the runtime must know about the graph: right-padded prompts, and past/present in one buffer.
GENERATION = {"padding_side": "right", "shared_kv_buffer": True}
SINGLE_FILE_LIMIT = 1_800_000_000  # protobuf's 2 GB limit, with room: larger graphs keep external data


def available() -> bool:
    try:
        import_optional("onnxruntime_genai.models.builder")
    except Exception:  # not installed, or a version that cannot run with the installed transformers
        return False
    return True


def handles(config: dict[str, Any]) -> bool:
    """Whether the builder writes this model (by its config.json's architectures)."""
    archs = config.get("architectures") or []
    heads = config.get("num_attention_heads") or 0
    head_dim = config.get("head_dim") or (config.get("hidden_size", 0) // heads if heads else 0)
    # ONNX Runtime's GroupQueryAttention kernels take head sizes in multiples of 16 only.
    return bool(archs) and archs[0] in ARCHITECTURES and not config.get("auto_map") and head_dim % 16 == 0 < head_dim


def build(source: Source, into: Path, trust_remote_code: bool = False) -> Path:
    """Write model.onnx (fp32, CPU-targeted graph, weights inline when under 2 GB) into INTO."""
    try:
        builder = import_optional("onnxruntime_genai.models.builder")
    except Exception as exc:
        raise ExportError(f"ONNX Runtime GenAI's model builder is not usable ({exc}); "
                          "install onnxruntime-genai-cuda==0.11.2 or pass --exporter optimum.") from None
    work, cache = into / ".builder", into / ".builder-cache"
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            builder.create_model("", str(source.path), str(work), "fp32", "cpu", str(cache),
                                 hf_remote=bool(trust_remote_code), hf_token="false")
    except (ValueError, KeyError, OSError, RuntimeError, NotImplementedError, AttributeError, TypeError) as exc:
        first = first_line(exc)
        raise ExportError(f"ONNX Runtime GenAI's model builder could not export {source.name}: {first}") from None
    graph = work / "model.onnx"
    if not graph.is_file():
        raise ExportError(f"ONNX Runtime GenAI's model builder wrote no model.onnx for {source.name}; "
                          "pass --exporter optimum.")
    out = into / "model.onnx"
    _consolidate(graph, out)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def _consolidate(src: Path, dst: Path) -> None:
    """One self-contained model file unless it is too big; then its weights go to ``model.onnx_data``, which
    export lists (with its sha256) as external data of the variant's ``model`` component."""
    onnx = import_optional("onnx")
    model = onnx.load(str(src), load_external_data=True)
    if model.ByteSize() < SINGLE_FILE_LIMIT:
        onnx.save(model, str(dst))
    else:
        onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=dst.name + "_data")
