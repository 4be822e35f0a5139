"""Hugging Face encoder-decoders (T5, BART, Marian, mBART, ...) exported by optimum, rewritten to the two-graph
contract of runtime/seq2seq_io.py.

optimum's ``main_export(task="text2text-generation-with-past", no_post_process=True)`` writes three graphs:
``encoder_model.onnx`` (input_ids, attention_mask -> last_hidden_state), ``decoder_model.onnx`` (the first step:
takes encoder_hidden_states, returns logits and every layer's self- and cross-attention cache) and
``decoder_with_past_model.onnx`` (a later step: takes the caches ``past_key_values.{i}.{decoder,encoder}.{key,value}``,
returns logits and the grown self-attention cache ``present.{i}.decoder.*``). The rewrite:

- **encoder**: optimum's encoder plus the cross-attention key/value projections cut out of ``decoder_model.onnx``
  (the nodes the ``present.{i}.encoder.*`` outputs depend on), fed by ``last_hidden_state``; where those read the
  decoder's own stream only for its batch size, they read it from ``last_hidden_state`` instead, so the
  encoder holds no copy of the embedding or of the decoder layers (_cross_nodes). Its outputs are
  only ``cross.{i}.key`` / ``cross.{i}.value`` (batch, heads, source, head_dim): per the contract, non-state
  outputs the runtime feeds to every decoder step unchanged, so the cross K/V are computed once per call.
- **decoder**: ``decoder_with_past_model.onnx`` with its caches renamed: the self-attention cache is the state
  ``past.{i}.decoder.*`` -> ``present.{i}.decoder.*`` (axis ``past_sequence``; the first step's empty cache
  makes it compute what optimum's no-past decoder computes), the cross cache inputs become ``cross.{i}.*``;
  ``input_ids`` is (batch, 1) and ``logits`` (batch, 1, vocab) is cut to (batch, vocab).
No If node (optimum's merged decoder) is needed, and no step recomputes the cross-attention projections.

Vision encoder-decoders (task ``image-to-text-with-past``: a ViT encoder, a GPT-2 decoder) come from optimum without
a cross-attention cache: the decoder step reads ``encoder_hidden_states`` (renamed ``last_hidden_state``) and
projects it again on every step. Their **encoder** is optimum's (``pixel_values`` -> ``last_hidden_state``, the pixel
dims fixed to the config's channels x image size); the self-attention cache ``past_key_values.{i}.*`` is the state
``past.{i}.*``. Then export/seq2seq_vision.py moves what the step computes from the states alone (the cross K/V
projections split to heads, GPT-2's cross mask) into the encoder: its outputs become ``cross.{n}`` (batch first),
non-state outputs fed to every step unchanged, so here too no step recomputes the projections.
No encoder_attention_mask: an image has no padding.
Both graphs then have their attention fused (export/seq2seq_fuse.py: one MultiHeadAttention node per block, the
decoder's all-zero causal mask dropped), kept only when the fused graph computes what the unfused one does.
"""

from __future__ import annotations

import logging
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

from toolchain.export import seq2seq_fuse, seq2seq_vision
from toolchain.export.graph_cut import ancestors, merge_opsets, move_under, node_reads, rename
from toolchain.export.source import import_optional
from toolchain.runtime import seq2seq_io as io
from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import ExportError

log = logging.getLogger("toolchain.export")

TASK = "text2text-generation-with-past"
OPTIMUM_FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")
CROSS = "cross."
_CACHE = re.compile(r"^past_key_values\.(\d+)\.(?:(decoder|encoder)\.)?(key|value)$")
PIXELS = "pixel_values"  # a vision encoder's input
HIDDEN = "last_hidden_state"  # optimum's encoder output
_HIDDEN_IN = "encoder_hidden_states"  # what a decoder without a cross-attention cache reads every step
_PREFIX = "cross/"  # the cross-attention nodes moved into the encoder graph are renamed under this prefix
_OUT_OF_STEP = {"encoder_hidden_states", "input_ids", "encoder_attention_mask"}  # what those nodes may read
# optimum's axis names -> the contract's (runtime/seq2seq_io.py); the decoder's one-token axis is fixed at 1
AXES = {"batch_size": io.BATCH_AXIS, "encoder_sequence_length": io.SOURCE_AXIS,
        "past_decoder_sequence_length": io.PAST_AXIS,
        "past_decoder_sequence_length + decoder_sequence_length": io.PAST_AXIS + " + 1",
        "decoder_sequence_length": 1, "1": 1, "past_sequence_length": io.PAST_AXIS,
        "past_sequence_length + sequence_length": io.PAST_AXIS + " + 1"}
TWO_GB = 2_000_000_000


