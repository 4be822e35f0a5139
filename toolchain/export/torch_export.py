"""The torch exporter: a user's own nn.Module (a module dir, export/modules.py) to ONNX with torch.onnx.export.

The dynamo-based exporter (torch.export, the IO spec's dynamic axes as named Dims) first; where it fails, the
TorchScript exporter (``dynamic_axes``), and the manifest says which ran (``exporter_method``) and why dynamo
did not (``exporter_fallback``). Weights come from safetensors; nothing is pickled. Parity against the same
module (export/reference.py ModuleReference) then decides whether the graph is kept.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from toolchain.export.modules import TOKENIZER_FILE, IOSpec, Seq2SeqSpec, read_module_dir
from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import ExportError
from toolchain.runtime.sections import ExporterInfo, TokenizerInfo
from toolchain.runtime.tasks import task_spec
from toolchain.runtime.variants import MODEL

NAME = "torch"
MODEL_FILE = "model.onnx"
METHODS = ("dynamo", "torchscript")  # tried in this order; the manifest names the one that worked
ONNX_TYPES = {"int64": "INT64", "int32": "INT32", "float32": "FLOAT", "float16": "FLOAT16", "bool": "BOOL"}
EXAMPLE_LENGTHS = [3, 5]  # batch 2, sequence 5: neither is 0 or 1, which torch.export would specialise


def handles(settings: Any, source: Any, config: Any) -> bool:
    """Module sources only (HF models go to optimum or ort-genai): encoders and encoder-decoders."""
    return source.kind == "module" and task_spec(settings.task).method != "generate"


def build(source: Any, settings: Any, into: Path) -> tuple[Path | dict[str, Path], ExporterInfo]:
    """Write the module dir at SOURCE.path as ONNX into INTO: model.onnx, or for an encoder-decoder
    (Seq2SeqSpec) encoder.onnx and decoder.onnx; return the file (or component -> file) and how."""
    module, spec = read_module_dir(source.path).build()
    graphs = spec.graphs(module) if isinstance(spec, Seq2SeqSpec) else {MODEL: (module, spec)}
    into.mkdir(parents=True, exist_ok=True)
    paths, methods, fallbacks = {}, [], []
    for name, (graph, io) in graphs.items():
        path = into / (MODEL_FILE if name == MODEL else f"{name}.onnx")
        method, failed = export_graph(graph, io, path, settings.opset, source.name)
        paths[name] = path
        methods.append(method if name == MODEL else f"{name}: {method}")
        fallbacks += failed if name == MODEL else [f"{name}: {f}" for f in failed]
    info = ExporterInfo(NAME, fallback="; ".join(fallbacks), method=", ".join(methods))
    return (paths[MODEL] if MODEL in paths else paths), info


def export_graph(module: Any, spec: IOSpec, path: Path, opset: int | None, what: str) -> tuple[str, list[str]]:
    """One graph to PATH by the first of METHODS that works; (that method, why the earlier ones failed)."""
    example = spec.example(list(EXAMPLE_LENGTHS))
    args = tuple(example[t.name] for t in spec.inputs)
    failed = []
    for method in METHODS:
        run = {"dynamo": run_dynamo, "torchscript": run_torchscript}[method]  # looked up now: tests replace them
        for leftover in path.parent.glob(path.name + "*"):  # what a failed method left
            leftover.unlink()
        try:
            run(module, spec, args, path, opset)
            finish_graph(path, spec, example)
            return method, failed
        except Exception as exc:  # torch.export's and the tracer's many error types: each means "next method"
            failed.append(f"{method}: {first_line(exc)}")
    raise ExportError(f"torch.onnx.export could not export {what} ({'; '.join(failed)}); make forward() "
                      "traceable: tensor operations only, no Python control flow on tensor values.")


def run_dynamo(module: Any, spec: IOSpec, args: tuple, path: Path, opset: int | None) -> None:
    """torch.onnx.export(dynamo=True): one named Dim per dynamic axis name, shared across inputs."""
    import torch

    # Each dynamo export swaps in a loop decomposition of LSTM/GRU, but the op's dispatch cache keeps the kernel
    # of the first export in this process: a second RNN export would unroll and fix the sequence axis.
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input):
        getattr(op, "_dispatch_cache", {}).clear()
    dims: dict[str, Any] = {}
    shapes = tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in t.dynamic.items()}
                   for t in spec.inputs)
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter; parity is what tells a bad graph
            torch.onnx.export(module, args, str(path), dynamo=True, input_names=[t.name for t in spec.inputs],
                              output_names=[t.name for t in spec.outputs], dynamic_shapes=shapes,
                              opset_version=opset, external_data=False, verbose=False)
    finally:
        registry_log.setLevel(level)


def finish_graph(path: Path, spec: IOSpec, example: dict[str, Any]) -> None:
    """Tidy the graph torch wrote, then check its dynamic axes.

    Dynamo annotates intermediate shapes, some with the example's sizes (a GRU's states as (batch, 5, 16)),
    and ONNX shape inference in quantization refuses the graph over them: they are dropped (inputs and
    outputs keep theirs, outputs with the IO spec's dynamic axes). An input forward() ignores is dropped by TorchScript and fixed to the example's
    size by dynamo: it is put back with the IO spec's axes, so the runtime feeds what the spec names and
    parity sees the module as it is (one that ignores its mask fails there, saying so)."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(path))
    graph = proto.graph
    del graph.value_info[:]
    used = _consumed(graph)
    present = {v.name: v for v in graph.input}
    for t in spec.inputs:
        if t.name in present and t.name in used:
            continue
        dims = [t.dynamic.get(axis, size) for axis, size in enumerate(example[t.name].shape)]
        value = helper.make_tensor_value_info(t.name, getattr(onnx.TensorProto, ONNX_TYPES[t.dtype]), dims)
        if t.name in present:
            present[t.name].CopyFrom(value)
        else:
            graph.input.append(value)
    named = {t.name: t for t in spec.outputs}
    for value in graph.output:  # dynamo may label an output's dynamic axis with the example's size
        dims = value.type.tensor_type.shape.dim
        for axis, name in named[value.name].dynamic.items() if value.name in named else ():
            if axis < len(dims):
                dims[axis].Clear()
                dims[axis].dim_param = name
    onnx.save(proto, str(path))
    check_dynamic(path, spec)


def _consumed(graph: Any) -> set[str]:
    """Every value name a node of GRAPH (or of its subgraphs: If, Loop, Scan bodies) reads."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _consumed(sub)
    return names


def check_dynamic(path: Path, spec: IOSpec) -> None:
    """torch.export may specialise an axis the IO spec declares dynamic (a fixed length from the example
    inputs): a graph that takes only that size is no use, so that is a failure too."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    fixed = [f"{t.name} axis {axis} ({name}) = {dims[t.name][axis]}" for t in spec.inputs if t.name in dims
             for axis, name in t.dynamic.items() if axis < len(dims[t.name]) and isinstance(dims[t.name][axis], int)]
    if fixed:
        raise ExportError(f"the graph fixed dynamic axes to the example's sizes: {', '.join(fixed)}")


