"""Hoisting a vision decoder's per-call work into its encoder: what optimum's vision encoder-decoder step computes
from the encoder's states alone (the cross-attention key / value projections, split to heads and pre-scaled, and
the all-zero cross-attention mask GPT-2 builds from the states' shape) moved into the encoder graph.

optimum exports a vision encoder-decoder (ViT + GPT-2) without a cross-attention cache: its decoder step reads
``encoder_hidden_states`` and projects them to keys and values again on every step. At batch 1 with ~65 source
tokens that projection is most of a one-token step's arithmetic. The rewrite (hoist_cross):

- **which nodes**: those of the decoder step whose every input is an initializer, a Constant or such a node's
  output, and which depend on ``last_hidden_state`` (renamed from encoder_hidden_states): nothing they compute
  changes from step to step.
- **the frontier**: what of theirs other decoder nodes read. A float tensor with the batch on axis 0 (checked
  by running the step at two batch and source sizes) becomes an encoder output ``cross.{n}`` and a decoder input of
  the same name: a non-state output the runtime feeds to every step unchanged, repeating its rows per beam as it
  does any encoder output (runtime/seq2seq.py ``rows_of``); the states of beams of one source are equal, so the
  beam reorder needs no gather for them. Integer values (shapes, batch sizes) stay in the decoder, computed from
  the states' Shape, so the decoder keeps ``last_hidden_state`` as an input only while some such node reads it.
- **the encoder** gets copies of the frontier's ancestors (nodes and initializers renamed under ``cross/``), fed by
  its own ``last_hidden_state``.

Nothing is hoisted (the graphs stay as they were) when no frontier value keeps the batch on axis 0: parity
(export/parity.py) is what tells a wrong split, and the tests compare captions with PyTorch's.
"""

from __future__ import annotations

import logging
from typing import Any

from toolchain.export.graph_cut import ancestors, merge_opsets, move_under, node_reads, rename
from toolchain.export.graph_probes import Runner, random_feeds
from toolchain.export.source import import_optional
from toolchain.runtime import seq2seq_io as io

log = logging.getLogger("toolchain.export")

HIDDEN = "last_hidden_state"
PREFIX = "cross/"  # the hoisted nodes, their intermediate values and initializers are renamed under this prefix
OUTPUT = "cross."  # a hoisted value's name in both graphs: cross.0, cross.1, ...
_PROBES = ((2, 5), (3, 7))  # (batch, source) at which the frontier's shapes are read


def hoist_cross(encoder: Any, decoder: Any) -> list[str]:
    """Move what DECODER's step computes from ``last_hidden_state`` alone into ENCODER (both ModelProtos, edited in
    place); return the names of the hoisted values (``cross.{n}``), [] when nothing was moved."""
    graph = decoder.graph
    if HIDDEN not in {v.name for v in graph.input}:
        return []
    steady = _steady_nodes(graph)
    outside = [n for k, n in enumerate(graph.node) if k not in steady]
    read_outside = {r for n in outside for r in node_reads(n)} | {o.name for o in graph.output}
    frontier = [out for k in sorted(steady) for out in graph.node[k].output if out in read_outside]
    outputs = {o.name for o in graph.output}  # a graph output stays the decoder's: it is never a cut point
    candidates = [o for k in steady for o in graph.node[k].output if o not in outputs]
    dims = _cut_points(graph, steady, frontier, _batch_first(decoder, candidates))
    if not dims:
        return []
    names = {value: f"{OUTPUT}{k}" for k, value in enumerate(dims)}
    _into_encoder(encoder, decoder, names, dims)
    _cut_decoder(decoder, names, dims)
    if HIDDEN not in {v.name for v in graph.input}:  # no decoder node reads the states any more
        kept = [o for o in encoder.graph.output if o.name != HIDDEN]
        del encoder.graph.output[:]
        encoder.graph.output.extend(kept)
    return list(names.values())


def _steady_nodes(graph: Any) -> set[int]:
    """The indices of GRAPH's nodes whose inputs are all fixed per call (initializers, constants, ``last_hidden_state``,
    or such nodes' outputs) and that depend on ``last_hidden_state``."""
    fixed = {init.name for init in graph.initializer} | {HIDDEN, ""}
    depends, steady = {HIDDEN}, set()
    for k, node in enumerate(graph.node):
        reads = node_reads(node)
        if all(r in fixed for r in reads):
            fixed.update(node.output)
            if depends.intersection(reads):
                depends.update(node.output)
                steady.add(k)
    return steady