def export_hf_seq2seq(model_dir: Path, into: Path, opset: int | None = None,
                      trust_remote_code: bool = False, fuse: bool = True, task: str = TASK) -> dict[str, Path]:
    """Export the transformers encoder-decoder in MODEL_DIR with optimum and rewrite its graphs to the contract:
    writes INTO/encoder.onnx and INTO/decoder.onnx and returns {"encoder": path, "decoder": path}. FUSE: each
    graph's attention fused (seq2seq_fuse.py), kept only where it computes what the unfused graph computes.
    TASK: optimum's (image-to-text-with-past for vision encoder-decoders)."""
    model_dir, into = Path(model_dir), Path(into)
    config = _require_seq2seq(model_dir, trust_remote_code)
    onnx = import_optional("onnx")
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optimum-seq2seq-") as tmp:
        work = Path(tmp)
        _run_optimum(model_dir, work, opset, trust_remote_code, task)
        encoder, first, step = (onnx.load(str(work / name)) for name in OPTIMUM_FILES)
    name = model_dir.name
    paths = {io.ENCODER: into / f"{io.ENCODER}.onnx", io.DECODER: into / f"{io.DECODER}.onnx"}
    crossed = any(".encoder." in o.name for o in first.graph.output)  # a cross-attention cache (text models)
    graphs = {io.ENCODER: encoder_graph(encoder, first, name) if crossed else vision_encoder_graph(encoder, config, name),
              io.DECODER: decoder_graph(step, name)}
    if not crossed:  # vision: the step's projections of the encoder's states move into the encoder
        hoisted = seq2seq_vision.hoist_cross(graphs[io.ENCODER], graphs[io.DECODER])
        log.info("%s: %d values of the encoder's states computed once in the encoder", name, len(hoisted))
    for component, graph in graphs.items():
        if fuse:
            graph, note = seq2seq_fuse.fuse_checked(graph, cached=component == io.DECODER)
            log.info("%s %s: %s", name, component, note)
        _save(graph, paths[component], name)
    return paths


def _require_seq2seq(model_dir: Path, trust_remote_code: bool) -> Any:
    """The model's config; refuse, before optimum runs, a model that is not a transformers encoder-decoder."""
    transformers = import_optional("transformers")
    try:
        config = transformers.AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"{model_dir.name} has no readable config.json ({first_line(exc)}); point at a saved "
                          "transformers model directory.") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise ExportError(f"{model_dir.name} is a {config.model_type} model, not an encoder-decoder; export it for "
                          "its own task (feature-extraction, text-classification or text-generation), not "
                          "text2text-generation.")
    return config


def _run_optimum(model_dir: Path, work: Path, opset: int | None, trust_remote_code: bool, task: str = TASK) -> None:
    """optimum writes encoder_model.onnx, decoder_model.onnx and decoder_with_past_model.onnx into WORK
    (no_post_process: no merged decoder, which the rewrite does not use)."""
    onnx_exporter = import_optional("optimum.exporters.onnx")
    try:
        with warnings.catch_warnings():  # tracer chatter; the caller's parity check is what tells a bad graph
            warnings.simplefilter("ignore")
            onnx_exporter.main_export(
                str(model_dir), output=str(work), task=task, opset=opset, do_validation=False,
                no_post_process=True, library_name="transformers", device="cpu", trust_remote_code=trust_remote_code,
            )
    except (ValueError, KeyError, OSError, RuntimeError, NotImplementedError, TypeError) as exc:
        raise ExportError(f"optimum could not export {model_dir.name} for {task}: {first_line(exc)}; check that "
                          "optimum supports this model type, or export it another way.") from None
    missing = [name for name in OPTIMUM_FILES if not (work / name).is_file()]
    if missing:
        raise ExportError(f"optimum wrote no {', '.join(missing)} for {model_dir.name}; only encoder-decoders that "
                          f"optimum exports with a key/value cache ({task}) are supported.")