def run_torchscript(module: Any, spec: IOSpec, args: tuple, path: Path, opset: int | None) -> None:
    """torch.onnx.export(dynamo=False): traced, with the IO spec's dynamic_axes."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=[t.name for t in spec.inputs],
                          output_names=[t.name for t in spec.outputs], dynamic_axes=spec.dynamic_axes(),
                          **({"opset_version": opset} if opset else {}))


def module_fields(source: Any, reference: Any, task: str, out: Path) -> dict[str, Any]:
    """What the manifest says about a module source: labels, max_length, the tokenizer (copied from the
    module dir, with its pad id) and the entry point as the model type."""
    d = reference.dir
    labels = d.labels if task_spec(task).method == "classify" else None  # checked against the module by the reference
    shutil.copyfile(d.path / TOKENIZER_FILE, out / TOKENIZER_FILE)
    pad_token = reference.tokenizer.id_to_token(d.pad_id) or TokenizerInfo.pad_token
    fields = {"labels": [str(x) for x in labels] if labels else None, "max_length": d.max_length,
              "tokenizer": TokenizerInfo(file=TOKENIZER_FILE, pad_id=d.pad_id, pad_token=pad_token).to_dict(),
              "model_type": d.entry, "architecture": type(reference.model).__name__}
    if isinstance(reference.spec, Seq2SeqSpec):  # the decoder's start token and where it stops
        spec = reference.spec
        fields["generation"] = {"bos_token_id": spec.bos_id, "eos_token_ids": [spec.eos_id],
                                "max_positions": spec.max_target_positions}
    return fields