def _cut_points(graph: Any, steady: set[int], frontier: list[str], batch_first: dict[str, tuple]) -> dict[str, tuple]:
    """The values where the cut runs, in graph order, with their dims: walking back from each FRONTIER value through
    the STEADY nodes, the first value with the batch on axis 0 (BATCH_FIRST). So a shape the decoder computes
    from a projection's Shape reads the hoisted projection, not a projection recomputed per step."""
    producer = {out: k for k in steady for out in graph.node[k].output}
    chosen, seen, stack = set(), set(), list(frontier)
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        if value in batch_first:
            chosen.add(value)
        elif value in producer:
            stack.extend(r for r in node_reads(graph.node[producer[value]]) if r in producer)
    return {v: batch_first[v] for v in sorted(chosen, key=producer.__getitem__)}


def _batch_first(model: Any, values: list[str]) -> dict[str, tuple]:
    """Of VALUES, the float tensors whose axis 0 is the batch at every probe: name -> (ONNX element type, dims:
    ``batch``, ``source`` where the size follows the probe's, else the fixed size)."""
    if not values:
        return {}
    onnx = import_optional("onnx")
    try:
        runner = Runner(model, tuple(values))
        seen = [(batch, source, runner(random_feeds(model, batch, 0, source, 7))) for batch, source in _PROBES]
    except (RuntimeError, ValueError) as exc:  # a step that will not run on probe feeds: left as it is
        log.info("the decoder step did not run on probe feeds (%s): nothing hoisted", str(exc).splitlines()[0])
        return {}
    dims = {}
    for value in values:
        arrays = [(b, s, out[value]) for b, s, out in seen]
        if any(a.dtype.kind != "f" or a.ndim == 0 or a.shape[0] != b for b, _, a in arrays):
            continue
        (b0, s0, a0), (b1, s1, a1) = arrays
        if a0.ndim != a1.ndim:
            continue
        axes: list = []
        for x, y in zip(a0.shape, a1.shape):
            axes.append(x if x == y else io.BATCH_AXIS if (x, y) == (b0, b1) else io.SOURCE_AXIS if (x, y) == (s0, s1)
                        else None)
        if axes[0] == io.BATCH_AXIS and None not in axes:
            dims[value] = (onnx.helper.np_dtype_to_tensor_dtype(a0.dtype), axes)
    return dims


def _value_info(name: str, typed: tuple[int, list]) -> Any:
    onnx = import_optional("onnx")
    return onnx.helper.make_tensor_value_info(name, *typed)


def _into_encoder(encoder: Any, decoder: Any, names: dict[str, str], dims: dict[str, tuple]) -> None:
    """Copies of the ancestors of NAMES' values in DECODER appended to ENCODER, which outputs them as NAMES say."""
    nodes, initializers, _ = ancestors(decoder.graph, set(names))
    move_under(PREFIX, nodes, initializers, {HIDDEN: HIDDEN}, names)
    graph = encoder.graph
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    graph.output.extend(_value_info(names[v], dims[v]) for v in names)
    merge_opsets(encoder, decoder)


def _cut_decoder(decoder: Any, names: dict[str, str], dims: dict[str, tuple]) -> None:
    """DECODER reading NAMES' values as inputs, without the nodes (and initializers) only they needed; it keeps
    ``last_hidden_state`` as an input only while a remaining node reads it."""
    graph = decoder.graph
    rename(graph.node, names)
    graph.input.extend(_value_info(names[v], dims[v]) for v in names)
    for node in graph.node:  # a hoisted producer writes a value no one reads (and is pruned when all are so)
        for i, out in enumerate(node.output):
            if out in names.values():
                node.output[i] = PREFIX + "unused/" + out
    nodes, initializers, reads = ancestors(graph, {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    if HIDDEN not in reads:
        keep = [v for v in graph.input if v.name != HIDDEN]
        del graph.input[:]
        graph.input.extend(keep)