def encoder_graph(encoder: Any, first: Any, name: str) -> Any:
    """optimum's encoder plus the cross-attention K/V nodes of its first-step decoder FIRST, with outputs
    ``cross.{i}.key`` / ``cross.{i}.value`` only."""
    graph = encoder.graph
    inputs = {v.name for v in graph.input}
    if inputs != {io.SOURCE_IDS, io.SOURCE_MASK} or [o.name for o in graph.output] != ["last_hidden_state"]:
        raise ExportError(f"{name}'s encoder maps {sorted(inputs)} to {[o.name for o in graph.output]}, not "
                          "input_ids and attention_mask to last_hidden_state; only text encoder-decoders are supported.")
    wanted = {o.name: _cross_name(o.name) for o in first.graph.output if ".encoder." in o.name}
    if not wanted:
        raise ExportError(f"{name}'s decoder returns no cross-attention cache; export a model with cross-attention.")
    nodes, initializers, reads = _cross_nodes(first.graph, set(wanted))
    if not reads <= _OUT_OF_STEP:
        raise ExportError(f"{name}'s cross-attention cache depends on {sorted(reads - _OUT_OF_STEP)}; this model's "
                          "decoder cannot be split this way.")
    onnx = import_optional("onnx")
    # nodes that still read the decoder's input_ids (a fallback of _cross_nodes) read it for shapes (batch) only:
    # give them the source's first column (batch, 1), the shape of a first step's input_ids
    ints = onnx.helper.make_tensor
    slice_args = [ints(_PREFIX + arg, onnx.TensorProto.INT64, [1], [v]) for arg, v in
                  (("start", 0), ("end", 1), ("axis", 1))] if "input_ids" in reads else []
    first_ids = [onnx.helper.make_node("Slice", [io.SOURCE_IDS] + [t.name for t in slice_args],
                                       [_PREFIX + "input_ids"], name=_PREFIX + "first_ids")] if slice_args else []
    mapping = {"encoder_hidden_states": "last_hidden_state", "input_ids": _PREFIX + "input_ids",
               "encoder_attention_mask": io.SOURCE_MASK}
    move_under(_PREFIX, nodes, initializers, mapping, wanted)
    graph.node.extend([*first_ids, *nodes])
    graph.initializer.extend(slice_args + initializers)
    outputs = [o for o in first.graph.output if o.name in wanted]
    for out in outputs:
        out.name = wanted[out.name]
    del graph.output[:]
    graph.output.extend(outputs)
    merge_opsets(encoder, first)
    _rename_axes(graph)
    return encoder


def vision_encoder_graph(encoder: Any, config: Any, name: str) -> Any:
    """optimum's vision encoder (pixel_values -> last_hidden_state) with the pixel dims fixed to CONFIG's encoder
    (channels x image size x image size; batch stays dynamic) and the contract's axis names."""
    graph = encoder.graph
    if [v.name for v in graph.input] != [PIXELS] or [o.name for o in graph.output] != [HIDDEN]:
        raise ExportError(f"{name}'s encoder maps {[v.name for v in graph.input]} to {[o.name for o in graph.output]}, "
                          f"not {PIXELS} to {HIDDEN}; only ViT-style vision encoders are supported.")
    vision = getattr(config, "encoder", config)
    side, channels = getattr(vision, "image_size", None), getattr(vision, "num_channels", 3)
    if isinstance(side, int):
        for dim, value in zip(graph.input[0].type.tensor_type.shape.dim[1:], (channels, side, side)):
            dim.dim_value = value
    _rename_axes(graph)
    return encoder


def decoder_graph(step: Any, name: str) -> Any:
    """optimum's decoder-with-past as the contract's one-step decoder: the state past.{i}.decoder.* ->
    present.{i}.decoder.*, the inputs cross.{i}.*, and logits (batch, vocab)."""
    graph = step.graph
    mapping = {}
    for value in graph.input:
        match = _CACHE.match(value.name)
        if match:
            layer, side, kind = match.groups()  # side None: a self-attention cache (no cross cache exported)
            mapping[value.name] = (f"{CROSS}{layer}.{kind}" if side == "encoder"
                                   else f"{io.PAST}{layer}.{side + '.' if side else ''}{kind}")
    reads_states = _HIDDEN_IN in {v.name for v in graph.input}  # vision: the encoder's states every step, no mask
    if reads_states:
        mapping[_HIDDEN_IN] = HIDDEN
    expected = {io.STEP_IDS, *mapping} | (set() if reads_states else {io.MEMORY_MASK})
    if {v.name for v in graph.input} != expected or not any(p.startswith(io.PAST) for p in mapping.values()):
        raise ExportError(f"{name}'s decoder-with-past takes {sorted(v.name for v in graph.input)}, not input_ids, "
                          "encoder_attention_mask (or encoder_hidden_states) and past_key_values.*; this model's "
                          "cache layout is not supported.")
    for value in graph.input:
        value.name = mapping.get(value.name, value.name)
    rename(graph.node, mapping)
    outputs = {o.name for o in graph.output}
    lacking = [p for p in mapping.values() if p.startswith(io.PAST) and io.present_name(p) not in outputs]
    if lacking or io.LOGITS not in outputs:
        raise ExportError(f"{name}'s decoder-with-past returns no {(lacking or [io.LOGITS])[0]}; this model's cache "
                          "layout is not supported.")
    _last_step_logits(graph)
    _rename_axes(graph)
    return step


