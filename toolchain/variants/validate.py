"""validate: re-check an artifact's variants: exact ones against PyTorch (parity), lossy ones against fp32
(their gate), and raise ParityError listing every miss."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolchain.export.parity import ParityResult, check_variant
from toolchain.export.reference import reference_for
from toolchain.runtime.errors import ParityError, SourceError
from toolchain.runtime.manifest import read_manifest
from toolchain.runtime.tasks import task_spec


@dataclass
class Check:
    """One variant's verdict: parity against PyTorch (exact variants) or the gate against fp32 (lossy ones)."""

    variant: str
    kind: str  # "parity" or "gate"
    passed: bool
    summary: str


def _parity_check(r: ParityResult) -> Check:
    summary = f"max |onnx - torch| = {r.max_abs_diff:.3g} (tolerance {r.atol:g}), token ids match: {r.tokens_match}"
    return Check(r.variant, "parity", r.passed, summary)


def validate(artifact: str | Path, variants: list[str] | None = None, data: str | Path | None = None,
             trust_remote_code: bool = False) -> list[Check]:
    """Re-check every variant (or the named ones) and raise ParityError listing every miss.

    Variants exported or rewritten losslessly (their tolerance is an ``atol``) are compared with PyTorch;
    quantized ones re-run their gate against fp32 on DATA (default: the data they were gated on).
    """
    from toolchain.data.texts import read_texts
    from toolchain.variants.gate import judge
    from toolchain.export.source import Source

    root = Path(artifact)
    manifest = read_manifest(root)
    source = manifest.source
    path = Path(source.path)
    if source.path and path.is_dir() and source.weights_sha256:
        now, _ = Source(str(path), path, source.kind).weights_sha256()
        if now != source.weights_sha256:
            raise SourceError(f"the weights in {path} changed since {root} was exported; re-export before validating.")
    names = variants or list(manifest.variants)
    for name in names:
        manifest.variant(name)  # unknown names fail before any work
    reference, fp32_outputs, checks = None, {}, []
    for name in names:
        v = manifest.variant(name)
        if "atol" in v.tolerance or name == "fp32":
            reference = reference or reference_for(source.kind, path, manifest.task, trust_remote_code=trust_remote_code)
            atol = float(v.tolerance.get("atol", task_spec(manifest.task).atol))
            checks.append(_parity_check(check_variant(root, name, reference, atol)))
            continue
        texts = read_texts(data or v.metrics.get("gate", {}).get("data"), limit=v.metrics.get("gate", {}).get("texts"))
        result, fp32_outputs[texts.path] = judge(manifest, name, texts, v.tolerance.get("max_drop"),
                                                 fp32_outputs.get(texts.path))
        checks.append(Check(name, "gate", result.passed, result.summary))
    misses = [c for c in checks if not c.passed]
    if misses:
        raise ParityError(f"{root}: " + "; ".join(f"{c.variant} misses its {c.kind} check ({c.summary})" for c in misses) + ".")
    return checks
