"""Users' own ``nn.Module``s: the plug-in point and its declarative IO spec.

A recipe names an entry point instead of a Hugging Face source::

    [model]
    module = "mypackage.mymodel:build"      # or "toolchain.train.modules.gru:build"
    [model.config]
    hidden = 128

``build(config: dict)`` returns ``(module, IOSpec)``: the ``nn.Module`` and what its graph takes and gives
(names, dtypes, dynamic axes, example inputs), the same idea as optimum's OnnxConfig. Training writes a
*module directory* (``MODULE_FILE`` with the entry point and config, safetensors weights, the tokenizer);
export, parity and bench rebuild the module from it. Nothing here is ever unpickled.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import SourceError

MODULE_FILE = "toolchain-module.json"  # {"entry", "config", "task", "labels", "max_length", "pad_id", "search"}
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
DTYPES = ("int64", "int32", "float32", "float16", "bool")
TRUSTED = "toolchain."  # entry points in this package; any other is someone's own code, run only when trusted


def runs_own_code(entry: str) -> bool:
    """True when ENTRY is not one of this package's modules: importing it runs code from outside the toolchain."""
    return not str(entry).startswith(TRUSTED)


@dataclass(frozen=True)
class TensorIO:
    """One graph input or output: its name, dtype and which axes are dynamic (axis -> axis name)."""

    name: str
    dtype: str = "int64"
    dynamic: dict[int, str] = field(default_factory=lambda: {0: "batch", 1: "sequence"})

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise SourceError(f"IO spec: {self.name!r} has dtype {self.dtype!r}; use one of {', '.join(DTYPES)}.")


@dataclass(frozen=True)
class IOSpec:
    """What a custom module's graph takes and gives. ``example(batch, lengths)`` returns example inputs
    (torch tensors keyed by input name) for a batch whose items have the given lengths."""

    inputs: tuple[TensorIO, ...]
    outputs: tuple[TensorIO, ...]
    example: Callable[[list[int]], dict[str, Any]]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: dict(t.dynamic) for t in (*self.inputs, *self.outputs) if t.dynamic}


@dataclass(frozen=True)
class Seq2SeqSpec:
    """What an encoder-decoder module exports: two graphs keeping runtime/seq2seq_io.py's contract.

    The module has ``encoder_graph`` and ``decoder_graph`` (nn.Modules sharing its weights: forward takes
    the inputs ENCODER/DECODER name, in order, and returns the outputs they name, in order) and its own
    ``forward(input_ids, attention_mask, decoder_input_ids) -> logits (batch, target, vocab)``: teacher
    forcing for training, and the uncached PyTorch reference greedy decoding is compared with.
    ``decoder.example(lengths)`` gives every decoder input for sources of those lengths (a past of 2)."""

    encoder: IOSpec
    decoder: IOSpec
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 0
    max_target_positions: int | None = None  # the decoder's position table, if it has one (decoding stops there)

    def graphs(self, module: Any) -> dict[str, tuple[Any, IOSpec]]:
        """Component name -> (nn.Module, IOSpec), in export order."""
        return {"encoder": (module.encoder_graph, self.encoder), "decoder": (module.decoder_graph, self.decoder)}


def text_classifier_io(vocab_size: int, pad_id: int = 0) -> IOSpec:
    """The IO of a text classifier the runtime's Classifier serves unchanged: input_ids and attention_mask
    (batch, sequence) int64 in, logits (batch, classes) float32 out. Examples are right-padded with PAD_ID."""

    def example(lengths: list[int]) -> dict[str, Any]:
        import torch

        gen = torch.Generator().manual_seed(0)
        width = max(lengths)
        ids = torch.full((len(lengths), width), pad_id, dtype=torch.int64)
        mask = torch.zeros((len(lengths), width), dtype=torch.int64)
        for row, n in enumerate(lengths):
            ids[row, :n] = torch.randint(pad_id + 1, vocab_size, (n,), generator=gen)
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask}

    return IOSpec(inputs=(TensorIO("input_ids"), TensorIO("attention_mask")),
                  outputs=(TensorIO("logits", "float32", {0: "batch"}),), example=example)


def load_entry(entry: str, search: Path | None = None) -> Callable[[dict[str, Any]], Any]:
    """Import ``"package.module:function"``; SEARCH (a recipe's folder) is tried first for the package."""
    module_name, sep, attr = str(entry).partition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise SourceError(f"module entry point {entry!r} is not 'package.module:function'; name the build function.")
    added = search is not None and str(search) not in sys.path
    if added:
        sys.path.insert(0, str(search))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module's own code failing at import
        raise SourceError(f"the module entry point {entry!r} cannot be imported ({first_line(exc)}); check the "
                          "name and that its package is installed or beside the recipe.") from None
    finally:
        if added:
            sys.path.remove(str(search))
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SourceError(f"{module_name} has no function {attr!r}; the entry point must name build(config).")
    return fn


