"""plans: the structural ladder of layers kept in fp32, found from the graph's structure, not its names."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from toolchain.variants.plans import exclusion_ladder


# -- the exclusion ladder ----------------------------------------------------------------------------------
def _rename_nodes(src: Path, dst: Path) -> dict[str, str]:
    """Copy the graph with every node renamed to an opaque name; returns new -> old."""
    model = onnx.load(str(src))
    mapping = {}
    for i, node in enumerate(model.graph.node):
        mapping[f"n{i}"] = node.name
        node.name = f"n{i}"
    onnx.save(model, str(dst))
    return mapping


@pytest.mark.parametrize("arch, task", [("bert", "feature-extraction"), ("bert", "text-classification"),
                                        ("distilbert", "feature-extraction"), ("roberta", "feature-extraction")])
def test_exclusion_ladder_by_structure(tiny_artifact, tmp_path, arch, task):
    src = tiny_artifact(arch, task) / "model.onnx"
    ladder = exclusion_ladder(src)
    assert [len(nodes) for _, nodes in ladder] == [0, 2, 4]  # 2 layers: 1 down-projection, 2 residual each
    (first, none), (_, down), (_, residual) = ladder
    assert first == "all layers quantized" and none == []
    assert set(down) < set(residual)
    assert "2 FFN down-projections" in ladder[1][0] and "4 residual-stream projections" in ladder[2][0]
    graph = onnx.load(str(src), load_external_data=False).graph
    by_name = {n.name: n for n in graph.node}
    weights = {i.name for i in graph.initializer}
    for name in residual:
        assert by_name[name].op_type == "MatMul" and by_name[name].input[1] in weights
    # names carry no meaning: the same nodes are found in a graph whose nodes are renamed
    mapping = _rename_nodes(src, tmp_path / "renamed.onnx")
    renamed = exclusion_ladder(tmp_path / "renamed.onnx")
    assert [[mapping[n] for n in nodes] for _, nodes in renamed] == [nodes for _, nodes in ladder]