def _cross_nodes(graph: Any, wanted: set[str]) -> tuple[list, list, set[str]]:
    """The nodes (copies), initializers and graph inputs the cross-attention cache WANTED depends on. The cache
    projections read the decoder's own stream (its hidden states, computed from input_ids through the embedding
    and every earlier layer) only through a Shape whose batch entry they gather: such a Shape is pointed at
    encoder_hidden_states (the same batch), so the copy holds the projections and not a whole first decoder
    step. When some Shape is read otherwise, every ancestor is copied (the first step's input_ids then read)."""
    stream = {"input_ids"}  # the values computed from input_ids' values (a Shape of one is not)
    for node in graph.node:
        if node.op_type not in ("Shape", "Size") and stream.intersection(node_reads(node)):
            stream.update(node.output)
    nodes, initializers, reads = ancestors(graph, wanted, lambda n: n.op_type == "Shape" and n.input[0] in stream)
    consts = {init.name for init in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    values = {**{i.name: i for i in graph.initializer}, **{n.output[0]: n.attribute[0].t for n in graph.node
                                                           if n.op_type == "Constant" and n.attribute}}
    numpy_helper = import_optional("onnx").numpy_helper

    def batch_gather(node: Any) -> bool:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        return (node.op_type == "Gather" and axis == 0 and node.input[1] in consts
                and numpy_helper.to_array(values[node.input[1]]).ravel().tolist() == [0])

    cuts = [n for n in nodes if n.op_type == "Shape" and n.input[0] in stream]
    readers = [n for n in nodes if any(c.output[0] in n.input for c in cuts)]
    if any(a.name == "start" and a.i != 0 for c in cuts for a in c.attribute) or not all(map(batch_gather, readers)):
        return ancestors(graph, wanted)
    for cut in cuts:
        cut.input[0] = "encoder_hidden_states"
    return nodes, initializers, reads | ({"encoder_hidden_states"} if cuts else set())


def _cross_name(present: str) -> str:
    """``present.3.encoder.key`` -> ``cross.3.key``."""
    layer, _, kind = present[len(io.PRESENT):].split(".")
    return f"{CROSS}{layer}.{kind}"


def _last_step_logits(graph: Any) -> None:
    """``logits`` (batch, 1, vocab) -> (batch, vocab): the producer writes ``logits/step``, a Gather (index 0 on
    axis 1, any opset) writes ``logits``."""
    onnx = import_optional("onnx")
    inner = "logits/step"
    rename(graph.node, {io.LOGITS: inner})
    index = onnx.helper.make_tensor("logits/index", onnx.TensorProto.INT64, [], [0])
    graph.initializer.append(index)
    graph.node.append(onnx.helper.make_node("Gather", [inner, index.name], [io.LOGITS], axis=1, name="logits/last"))
    out = next(o for o in graph.output if o.name == io.LOGITS)
    dims = out.type.tensor_type.shape.dim
    del dims[1]


def _rename_axes(graph: Any) -> None:
    """optimum's axis names on the graph's inputs and outputs -> the contract's (AXES)."""
    for value in list(graph.input) + list(graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in AXES:
                new = AXES[dim.dim_param]
                if isinstance(new, int):
                    dim.dim_value = new
                else:
                    dim.dim_param = new


def _save(model: Any, path: Path, name: str) -> None:
    """Check MODEL and write it to PATH (weights in PATH.data when over 2 GB)."""
    onnx = import_optional("onnx")
    big = sum(len(t.raw_data) for t in model.graph.initializer) > TWO_GB
    try:
        onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                        location=path.name + ".data")
        onnx.checker.check_model(str(path))
    except (ValueError, OSError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"the rewritten {path.name} of {name} is not a valid ONNX graph ({first_line(exc)}); "
                          "report it with the model's config.") from None


def decoder_start_and_eos(config: Any) -> tuple[int, list[int]]:
    """The decoder start token and the EOS ids of a transformers encoder-decoder CONFIG (or its generation config),
    for the manifest: decoder_start_token_id, else bos_token_id (what generate() falls back to), else pad_token_id
    (what T5/Marian-style models start from)."""
    def first(*names: str) -> Any:
        for attr in names:
            value = getattr(config, attr, None)
            if value is not None:
                return value
        return None

    start = first("decoder_start_token_id", "bos_token_id", "pad_token_id")
    eos = first("eos_token_id")
    if start is None or eos is None:
        what = "decoder_start_token_id" if start is None else "eos_token_id"
        raise ExportError(f"the {getattr(config, 'model_type', 'model')} config sets no {what}; set it in the "
                          "model's config.json or generation_config.json.")
    eos = [eos] if isinstance(eos, int) else list(eos)
    start = start[0] if isinstance(start, (list, tuple)) else start
    return int(start), list(dict.fromkeys(int(e) for e in eos))
