"""Reading and checking an artifact's manifest.json: the contract between export and runtime.

Each section is a typed object (sections.py, variants.py) read and written in one place. Schema v2 gives
each variant named components (files with sha256, size and external data); a v1 manifest (one file per
variant) is upgraded in memory when read, and written back as v2 by whatever next writes the manifest.

Torch-free: used by the runtime and by every stage that writes an artifact.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .feeds import read_feeds
from .sections import (DICT, FIX, INT, LIST, STR, ExporterInfo, Generation, Pooling, Preprocess, SourceInfo,
                       TensorSpec, TokenizerInfo, check_types)
from .tasks import TASKS, task_spec
from .variants import MODEL, Component, DataFile, Variant, sha256_file

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
REFERENCE_VARIANT = "fp32"

__all__ = ["MANIFEST", "MODEL", "REFERENCE_VARIANT", "SCHEMA_VERSION", "Component", "DataFile", "ExporterInfo", "Generation",
           "Manifest", "Pooling", "Preprocess", "SourceInfo", "TensorSpec", "TokenizerInfo", "Variant", "read_manifest",
           "session_error", "sha256_file"]


@dataclass
class Manifest:
    """The parsed manifest.json of an artifact directory. ``data`` is the raw JSON (as read; a v1 file's
    variants are upgraded in ``variants``); read the typed properties instead."""

    root: Path
    task: str
    variants: dict[str, Variant]
    data: dict[str, Any]
    schema_version: int = SCHEMA_VERSION  # as read from disk; to_dict() always writes SCHEMA_VERSION

    @property
    def labels(self) -> list[str] | None:
        return self.data.get("labels")

    @property
    def max_length(self) -> int:
        return int(self.data["max_length"])

    @property
    def source(self) -> SourceInfo:
        return SourceInfo.from_dict(self.data.get("source"))

    @property
    def pooling(self) -> Pooling:
        return Pooling.from_dict(self.data.get("pooling"))

    @property
    def tokenizer(self) -> TokenizerInfo:
        return TokenizerInfo.from_dict(self.data.get("tokenizer"))

    @property
    def feeds(self) -> dict[str, str]:
        """How each input of a text encoder's graph is filled (input name -> rule of feeds.RULES)."""
        return read_feeds(self.data.get("feeds"), self.root / MANIFEST)

    @property
    def generation(self) -> Generation:
        return Generation.from_dict(self.data.get("generation")).checked(self.root / MANIFEST)

    @property
    def preprocess(self) -> Preprocess:
        """How images become pixel values (image tasks); an ArtifactError when the manifest has none."""
        if not isinstance(self.data.get("preprocess"), dict):
            raise ArtifactError(f"{self.root / MANIFEST} has no preprocess section (how images become the graph's "
                                f"pixel values); re-export the artifact with --task {self.task}.")
        return Preprocess.from_dict(self.data["preprocess"]).checked(self.root / MANIFEST)

    @property
    def exporter_info(self) -> ExporterInfo:
        return ExporterInfo.from_dict(self.data)

    @property
    def exporter(self) -> str:
        return self.exporter_info.name

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_dict(i) for i in self.data["inputs"])

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_dict(o) for o in self.data["outputs"])

    @property
    def opset(self) -> int | None:
        return self.data.get("opset")

    @property
    def bench(self) -> dict[str, Any]:
        """Bench results per provider, as ``toolchain bench`` recorded them (empty when never benched)."""
        return dict(self.data.get("bench") or {})

    @property
    def versions(self) -> dict[str, Any]:
        """The package versions that wrote the artifact."""
        return dict(self.data.get("versions") or {})

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
        """Check every file of the variant (each component and its external data) exists inside the artifact
        and matches its recorded sha256; return the path of its ``model`` component."""
        paths = self.verify_components(name)
        if MODEL not in paths:
            raise ArtifactError(f"variant {name!r} in {self.root / MANIFEST} has components "
                                f"{', '.join(sorted(paths))}, not one {MODEL!r} graph; open it by its components.")
        return paths[MODEL]

    def verify_components(self, name: str) -> dict[str, Path]:
        """Check every file of the variant, as verify() does; return the path of each component's graph."""
        variant = self.variant(name)
        out = {}
        for part, component in variant.components.items():
            for i, f in enumerate(component.files):  # the graph first, then its external data
                self._checked(name, f, "" if i == 0 else f" (external data of its {part!r} graph)")
            out[part] = self.root / component.file
        return out

    def _checked(self, name: str, f: DataFile, role: str) -> Path:
        path = self.root / f.file
        if self.root.resolve() not in path.resolve().parents:
            raise ArtifactError(f"{self.root / MANIFEST}: variant {name!r} points outside the artifact ({f.file}); "
                                "re-export the artifact.")
        if not path.is_file():
            raise ArtifactError(f"{path} is missing although {MANIFEST} lists it as variant {name!r}{role}; "
                                "re-export or re-quantize to recreate it.")
        if sha256_file(path) != f.sha256:
            raise ArtifactError(f"{path} does not match the sha256 recorded in {MANIFEST} (damaged or replaced file); "
                                "re-export the artifact.")
        return path

    def tokenizer_path(self) -> Path | None:
        """The tokenizer file the manifest names (tokenizer.json by default), checked to exist inside the artifact;
        None for an image task whose manifest names no tokenizer (an image classifier reads no text)."""
        if self.data.get("tokenizer") is None and task_spec(self.task).inputs != "text":
            return None
        name = self.tokenizer.file
        path = self.root / str(name)
        if not isinstance(name, str) or self.root.resolve() not in path.resolve().parents:
            raise ArtifactError(f"{self.root / MANIFEST} names a tokenizer outside the artifact ({name}); "
                                "re-export the artifact.")
        if not path.is_file():
            raise ArtifactError(f"{path} is missing although {MANIFEST} names it as the tokenizer; re-export the artifact.")
        return path

    def to_dict(self) -> dict[str, Any]:
        """The manifest as written: always the current schema (a v1 manifest is upgraded)."""
        data = dict(self.data)
        data["schema_version"] = SCHEMA_VERSION
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
    if not isinstance(version, int) or isinstance(version, bool):
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
    _check_top(path, data)
    variants = {}
    for name, entry in data["variants"].items():
        if not isinstance(entry, dict):
            raise ArtifactError(f"{path}: variant {name!r} is not an object; re-run 'toolchain export'.")
        variants[name] = Variant.from_dict(name, entry, path, version)
    return Manifest(root=root, task=data["task"], variants=variants, data=data, schema_version=version)


