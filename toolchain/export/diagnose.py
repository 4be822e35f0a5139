"""Which side of a parity miss is wrong: the graph, or the PyTorch reference it is compared with.

PyTorch is run again in float64 on the same inputs (or, where the model's code pins float32, with rounding-sized
noise on its weights). A float32 reference that agrees with that run is sound, so a graph far from both is wrong
(a trace that kept one dummy input's path, a mis-exported op); a graph close to that run while the float32
reference is not means the reference is the one off; both far means the model's own numerics decide the result (a
near-tie, such as two experts' routing scores), and parity cannot judge the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.export.modules import run_module

# (feeds for PyTorch, the graph's output on them, a mask of the positions to compare or None for all)
Case = tuple[dict[str, np.ndarray], np.ndarray, Any]


def _gap(a: np.ndarray, b: np.ndarray, mask: Any) -> float:
    if a.shape != b.shape:
        return float("inf")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float((diff[mask.astype(bool)] if mask is not None else diff).max())


def _float64_outputs(reference: Any, cases: list[Case], output: str) -> list[np.ndarray]:
    """PyTorch's outputs with the model in float64 (restored to float32 after)."""
    torch, model = reference.torch, reference.model
    try:
        model.double()
        return _run(torch, model, cases, output, getattr(reference, "spec", None))
    finally:
        model.float()


def _perturbed_outputs(reference: Any, cases: list[Case], output: str) -> list[np.ndarray]:
    """PyTorch's outputs with every weight of a copy of the model scaled by 1 + NOISE x N(0, 1): rounding-sized
    changes, for models whose code pins float32 (DeepSeek-V3's router) so that float64 cannot run."""
    import copy

    torch = reference.torch
    model = copy.deepcopy(reference.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + NOISE * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return _run(torch, model, cases, output, getattr(reference, "spec", None))


def _run(torch: Any, model: Any, cases: list[Case], output: str, spec: Any = None) -> list[np.ndarray]:
    """MODEL on each case's feeds: a transformers model's named output, or (SPEC: a custom module's IO spec)
    the output the spec names."""
    outs = []
    with torch.inference_mode():
        for feeds, _, _ in cases:
            tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
            out = run_module(model, spec, tensors)[output] if spec is not None else getattr(model(**tensors), output)
            outs.append(out.double().numpy())
    return outs


NOISE = 1e-6  # relative weight noise: the size of the rounding differences between two float32 engines
# How the reference is re-run, in order of preference: (what it is called, how)
PROBES = (("PyTorch in float64", _float64_outputs), ("PyTorch with 1e-6 relative weight noise", _perturbed_outputs))


def which_is_wrong(reference: Any, cases: list[Case], output: str, atol: float) -> str:
    """One clause saying whether the graph or the reference is wrong on CASES, with the numbers that show it."""
    f32 = [reference.outputs(feeds, output) for feeds, _, _ in cases]
    errors = []
    for name, probe in PROBES:
        try:
            other = probe(reference, cases, output)
            break
        except (RuntimeError, MemoryError, TypeError, ValueError) as exc:  # no float64 kernel, no memory for a copy
            errors.append(f"{name}: {str(exc)[:60]}")
    else:
        return f"(PyTorch could not be re-run to tell which side is wrong: {'; '.join(errors)})"
    reference_err = max(_gap(a, b, m) for a, b, (_, _, m) in zip(f32, other, cases))
    graph_err = max(_gap(g, b, m) for b, (_, g, m) in zip(other, cases))
    numbers = f"PyTorch float32 vs {name}: {reference_err:.2g}; graph vs {name}: {graph_err:.2g}"
    if reference_err <= atol < graph_err:
        return f"the graph is wrong, not the reference ({numbers})"
    if graph_err <= atol < reference_err:
        return f"the PyTorch reference is wrong in float32, not the graph ({numbers})"
    if reference_err > atol:
        return (f"the model's own numerics decide the result (a near-tie such as expert routing), so parity cannot "
                f"judge the graph ({numbers})")
    return f"both sides agree with {name} within the tolerance ({numbers})"
