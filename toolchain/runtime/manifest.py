"""Reading and checking an artifact's manifest.json: the contract between export and runtime.

Torch-free: used by the runtime and by every stage that writes an artifact.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE_VARIANT = "fp32"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large models need no extra memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Variant:
    """One ONNX file of the artifact and what is known about it."""

    name: str
    file: str
    sha256: str
    bytes: int
    precision: str
    passed: bool = True
    metrics: dict[str, Any] = field(default_factory=dict)
    tolerance: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], where: Path) -> "Variant":
        missing = [k for k in ("file", "sha256", "bytes", "precision") if k not in data]
        if missing:
            raise ArtifactError(
                f"{where}: variant {name!r} lacks {', '.join(missing)}; re-export the artifact."
            )
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "name"}
        return cls(name=name, **known)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "name"}
        return out

    def check_summary(self) -> str:
        """One line on how this variant was checked: parity against PyTorch, or its gate against fp32."""
        parity, gate = self.metrics.get("parity") or {}, self.metrics.get("gate") or {}
        if "max_abs_diff" in parity:
            return f"parity vs PyTorch {parity['max_abs_diff']:.2g} (atol {parity.get('atol', '?')})"
        if "mean_cosine" in gate:
            return f"cosine to fp32: mean {gate['mean_cosine']:.4f}, min {gate.get('min_cosine', float('nan')):.4f}"
        if "accuracy" in gate:
            return f"accuracy {gate['accuracy']:.4f} (fp32 {gate.get('fp32_accuracy', float('nan')):.4f})"
        if "token_agreement" in gate:
            return f"next-token agreement {gate['token_agreement']:.4f}, perplexity x{gate['perplexity_ratio']:.4f}"
        if "agreement" in gate:
            return f"agreement with fp32 {gate['agreement']:.4f}"
        return "not checked"

    def latency_summary(self) -> str:
        """Recorded p50 latency per provider, or 'not benched'."""
        return "; ".join(f"{p} p50 {t['p50_ms']:.2f} ms (batch {t.get('batch')}, seq {t.get('seq')})"
                         for p, t in self.latency.items() if isinstance(t, dict) and "p50_ms" in t) or "not benched"


@dataclass
class Manifest:
    """The parsed manifest.json of an artifact directory."""

    root: Path
    task: str
    variants: dict[str, Variant]
    data: dict[str, Any]

    @property
    def labels(self) -> list[str] | None:
        return self.data.get("labels")

    @property
    def max_length(self) -> int:
        return int(self.data["max_length"])

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise ArtifactError(
                f"variant {name!r} is not in {self.root / MANIFEST}; "
                f"choose one of {sorted(self.variants)} or 'auto'."
            )
        return self.variants[name]

    def variant_path(self, name: str) -> Path:
        return self.root / self.variant(name).file

    def verify(self, name: str) -> Path:
        """Check the variant's file exists and matches its recorded sha256; return its path."""
        variant = self.variant(name)
        path = self.root / variant.file
        if self.root.resolve() not in path.resolve().parents:
            raise ArtifactError(f"variant {name!r} points outside the artifact ({variant.file}); re-export the artifact.")
        if not path.is_file():
            raise ArtifactError(
                f"{path} is missing although {MANIFEST} lists it as variant {name!r}; "
                "re-export or re-quantize to recreate it."
            )
        actual = sha256_file(path)
        if actual != variant.sha256:
            raise ArtifactError(
                f"{path} does not match the sha256 recorded in {MANIFEST} (damaged or replaced file); "
                "re-export the artifact."
            )
        return path

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.data)
        data["variants"] = {n: v.to_dict() for n, v in self.variants.items()}
        return data


def read_manifest(root: str | Path) -> Manifest:
    """Parse and sanity-check ``root/manifest.json``; raise ArtifactError naming the fix."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise ArtifactError(f"{root} is not an artifact directory; create one with 'toolchain export'.")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; {root} is not a complete artifact, re-run 'toolchain export'.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} cannot be read as JSON ({exc}); re-run 'toolchain export'.") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is not a JSON object; re-run 'toolchain export'.")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{path} has no integer schema_version; re-run 'toolchain export'.")
    if version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema_version {version}, newer than this toolchain's {SCHEMA_VERSION}; "
            "upgrade the toolchain package."
        )
    for key in ("task", "variants", "max_length", "inputs", "outputs"):
        if key not in data:
            raise ArtifactError(f"{path} lacks the key {key!r}; re-run 'toolchain export'.")
    if not isinstance(data["variants"], dict) or not data["variants"]:
        raise ArtifactError(f"{path} lists no variants; re-run 'toolchain export'.")
    variants = {}
    for name, entry in data["variants"].items():
        if not isinstance(entry, dict):
            raise ArtifactError(f"{path}: variant {name!r} is not an object; re-run 'toolchain export'.")
        variants[name] = Variant.from_dict(name, entry, path)
    return Manifest(root=root, task=data["task"], variants=variants, data=data)