# What each top-level key must hold: (phrase, types), and whether it may be null or absent.
MANIFEST_TYPES: dict[str, tuple[tuple[str, tuple[type, ...]], bool]] = {
    "task": (STR, False), "max_length": (INT, False), "inputs": (LIST, False), "outputs": (LIST, False),
    "labels": (LIST, True), "tokenizer": (DICT, True), "pooling": (DICT, True), "generation": (DICT, True),
    "source": (DICT, True), "versions": (DICT, True), "bench": (DICT, True), "opset": (INT, True),
    "preprocess": (DICT, True), "feeds": (DICT, True), "max_length_source": (STR, True),
}


def _check_top(path: Path, data: dict[str, Any]) -> None:
    """Refuse a manifest whose top-level keys hold the wrong kind of value (a hand edit, a damaged file)."""
    check_types(path, data, MANIFEST_TYPES)
    if not all(isinstance(io, dict) and isinstance(io.get("name"), str) for io in data["inputs"] + data["outputs"]):
        raise ArtifactError(f"{path}: every entry of inputs and outputs should be an object with a name; {FIX}.")
    if data.get("labels") is not None and not all(isinstance(label, str) for label in data["labels"]):
        raise ArtifactError(f"{path}: labels should be a list of strings; {FIX}.")
    if data["task"] not in TASKS:
        raise ArtifactError(f"{path} is for task {data['task']!r}, which this toolchain cannot run; "
                            f"upgrade the toolchain package or re-export for one of {', '.join(sorted(TASKS))}.")


def session_error(path: Path, exc: BaseException) -> ArtifactError:
    """ONNX Runtime's refusal to build a session for ``path``, as one sentence that says the fix.

    A model newer than the installed onnxruntime (its opset or IR version) gets the versions and how to
    re-export; anything else gets ORT's own first line without the C++ location, and 're-export'."""
    try:
        import onnxruntime

        ort = f"onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = "the installed onnxruntime"
    text = " ".join(str(exc).split())
    m = re.search(r"Opset (\d+) is under development.*?domain (\S+) is till opset (\d+)", text)
    if m:
        needs, domain, supported = m.group(1), m.group(2).rstrip("."), m.group(3)
        if domain in ("ai.onnx", ""):
            return ArtifactError(f"{path} needs ONNX opset {needs}, newer than {ort} runs (up to opset {supported}); "
                                 f"re-export with --opset {supported} or lower, or upgrade onnxruntime.")
        return ArtifactError(f"{path} needs opset {needs} of domain {domain}, newer than {ort} runs (up to {supported}); "
                             "re-export with an older exporter, or upgrade onnxruntime.")
    m = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", text)
    if m:
        return ArtifactError(f"{path} has ONNX IR version {m.group(1)}, newer than {ort} reads (up to {m.group(2)}); "
                             "re-export it with an onnx package that matches, or upgrade onnxruntime.")
    first = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    first = re.sub(r"^/\S+:\d+ [^)]*\) ", "", first)  # the C++ file, line and signature
    return ArtifactError(f"ONNX Runtime cannot load {path} ({first[:300]}); re-export the artifact.")

