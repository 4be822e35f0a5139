"""Which execution provider really ran each node, read from ONNX Runtime's profile of one warm-up run.

A session on CUDA can still run nodes on CPU without a word: ONNX Runtime assigns a node to the CPU
provider when the CUDA provider has no kernel for its op, opset or dtype (int8 ``DynamicQuantizeLinear``,
for one), and it moves small shape computations (Shape, Gather on shapes, Concat of dims) to CPU on
purpose. ``session.get_providers()`` says nothing of either. The profiler does: every node event
(``"cat": "Node"``, named ``<node>_kernel_time``) carries ``args.op_name`` and ``args.provider``, in
every release from 1.x to 1.31. Profiling is switched on for the session's first (warm-up) run only;
``end_profiling()`` switches it off again, so later runs pay nothing. The alternatives were weaker:
``session.disable_cpu_ep_fallback`` only refuses to build the session, and ORT's verbose placement log
goes to its own logger on stderr, where Python cannot read it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import first_line, warn_once

log = logging.getLogger("toolchain.runtime")

PROFILE_DIR_PREFIX = "toolchain-placement-"
# Ops whose work scales with the activations: on CPU they cost real time plus copies both ways.
HEAVY_OPS = frozenset({
    "MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "FusedMatMul", "MatMulNBits", "MatMulInteger",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "DynamicQuantizeLinear", "QAttention",
    "Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention", "Softmax", "LayerNormalization",
    "SkipLayerNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
    "EmbedLayerNormalization", "RMSNormalization", "RotaryEmbedding", "Gelu", "FastGelu", "BiasGelu", "LSTM", "GRU",
    "RNN",
})
MEMCPY_OPS = frozenset({"MemcpyToHost", "MemcpyFromHost"})
_SHORT = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda"}


@dataclass
class Placement:
    """Nodes per provider, and the op types of those that ran on CPU."""

    nodes: dict[str, int] = field(default_factory=dict)  # provider (short name) -> nodes it ran
    cpu_ops: dict[str, int] = field(default_factory=dict)  # op type -> nodes of that type on CPU
    memcpy: int = 0  # copy nodes ONNX Runtime inserted between CPU and device

    @property
    def heavy(self) -> dict[str, int]:
        return {op: n for op, n in self.cpu_ops.items() if op in HEAVY_OPS}

    def summary(self) -> str:
        counts = ", ".join(f"{n} on {p}" for p, n in sorted(self.nodes.items()))
        ops = ", ".join(f"{op} x{n}" for op, n in self.cpu_ops.items())
        return (f"profiled warm-up run: {counts or 'no nodes'}" + (f"; on CPU: {ops}" if ops else "")
                + (f"; {self.memcpy} CPU<->device copy nodes" if self.memcpy else ""))

    def info(self) -> dict[str, Any]:
        return {"cpu_fallback_nodes": [{"op_type": op, "count": n, "heavy": op in HEAVY_OPS}
                                       for op, n in self.cpu_ops.items()],
                "heavy_cpu_fallback": bool(self.heavy), "placement": self.summary()}


def parse_profile(events: Any) -> Placement:
    """Count the nodes of one profile (a list of chrome-trace events) per provider; raises ValueError on a
    profile without node events that name their provider."""
    if isinstance(events, dict):  # some writers wrap the list: {"traceEvents": [...]}
        events = events.get("traceEvents", [])
    if not isinstance(events, list):
        raise ValueError("the profile is not a list of trace events")
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for e in events:
        if not isinstance(e, dict):
            continue
        args, name = e.get("args"), str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or not isinstance(args, dict):
            continue
        if "provider" not in args or "op_name" not in args:
            continue
        key = (name, str(args.get("node_index", args.get("graph_index", ""))))
        seen[key] = (str(args["provider"]), str(args["op_name"]))  # several runs: each node counted once
    if not seen:
        raise ValueError("the profile has no node events that name their provider")
    nodes = Counter(_SHORT.get(p, p) for p, _ in seen.values())
    cpu = Counter(op for p, op in seen.values() if p == "CPUExecutionProvider")
    memcpy = sum(1 for _, op in seen.values() if op in MEMCPY_OPS)
    return Placement(dict(nodes), dict(cpu.most_common()), memcpy)


NOT_APPLICABLE = {"cpu_fallback_nodes": None, "heavy_cpu_fallback": None,
                  "placement": "not applicable: the session runs on CPU"}
NOT_CHECKED = {"cpu_fallback_nodes": None, "heavy_cpu_fallback": None,
               "placement": "not checked (CudaOptions(check_placement=False))"}


def from_profile(path: str, provider: str, error: BaseException | None = None) -> dict[str, Any]:
    """The info() entries for a session's profile file (removed afterwards, with its temporary folder).

    ``provider`` is the one negotiation settled on; on CPU every node is on CPU and nothing is reported."""
    try:
        if provider != "cuda":
            return dict(NOT_APPLICABLE)
        if error is not None:
            return {**NOT_CHECKED, "placement": f"not checked: the warm-up run failed ({first_line(error)})"}
        try:
            placement = parse_profile(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            return {**NOT_CHECKED, "placement": f"not checked: ONNX Runtime's profile could not be read ({exc})"}
        if placement.heavy:
            warn_once(log, f"ONNX Runtime runs {', '.join(f'{op} x{n}' for op, n in placement.heavy.items())} on CPU "
                       "although the session is on CUDA (the CUDA provider has no kernel for them); expect slow "
                       "runs, and prefer a variant without them (fp32 or fp16) on this GPU.")
        return placement.info()
    finally:
        discard(path)


def discard(path: str | None) -> None:
    """Remove a profile file and the temporary folder made for it (never anything else)."""
    if not path:
        return
    p = Path(path)
    if p.parent.name.startswith(PROFILE_DIR_PREFIX):
        shutil.rmtree(p.parent, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)
