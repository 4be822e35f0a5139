"""Cutting and moving nodes between ONNX graphs (ModelProtos), for the encoder-decoder rewrites of
export/seq2seq_hf.py and export/seq2seq_vision.py: what a value depends on, renaming values, merging opsets."""

from __future__ import annotations

from typing import Any

from toolchain.export.source import import_optional


def node_reads(node: Any) -> list[str]:
    """The names NODE reads, including those its subgraphs (If/Loop bodies) read from the outer scope."""
    names = [x for x in node.input if x]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in sub.node:
                names.extend(node_reads(inner))
    return names


def ancestors(graph: Any, outputs: set[str], stop=lambda node: False) -> tuple[list, list, set[str]]:
    """Copies of the nodes and initializers that OUTPUTS depend on (in graph order), and the graph inputs read;
    a node for which STOP is true is copied without what it reads (the caller rewires it)."""
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {init.name: init for init in graph.initializer}
    inputs = {v.name for v in graph.input}
    seen, needed_nodes, reads, stack = set(), set(), set(), list(outputs)
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        if value in inputs:
            reads.add(value)
        elif value in producer:
            needed_nodes.add(id(producer[value]))
            if not stop(producer[value]):
                stack.extend(node_reads(producer[value]))

    def copy(proto):
        out = type(proto)()
        out.CopyFrom(proto)
        return out

    nodes = [copy(n) for n in graph.node if id(n) in needed_nodes]
    return nodes, [copy(initializers[v]) for v in sorted(seen) if v in initializers], reads


def rename(nodes: Any, mapping: dict[str, str]) -> None:
    """Rename the values NODES read and write (and their subgraphs' outer-scope reads) by MAPPING."""
    for node in nodes:
        for i, value in enumerate(node.input):
            node.input[i] = mapping.get(value, value)
        for i, value in enumerate(node.output):
            node.output[i] = mapping.get(value, value)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                rename(sub.node, mapping)


def move_under(prefix: str, nodes: Any, initializers: Any, mapping: dict[str, str], named: dict[str, str]) -> None:
    """Make copied NODES and INITIALIZERS fit into another graph: everything they write and hold is renamed under
    PREFIX (so nothing collides with that graph's own names), except the outputs NAMED gives names to; MAPPING
    (updated) says what their reads are called there."""
    for node in nodes:
        for out in node.output:
            mapping.setdefault(out, named.get(out, prefix + out))
        node.name = prefix + node.name
    for init in initializers:
        mapping[init.name] = init.name = prefix + init.name
    rename(nodes, mapping)


def merge_opsets(into: Any, other: Any) -> None:
    """Import in INTO every opset domain OTHER uses (the highest version of each)."""
    versions = {o.domain: o.version for o in into.opset_import}
    for o in other.opset_import:
        if o.version > versions.get(o.domain, -1):
            versions[o.domain] = o.version
    del into.opset_import[:]
    onnx = import_optional("onnx")
    into.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