def build_module(entry: str, config: dict[str, Any], search: Path | None = None) -> tuple[Any, Any]:
    """Call the entry point and check what it returns: an nn.Module and an IOSpec that agree with it."""
    import torch

    result = load_entry(entry, search)(dict(config))
    if not (isinstance(result, tuple) and len(result) == 2):
        raise SourceError(f"{entry} returned {type(result).__name__}; build(config) must return (module, IOSpec).")
    module, spec = result
    if not isinstance(module, torch.nn.Module):
        raise SourceError(f"{entry} returned a {type(module).__name__} where an nn.Module is needed; return "
                          "(module, IOSpec) from build(config).")
    if isinstance(spec, Seq2SeqSpec):
        for name, (graph, io) in spec.graphs(module).items():
            if not isinstance(graph, torch.nn.Module):
                raise SourceError(f"{entry}: the module's {name}_graph is not an nn.Module; an encoder-decoder "
                                  "module needs encoder_graph and decoder_graph (Seq2SeqSpec).")
            check_io(f"{entry} ({name})", graph, io)
        return module, spec
    if not isinstance(spec, IOSpec):
        raise SourceError(f"{entry} returned a {type(spec).__name__} as its IO spec; return an IOSpec "
                          "(toolchain.export.modules.IOSpec, e.g. text_classifier_io(vocab_size)) or a Seq2SeqSpec.")
    check_io(entry, module, spec)
    return module, spec


def run_module(module: Any, spec: IOSpec, feeds: dict[str, Any]) -> dict[str, Any]:
    """Call MODULE on FEEDS (by input name) and name its outputs as SPEC does (a tensor, tuple or dict)."""
    out = module(*[feeds[t.name] for t in spec.inputs])
    if isinstance(out, dict):
        return out
    out = out if isinstance(out, (tuple, list)) else (out,)
    if len(out) != len(spec.outputs):
        raise SourceError(f"forward() returns {len(out)} value(s) but the IO spec names {len(spec.outputs)} output(s) "
                          f"({', '.join(t.name for t in spec.outputs)}); make them agree.")
    return {t.name: value for t, value in zip(spec.outputs, out)}


def check_io(entry: str, module: Any, spec: IOSpec) -> None:
    """Run the module once on SPEC's example inputs: the outputs must be the ones the spec names."""
    import torch

    example = spec.example([3, 5])
    missing = [t.name for t in spec.inputs if t.name not in example]
    if missing:
        raise SourceError(f"{entry}: the IO spec's example gives no {', '.join(missing)}; make example() return "
                          "every input the spec names.")
    with torch.inference_mode():
        try:
            out = run_module(module.eval(), spec, example)
        except SourceError as exc:
            raise SourceError(f"{entry}: {exc}") from None
        except Exception as exc:
            raise SourceError(f"{entry}: the module fails on its own example inputs ({first_line(exc)}); make the IO "
                              "spec's inputs match forward().") from None
    names = [t.name for t in spec.outputs]
    if sorted(out) != sorted(names) or not all(isinstance(v, torch.Tensor) for v in out.values()):
        raise SourceError(f"{entry}: forward() returns {sorted(out)} but the IO spec names outputs {names}; make them "
                          "agree (one tensor per named output).")
    wrong = [f"{t.name} is {str(out[t.name].dtype).removeprefix('torch.')}, not {t.dtype}" for t in spec.outputs
             if str(out[t.name].dtype).removeprefix("torch.") != t.dtype]
    if wrong:
        raise SourceError(f"{entry}: {'; '.join(wrong)}; make forward() return the dtypes the IO spec names.")


@dataclass(frozen=True)
class ModuleDir:
    """A trained custom module on disk (what training writes and export reads)."""

    path: Path
    entry: str
    config: dict[str, Any]
    task: str
    labels: list[str] | None = None
    max_length: int = 128
    pad_id: int = 0
    search: str = ""  # the recipe's folder, where a user's own package may sit

    def build(self) -> tuple[Any, Any]:
        """The module with its trained weights loaded (safetensors), in eval mode."""
        from safetensors.torch import load_file

        module, spec = build_module(self.entry, self.config, Path(self.search) if self.search else None)
        weights = self.path / WEIGHTS_FILE
        try:
            module.load_state_dict(load_file(str(weights)))
        except Exception as exc:  # missing file, bad header, missing or unexpected keys, wrong shapes
            raise SourceError(f"{weights} does not load into {self.entry} with its config ({first_line(exc)}); re-run "
                              "'toolchain train' so the weights and the module dir agree.") from None
        return module.eval(), spec


def is_module_dir(path: Path) -> bool:
    return (Path(path) / MODULE_FILE).is_file()


def read_module_dir(path: str | Path) -> ModuleDir:
    path = Path(path)
    try:
        data = json.loads((path / MODULE_FILE).read_text(encoding="utf-8"))
        return ModuleDir(path, str(data["entry"]), dict(data.get("config") or {}), str(data["task"]),
                         data.get("labels"), int(data.get("max_length", 128)), int(data.get("pad_id", 0)),
                         str(data.get("search") or ""))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{path / MODULE_FILE} cannot be read ({first_line(exc)}); re-run 'toolchain train'.") from None


def module_dir_record(entry: str, config: dict[str, Any], task: str, labels: list[str] | None, max_length: int,
                      pad_id: int, search: Path | None = None) -> dict[str, Any]:
    """The MODULE_FILE content training writes (beside WEIGHTS_FILE and TOKENIZER_FILE)."""
    return {"entry": entry, "config": dict(config), "task": task, "labels": labels, "max_length": int(max_length),
            "pad_id": int(pad_id), "search": str(search or "")}
