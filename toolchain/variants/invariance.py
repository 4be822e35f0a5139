"""Batch invariance, measured: a padded batch of texts of mixed lengths against each text run alone.

Users expect a text to get the same answer whatever else is in their request. fp32 gives it (attention
masks the padding); onnxruntime's per-tensor dynamic int8 does not (one activation scale over the whole
batch, padding included), and some integer kernels pick another path for one row than for many. So no
variant is assumed invariant: quantize runs this probe on what it keeps and records the verdict in the
manifest (``metrics.batch_invariance``), which ``info()`` reports.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from toolchain.data.texts import TextSet
from toolchain.runtime.manifest import Manifest
from toolchain.runtime.model import open_variant
from toolchain.variants.gate import gate_for

TOLERANCE = 1e-5  # |together - alone| on the task's outputs (unit embeddings, probabilities); fp32 gives 0 here
PROBE_TEXTS = 8
# Tasks whose gate outputs are one row per text (a decoder's gate scores one joined text instead).
PER_TEXT = ("feature-extraction", "text-classification", "image-classification", "text2text-generation")


def probe_texts(data: TextSet, n: int = PROBE_TEXTS) -> TextSet:
    """N texts of DATA spread from the shortest to the longest: together they make one batch with much padding."""
    order = sorted(range(len(data.texts)), key=lambda i: len(data.texts[i]))
    picks = sorted({order[round(j * (len(order) - 1) / max(1, n - 1))] for j in range(min(n, len(order)))})
    return _subset(data, picks)


def _subset(data: TextSet, idx: list[int]) -> TextSet:
    pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
    return dataclasses.replace(data, texts=pick(data.texts), labels=pick(data.labels), targets=pick(data.targets),
                               images=pick(data.images))


def batch_invariance(manifest: Manifest, variant: str, data: TextSet) -> dict[str, Any]:
    """Run DATA's probe texts as one padded batch and each alone; the largest difference, and whether it is within
    TOLERANCE. Tasks without per-text outputs are recorded as not measured (invariant: None)."""
    if manifest.task not in PER_TEXT:
        return {"invariant": None, "why": f"not measured: the {manifest.task} probe is not written yet "
                                          "(a decoder's gate scores one joined text, not a batch)"}
    probe = probe_texts(data)
    gate = gate_for(manifest.task)
    model = open_variant(manifest, variant=variant, provider="cpu")
    together = gate.outputs(model, probe)
    alone = [gate.outputs(model, _subset(probe, [i]))[0] for i in range(len(probe.texts))]
    if together.dtype == object:  # strings (translations): count the texts that differ
        diff = float(sum(a != b for a, b in zip(together, alone)))
    else:
        diff = float(np.abs(np.asarray(together, np.float64) - np.stack(alone).astype(np.float64)).max())
    out = {"invariant": bool(diff <= TOLERANCE), "max_abs_diff": diff, "tolerance": TOLERANCE,
           "texts": len(probe.texts), "batch": model.batch_size}
    if not out["invariant"]:  # its gate ran through the runtime's own batching, as a call with many texts is served
        out["gated_with"] = f"runtime batches of up to {model.batch_size} texts sorted by length, as served"
    return out
