"""Reading and checking an artifact's manifest.json: the contract between export and runtime.

Torch-free: used by the runtime and by every stage that writes an artifact.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .tasks import TASKS

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


@dataclass(frozen=True)
class SourceInfo:
    """Where the artifact came from: the PyTorch model it was exported from."""

    path: str = ""  # the local model directory (parity and bench re-load PyTorch from it)
    model: str = ""  # the name the user gave (hub id or path)
    kind: str = "transformers"  # transformers | sentence-transformers
    architecture: str = ""
    model_type: str = ""
    weights: tuple[str, ...] = ()  # weight files, relative to path
    weights_sha256: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "SourceInfo":
        d = data or {}
        return cls(path=str(d.get("path") or ""), model=str(d.get("model") or ""), kind=str(d.get("kind") or "transformers"),
                   architecture=str(d.get("architecture") or ""), model_type=str(d.get("model_type") or ""),
                   weights=tuple(d.get("weights") or ()), weights_sha256=str(d.get("weights_sha256") or ""))


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector (feature-extraction)."""

    mode: str = "mean"  # mean | cls | max
    normalize: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Pooling":
        d = data or {}
        return cls(mode=str(d.get("mode", "mean")), normalize=bool(d.get("normalize", True)))


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

    @property
    def source(self) -> SourceInfo:
        return SourceInfo.from_dict(self.data.get("source"))

    @property
    def pooling(self) -> Pooling:
        return Pooling.from_dict(self.data.get("pooling"))

    @property
    def exporter(self) -> str:
        return str(self.data.get("exporter") or "optimum")

    @property
    def opset(self) -> int | None:
        return self.data.get("opset")

    @property
    def bench(self) -> dict[str, Any]:
        """Bench results per provider, as ``toolchain bench`` recorded them (empty when never benched)."""
        return dict(self.data.get("bench") or {})

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
            raise ArtifactError(f"{self.root / MANIFEST}: variant {name!r} points outside the artifact ({variant.file}); "
                                "re-export the artifact.")
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

    def tokenizer_path(self) -> Path:
        """The tokenizer file the manifest names (tokenizer.json by default), checked to exist inside the artifact."""
        tok = self.data.get("tokenizer") or {}
        name = tok.get("file", "tokenizer.json")
        path = self.root / str(name)
        if not isinstance(name, str) or self.root.resolve() not in path.resolve().parents:
            raise ArtifactError(f"{self.root / MANIFEST} names a tokenizer outside the artifact ({name}); "
                                "re-export the artifact.")
        if not path.is_file():
            raise ArtifactError(f"{path} is missing although {MANIFEST} names it as the tokenizer; re-export the artifact.")
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
    _check_types(path, data)
    variants = {}
    for name, entry in data["variants"].items():
        if not isinstance(entry, dict):
            raise ArtifactError(f"{path}: variant {name!r} is not an object; re-run 'toolchain export'.")
        variants[name] = Variant.from_dict(name, entry, path)
        _check_types(path, entry, VARIANT_TYPES, f"variants.{name}.")
    return Manifest(root=root, task=data["task"], variants=variants, data=data)


# What each key of the manifest (and of each variant) must hold: (phrase, types, may be null or absent).
_INT, _STR, _DICT, _LIST = ("a positive integer", (int,)), ("a string", (str,)), ("an object", (dict,)), ("a list", (list,))
MANIFEST_TYPES: dict[str, tuple[tuple[str, tuple[type, ...]], bool]] = {
    "task": (_STR, False), "max_length": (_INT, False), "inputs": (_LIST, False), "outputs": (_LIST, False),
    "labels": (_LIST, True), "tokenizer": (_DICT, True), "pooling": (_DICT, True), "generation": (_DICT, True),
    "source": (_DICT, True), "versions": (_DICT, True), "bench": (_DICT, True), "opset": (_INT, True),
}
VARIANT_TYPES = {
    "file": (_STR, False), "sha256": (_STR, False), "bytes": (_INT, False), "precision": (_STR, False),
    "passed": (("true or false", (bool,)), False), "metrics": (_DICT, True), "tolerance": (_DICT, True),
    "latency": (_DICT, True),
}


def _check_types(path: Path, data: dict[str, Any], types=MANIFEST_TYPES, prefix: str = "") -> None:
    """Refuse a manifest whose keys hold the wrong kind of value (a hand edit, a damaged file)."""
    for key, ((phrase, allowed), nullable) in types.items():
        if key not in data or (data[key] is None and nullable):
            continue
        value = data[key]
        ok = isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))
        if ok and allowed == (int,):
            ok = value > 0
        if not ok:
            raise ArtifactError(f"{path}: {prefix}{key} should be {phrase}, not {json.dumps(value)[:40]}; "
                                "re-run 'toolchain export'.")
    if prefix == "":
        if not all(isinstance(io, dict) and isinstance(io.get("name"), str) for io in data["inputs"] + data["outputs"]):
            raise ArtifactError(f"{path}: every entry of inputs and outputs should be an object with a name; "
                                "re-run 'toolchain export'.")
        if data.get("labels") is not None and not all(isinstance(label, str) for label in data["labels"]):
            raise ArtifactError(f"{path}: labels should be a list of strings; re-run 'toolchain export'.")
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

