"""The variant section of manifest.json: each variant's files (components) and what is known about it.

Schema v2: a variant has named **components** (``model`` for a single graph; ``encoder`` + ``decoder``,
``vision_encoder`` + ``decoder`` for models of several graphs), each a file with its sha256 and size plus
the external-data files its graph keeps weights in. Schema v1 listed one file per variant
(``file``, ``sha256``, ``bytes``); it is read as one ``model`` component.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .sections import BOOL, DICT, FIX, INT, LIST, STR, check_types

MODEL = "model"  # the component of a single-graph variant
VARIANT_FIELDS = ("precision", "passed", "metrics", "tolerance", "latency")
VARIANT_TYPES = {"precision": (STR, False), "passed": (BOOL, False), "metrics": (DICT, True),
                 "tolerance": (DICT, True), "latency": (DICT, True), "components": (DICT, False)}
V1_TYPES = {"file": (STR, False), "sha256": (STR, False), "bytes": (INT, False), **VARIANT_TYPES}
V1_TYPES.pop("components")
FILE_TYPES = {"file": (STR, False), "sha256": (STR, False), "bytes": (INT, False), "external_data": (LIST, True)}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large models need no extra memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class DataFile:
    """One file on disk, relative to the artifact, with its recorded sha256 and size."""

    file: str
    sha256: str
    bytes: int

    @classmethod
    def from_dict(cls, data: Any, where: Path, what: str, prefix: str) -> "DataFile":
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: {prefix.rstrip('.')} is not an object; {FIX}.")
        missing = [k for k in ("file", "sha256", "bytes") if k not in data]
        if missing:
            raise ArtifactError(f"{where}: {what} lacks {', '.join(missing)}; re-export the artifact.")
        check_types(where, data, FILE_TYPES, prefix)
        return cls(file=data["file"], sha256=data["sha256"], bytes=data["bytes"])

    @classmethod
    def of(cls, root: Path, file: str) -> "DataFile":
        path = Path(root) / file
        return cls(file=file, sha256=sha256_file(path), bytes=path.stat().st_size)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Component(DataFile):
    """One graph of a variant, and the external-data files that hold its weights (graphs over 2 GB)."""

    external_data: tuple[DataFile, ...] = ()

    @property
    def total_bytes(self) -> int:
        return self.bytes + sum(d.bytes for d in self.external_data)

    @property
    def files(self) -> tuple[DataFile, ...]:
        """The graph file first, then its external data."""
        return (DataFile(self.file, self.sha256, self.bytes), *self.external_data)

    @classmethod
    def read(cls, data: Any, where: Path, variant: str, name: str) -> "Component":
        prefix = f"variants.{variant}.components.{name}."
        head = DataFile.from_dict(data, where, f"variant {variant!r} (component {name!r})", prefix)
        extra = tuple(DataFile.from_dict(d, where, f"variant {variant!r} (external data of {name!r})",
                                         f"{prefix}external_data.{i}.")
                      for i, d in enumerate(data.get("external_data") or ()))
        return cls(head.file, head.sha256, head.bytes, extra)

    @classmethod
    def of(cls, root: Path, file: str) -> "Component":
        """The component for ROOT/FILE as it is on disk: hashed, with the external-data files beside it
        (``FILE_data*``, the name ONNX's and the exporters' external-data writers use)."""
        root, path = Path(root), Path(root) / file
        extra = sorted(p.relative_to(root).as_posix() for p in path.parent.glob(glob.escape(path.name) + "_data*")
                       if p.is_file())
        head = DataFile.of(root, file)
        return cls(head.file, head.sha256, head.bytes, tuple(DataFile.of(root, n) for n in extra))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.external_data:
            out["external_data"] = [d.to_dict() for d in self.external_data]
        return out


class Variant:
    """One variant of the artifact (fp32, int8, ...): its components and what is known about it.

    ``Variant(name, file, sha256, bytes, precision, ...)`` makes a single-graph variant (one ``model``
    component); pass ``components=`` for a variant of several graphs."""

    def __init__(self, name: str, file: str = "", sha256: str = "", bytes: int = 0, precision: str = "fp32",
                 passed: bool = True, metrics: dict[str, Any] | None = None, tolerance: dict[str, Any] | None = None,
                 latency: dict[str, Any] | None = None, components: dict[str, Component] | None = None):
        self.name, self.precision, self.passed = name, precision, passed
        self.metrics, self.tolerance, self.latency = dict(metrics or {}), dict(tolerance or {}), dict(latency or {})
        self.components = dict(components) if components else {MODEL: Component(file, sha256, bytes)}

    def __repr__(self) -> str:
        return f"Variant({self.name!r}, {self.precision!r}, components={sorted(self.components)})"

    @property
    def file(self) -> str:
        """The ``model`` component's file (single-graph variants)."""
        return self._model().file

    @property
    def sha256(self) -> str:
        return self._model().sha256

    @property
    def bytes(self) -> int:
        """Total size on disk: every component and its external data."""
        return sum(c.total_bytes for c in self.components.values())

    def _model(self) -> Component:
        if MODEL not in self.components:
            raise ArtifactError(f"variant {self.name!r} has components {', '.join(sorted(self.components))}, "
                                f"not one {MODEL!r} file; open it by its components.")
        return self.components[MODEL]

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], where: Path, version: int = 2) -> "Variant":
        """Read one variant; a schema-v1 entry (file, sha256, bytes) becomes one ``model`` component."""
        required = ("file", "sha256", "bytes", "precision") if version < 2 else ("components", "precision")
        missing = [k for k in required if k not in data]
        if missing:
            raise ArtifactError(f"{where}: variant {name!r} lacks {', '.join(missing)}; re-export the artifact.")
        check_types(where, data, V1_TYPES if version < 2 else VARIANT_TYPES, f"variants.{name}.")
        if version < 2:
            components = {MODEL: Component(data["file"], data["sha256"], data["bytes"])}
        else:
            if not data["components"]:
                raise ArtifactError(f"{where}: variant {name!r} lists no components; re-export the artifact.")
            components = {c: Component.read(entry, where, name, c) for c, entry in data["components"].items()}
        known = {k: data[k] for k in VARIANT_FIELDS if data.get(k) is not None}
        return cls(name, components=components, **known)

    def to_dict(self) -> dict[str, Any]:
        """The schema-v2 entry."""
        return {"components": {n: c.to_dict() for n, c in self.components.items()}, "precision": self.precision,
                "passed": self.passed, "metrics": self.metrics, "tolerance": self.tolerance, "latency": self.latency}

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
