"""The typed sections of manifest.json: each read by its ``from_dict`` and written by its ``to_dict``, with
its defaults here and nowhere else. The variant section (files and what is known about them) is in
variants.py; manifest.py puts the whole manifest together.

Torch-free: used by the runtime and by every stage that writes an artifact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError

FIX = "re-run 'toolchain export'"

# What a key must hold: (phrase, types) and whether it may be null or absent.
INT, STR, DICT, LIST = ("a positive integer", (int,)), ("a string", (str,)), ("an object", (dict,)), ("a list", (list,))
BOOL = ("true or false", (bool,))


def check_types(path: Path, data: dict[str, Any], types: dict[str, Any], prefix: str = "") -> None:
    """Refuse a manifest whose keys hold the wrong kind of value (a hand edit, a damaged file)."""
    for key, ((phrase, allowed), nullable) in types.items():
        if key not in data or (data[key] is None and nullable):
            continue
        value = data[key]
        ok = isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))
        if ok and allowed == (int,):
            ok = value > 0
        if not ok:
            raise ArtifactError(f"{path}: {prefix}{key} should be {phrase}, not {json.dumps(value)[:40]}; {FIX}.")


@dataclass(frozen=True)
class SourceInfo:
    """Where the artifact came from: the PyTorch model it was exported from."""

    path: str = ""  # the local model directory (parity and bench re-load PyTorch from it)
    model: str = ""  # the name the user gave (hub id or path)
    kind: str = "transformers"  # transformers | sentence-transformers | module (a user's nn.Module dir)
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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weights": list(self.weights)}


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector (feature-extraction)."""

    mode: str = "mean"  # mean | cls (the first real token) | max | last (the last real token: decoder embedders)
    normalize: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Pooling":
        d = data or {}
        return cls(mode=str(d.get("mode", cls.mode)), normalize=bool(d.get("normalize", cls.normalize)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenizerInfo:
    """The tokenizer file inside the artifact and how to pad with it."""

    file: Any = "tokenizer.json"  # checked to be a str inside the artifact by Manifest.tokenizer_path()
    pad_id: int = 0
    pad_token: str = "[PAD]"
    padding_side: str = "right"  # where encoder tasks pad a batch (the source tokenizer's side); one of PADDING_SIDES
    pad_to_multiple_of: int | None = None  # batches padded to a multiple of this (Longformer: its attention window)
    pad_batches: bool = True  # False: the model reads its padding (ConvBERT's convolution), so each text runs alone

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TokenizerInfo":
        d = data or {}
        side, multiple = str(d.get("padding_side", cls.padding_side)), d.get("pad_to_multiple_of")
        if side not in PADDING_SIDES or not (multiple is None or isinstance(multiple, int) and multiple > 0):
            raise ArtifactError(f"tokenizer.padding_side {side!r} or pad_to_multiple_of {multiple!r} in the manifest "
                                f"is not valid (left or right; a positive integer or null); {FIX}.")
        return cls(file=d.get("file", cls.file), pad_id=int(d.get("pad_id", cls.pad_id)),
                   pad_token=str(d.get("pad_token", cls.pad_token)), padding_side=side, pad_to_multiple_of=multiple,
                   pad_batches=bool(d.get("pad_batches", cls.pad_batches)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PADDING_SIDES = ("left", "right")


@dataclass(frozen=True)
class Generation:
    """What a decoder's generate loop needs that its graph does not say."""

    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    # "left": optimum's graphs (left-padded prompts, positions from the mask); "right": graphs whose
    # attention (GroupQueryAttention) reads each row's length from the mask sum.
    padding_side: str = "left"
    # the graph reads the past from and writes the present into one full-length buffer
    shared_kv_buffer: bool = False
    # an encoder-decoder's target positions (a learned or fixed position table): decoding stops there, since one
    # more step would index past the table; None where positions are relative or absent (T5, an LSTM)
    max_positions: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Generation":
        d = data or {}
        bos, positions = d.get("bos_token_id"), d.get("max_positions")
        return cls(eos_token_ids=tuple(int(e) for e in d.get("eos_token_ids") or ()),
                   bos_token_id=None if bos is None else int(bos),
                   padding_side=str(d.get("padding_side", cls.padding_side)),
                   shared_kv_buffer=bool(d.get("shared_kv_buffer", cls.shared_kv_buffer)),
                   max_positions=None if positions is None else int(positions))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "eos_token_ids": list(self.eos_token_ids)}

    def checked(self, where: Path) -> "Generation":
        if self.padding_side not in PADDING_SIDES:
            raise ArtifactError(f"generation.padding_side {self.padding_side!r} in {where} is not known; "
                                "re-export the artifact.")
        if self.max_positions is not None and self.max_positions < 1:
            raise ArtifactError(f"generation.max_positions in {where} is {self.max_positions}, not a positive number "
                                "of positions; re-export the artifact.")
        return self


@dataclass(frozen=True)
class ExporterInfo:
    """Which exporter wrote the graph, how (``method``: the torch exporter's "dynamo" or "torchscript"; empty
    for exporters with one way), and why an earlier exporter or method was not used (empty when none failed).
    Stored as the manifest's top-level ``exporter``, ``exporter_method`` and ``exporter_fallback`` keys."""

    name: str = "optimum"
    fallback: str = ""
    method: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ExporterInfo":
        d = data or {}
        return cls(name=str(d.get("exporter") or cls.name), fallback=str(d.get("exporter_fallback") or ""),
                   method=str(d.get("exporter_method") or ""))

    def to_dict(self) -> dict[str, Any]:
        return {"exporter": self.name, **({"exporter_method": self.method} if self.method else {}),
                **({"exporter_fallback": self.fallback} if self.fallback else {})}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type and dims (ints, or names of dynamic axes)."""

    name: str
    dtype: str = ""
    dims: tuple[Any, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TensorSpec":
        return cls(name=str(data["name"]), dtype=str(data.get("dtype", "")), dims=tuple(data.get("dims") or ()))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


# Pillow's resampling filters by name, in Pillow's (and transformers' PILImageResampling) numbering.
RESAMPLE = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the graph's pixel values (image tasks; runtime/images.py applies it): resize to
    height x width with ``resample``, multiply by ``rescale_factor``, subtract ``mean`` and divide by ``std``
    per channel (RGB), channels first. Written at export from the model's Hugging Face image processor."""

    height: int = 224
    width: int = 224
    resize: bool = True
    resample: str = "bilinear"  # one of RESAMPLE
    rescale: bool = True
    rescale_factor: float = 1 / 255
    normalize: bool = True
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Preprocess":
        d = data or {}
        try:
            return cls(height=int(d.get("height", cls.height)), width=int(d.get("width", cls.width)),
                       resize=bool(d.get("resize", cls.resize)), resample=str(d.get("resample", cls.resample)),
                       rescale=bool(d.get("rescale", cls.rescale)),
                       rescale_factor=float(d.get("rescale_factor", cls.rescale_factor)),
                       normalize=bool(d.get("normalize", cls.normalize)),
                       mean=tuple(float(x) for x in d.get("mean", cls.mean)),
                       std=tuple(float(x) for x in d.get("std", cls.std)))
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"the manifest's preprocess section cannot be read ({exc}); {FIX}.") from None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def checked(self, where: Path) -> "Preprocess":
        """Refuse settings the runtime cannot apply (a hand edit, a damaged file), naming the key."""
        problems = [
            (self.height > 0 and self.width > 0, "height and width should be positive"),
            (self.resample in RESAMPLE, f"resample should be one of {', '.join(RESAMPLE)}"),
            (len(self.mean) == 3 and len(self.std) == 3, "mean and std should hold 3 numbers (R, G, B)"),
            (all(s > 0 for s in self.std), "std should be positive"),
            (self.rescale_factor > 0, "rescale_factor should be positive"),
        ]
        for ok, what in problems:
            if not ok:
                raise ArtifactError(f"{where}: preprocess.{what}, not {json.dumps(self.to_dict())[:120]}; {FIX}.")
        return self
