"""Export: a PyTorch / Hugging Face model, or a user's own nn.Module, to an artifact directory, with parity enforced.

Uses optimum's ONNX exporter (or ort-genai's builder, or torch.onnx.export for module sources) for the
graph; this module adds the tokenizer, the manifest, parity against PyTorch and the atomic write.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from toolchain import __version__
from toolchain.artifact.atomic import atomic_dir, write_json
from toolchain.export import genai as genai_export
from toolchain.export import seq2seq_hf, torch_export, vision
from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import ArtifactError, ExportError, ParityError, SourceError, ToolchainError
from toolchain.runtime.manifest import (MANIFEST, REFERENCE_VARIANT, SCHEMA_VERSION, Component, ExporterInfo, Generation,
                                        SourceInfo, TokenizerInfo, Variant)
from toolchain.runtime.tasks import task_spec
from toolchain.runtime.variants import MODEL
from toolchain.export.source import Source, import_optional, resolve
from toolchain.export import lengths
from toolchain.export.families import check_supported, graph_pad, model_type_of
from toolchain.export.patches import trace_patches
from toolchain.export.feeds import encoder_sections
from toolchain.export.parity import Reference, check_variant, raise_misses
from toolchain.export.reference import reference_for

log = logging.getLogger("toolchain.export")

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
VERSIONED = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime-gpu", "onnxruntime", "tokenizers")
ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64", 16: "bfloat16"}


@dataclass
class ExportSettings:
    """What to export and how strictly to check it."""

    task: str = "feature-extraction"
    opset: int | None = None
    atol: float | None = None  # parity tolerance; the task's default when None
    trust_remote_code: bool = False  # run the model's own Python code (config.json auto_map): only on --trust-remote-code
    exporter: str = "auto"  # a name in EXPORTERS, or auto: the fastest graph that handles the model, else optimum
    max_length: int | None = None  # --max-length: the longest input, for models that state none (export/lengths.py)

    def __post_init__(self) -> None:
        spec = task_spec(self.task)  # raises with the allowed names
        if self.opset is not None and not (11 <= int(self.opset) <= 23):
            raise ToolchainError(f"opset {self.opset} is outside what the exporter supports; use 11 to 23 or leave it unset.")
        if self.atol is None:
            self.atol = spec.atol
        if not self.atol > 0:
            raise ToolchainError(f"atol must be positive, got {self.atol}.")
        if self.exporter != "auto" and self.exporter not in EXPORTERS:
            raise ToolchainError(f"exporter {self.exporter!r} is not known; use auto or one of {', '.join(EXPORTERS)}.")
        if self.max_length is not None and not (isinstance(self.max_length, int) and self.max_length > 1):
            raise ToolchainError(f"--max-length must be a whole number of tokens above 1, got {self.max_length}.")


def _versions() -> dict[str, str]:
    out = {"toolchain": __version__}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _io(model_path: Path) -> tuple[list[dict], list[dict], int]:
    """Inputs, outputs (name, dtype, dims) and the default-domain opset, read from the ONNX file."""
    onnx = import_optional("onnx")
    proto = onnx.load(str(model_path), load_external_data=False)

    def describe(values) -> list[dict]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "dtype": ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), "dims": dims})
        return out

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return describe(proto.graph.input), describe(proto.graph.output), opset


def _run_optimum(source: Source, settings: ExportSettings, into: Path) -> Path:
    """optimum's exporter writes the graph into ``into``; return the model file."""
    onnx_exporter = import_optional("optimum.exporters.onnx")
    try:
        # tracer chatter is silenced (parity below tells a bad graph); a family's trace patches apply meanwhile
        with warnings.catch_warnings(), trace_patches(model_type_of(source)):
            warnings.simplefilter("ignore")
            onnx_exporter.main_export(
                str(source.path), output=str(into), task=task_spec(settings.task).export_task, opset=settings.opset,
                do_validation=False, library_name="transformers", device="cpu",
                trust_remote_code=settings.trust_remote_code,
            )
    except (ValueError, KeyError, OSError, RuntimeError, NotImplementedError) as exc:
        first = first_line(exc)
        raise ExportError(f"optimum could not export {source.name} for task {settings.task!r}: {first}") from None
    path = into / MODEL_FILE
    if not path.is_file():
        raise ExportError(f"optimum wrote no {MODEL_FILE} for {source.name}; check the task and the model.")
    return path


def _run_optimum_seq2seq(source: Source, settings: ExportSettings, into: Path) -> dict[str, Path]:
    """Encoder-decoders (T5, BART, Marian, mBART; vision encoder-decoders for image-to-text): optimum's graphs
    rewritten to runtime/seq2seq_io.py's contract."""
    return seq2seq_hf.export_hf_seq2seq(source.path, into, opset=settings.opset,
                                        trust_remote_code=settings.trust_remote_code,
                                        task=task_spec(settings.task).export_task)


def _run_genai(source: Source, settings: ExportSettings, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    return genai_export.build(source, into, trust_remote_code=settings.trust_remote_code)


@dataclass(frozen=True)
class Exporter:
    """A way to write the graph: which models it handles, and what the runtime must know about its graphs.
    ``build`` returns the graph file, or (file, ExporterInfo) where it has more to record (its method)."""

    name: str
    build: Callable[[Source, ExportSettings, Path], Path | tuple[Path, ExporterInfo]]
    handles: Callable[[ExportSettings, Source, Any], bool]  # (settings, source, transformers config or None)
    generation: dict[str, Any]  # merged into the manifest's "generation" for decoders
    auto: bool = True  # tried by exporter="auto" where it handles the model


EXPORTERS: dict[str, Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    EXPORTERS[exporter.name] = exporter
    return exporter


ENCODER_DECODER_METHODS = ("translate", "caption")  # tasks exported as an encoder and a one-step decoder


def _hf(source: Source) -> bool:
    return source.kind != "module"


# First match wins under "auto"; optimum handles every HF model it has an ONNX config for and comes last;
# torch handles only module sources (a user's own nn.Module), and HF sources never go to it.
register(Exporter("ort-genai", _run_genai,
                  lambda st, src, config: _hf(src) and task_spec(st.task).method == "generate" and st.opset is None
                  and genai_export.handles(config.to_dict())
                  and genai_export.available(), genai_export.GENERATION))
register(Exporter("optimum-seq2seq", _run_optimum_seq2seq,
                  lambda st, src, config: _hf(src) and task_spec(st.task).method in ENCODER_DECODER_METHODS, {}))
register(Exporter("optimum", _run_optimum,
                  lambda st, src, config: _hf(src) and task_spec(st.task).method not in ENCODER_DECODER_METHODS, {}))
register(Exporter(torch_export.NAME, torch_export.build, torch_export.handles, {}))


def exporters_for(settings: ExportSettings, source: Source, config: Any) -> list[str]:
    """The exporters to try in order: the one asked for, or under auto every one that handles the model
    (a later one is the fallback when an earlier one fails or misses parity)."""
    what = f"a {config.model_type} model" if config is not None else f"a {source.kind} source"
    if settings.exporter != "auto":
        exporter = EXPORTERS[settings.exporter]
        if not exporter.handles(settings, source, config):
            raise ExportError(f"exporter {exporter.name!r} does not handle {what} for {settings.task!r}; pass "
                              "--exporter auto.")
        return [exporter.name]
    names = [e.name for e in EXPORTERS.values() if e.auto and e.handles(settings, source, config)]
    if not names:
        raise ExportError(f"no exporter handles {what} for {settings.task!r}; export it for another task.")
    return names


def _tokenizer(source: Source, reference: Reference, out: Path) -> dict[str, Any]:
    """Save the fast tokenizer as tokenizer.json and describe how to pad with it."""
    tok = reference.tokenizer
    if not getattr(tok, "is_fast", False):
        raise ExportError(f"{source.name} has no fast tokenizer; the runtime needs tokenizer.json.")
    tok.backend_tokenizer.save(str(out / TOKENIZER_FILE))
    pad_id, pad_token = graph_pad(tok, reference.model.config)  # the id the graph compares with
    return TokenizerInfo(file=TOKENIZER_FILE, pad_id=pad_id, pad_token=pad_token).to_dict()


def _labels(reference: Reference, task: str) -> list[str] | None:
    if task_spec(task).method != "classify":
        return None
    id2label = reference.model.config.id2label
    return [str(id2label[i]) for i in sorted(id2label)]


def _generation(reference: Reference) -> dict[str, Any]:
    """What the runtime's generate loop needs that the graph does not say: the end-of-text token ids."""
    config = getattr(reference.model, "generation_config", None) or reference.model.config
    eos = config.eos_token_id if config.eos_token_id is not None else reference.tokenizer.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return {"eos_token_ids": [int(e) for e in eos], "bos_token_id": getattr(config, "bos_token_id", None)}


def _text_fields(source: Source, reference: Reference, task: str, out: Path) -> dict[str, Any]:
    """What the manifest says about a transformers text model (the tokenizer is saved into OUT)."""
    config = reference.model.config
    length, why = lengths.max_length(source, reference, source.max_length_given)
    fields = {"labels": _labels(reference, task), "max_length": length, "sections": {"max_length_source": why},
              "tokenizer": _tokenizer(source, reference, out), "model_type": config.model_type,
              "architecture": (config.architectures or [None])[0]}
    if task_spec(task).method == "translate":  # the decoder's start token, not the source's BOS
        start, eos = seq2seq_hf.decoder_start_and_eos(getattr(reference.model, "generation_config", None) or config)
        # BART's and Marian's decoders number target positions from a table; T5's are relative (no attribute)
        fields["generation"] = {"bos_token_id": start, "eos_token_ids": eos,
                                "max_positions": getattr(config, "max_position_embeddings", None)}
    return fields


# What the manifest says about a transformers source, by what its task reads (TaskSpec.inputs): text models
# ship a tokenizer, image models a preprocess section (export/vision.py; "sections" are top-level keys).
INPUT_FIELDS: dict[str, Callable[[Source, Any, str, Path], dict[str, Any]]] = {
    "text": _text_fields,
    "image": vision.image_fields,
}


def _hf_fields(source: Source, reference: Reference, task: str, out: Path) -> dict[str, Any]:
    """What the manifest says about a transformers source (for text tasks the tokenizer is saved into OUT)."""
    return INPUT_FIELDS[task_spec(task).inputs](source, reference, task, out)


# What the manifest says about the source (labels, max_length, tokenizer, model_type, architecture), by
# source kind (Source.kind); a new kind of source adds its entry here, as in reference.REFERENCES.
SOURCE_FIELDS: dict[str, Callable[[Source, Any, str, Path], dict[str, Any]]] = {
    "transformers": _hf_fields,
    "sentence-transformers": _hf_fields,
    "module": torch_export.module_fields,
}


def _take_graphs(graphs: dict[str, Path], work: Path, tmp: Path) -> dict[str, Component]:
    """Move each component's graph (model.onnx, or encoder.onnx and decoder.onnx) and its external data from
    the exporter's WORK dir into the artifact dir TMP; the components for the manifest."""
    components = {}
    for name, graph in graphs.items():
        target = MODEL_FILE if name == MODEL else f"{name}.onnx"
        shutil.move(str(graph), tmp / target)
        for extra in work.glob(graph.name + "_data*"):
            shutil.move(str(extra), tmp / extra.name.replace(graph.name, target, 1))
        components[name] = Component.of(tmp, target)
    shutil.rmtree(work)
    return components


def _attempt(exporter: "Exporter", source: Source, settings: ExportSettings, reference: Any, tmp: Path,
             out: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """One exporter's graph in TMP with its manifest, parity checked (raises ParityError on a miss)."""
    progress(f"exporting {source.name} ({settings.task}) with {exporter.name}")
    work = tmp / ".graph"
    built = exporter.build(source, settings, work)
    graph, info = built if isinstance(built, tuple) else (built, ExporterInfo(exporter.name))
    components = _take_graphs(graph if isinstance(graph, dict) else {MODEL: graph}, work, tmp)
    files = [tmp / c.file for c in components.values()]
    inputs, outputs, opset_used = _io(files[0])
    if len(files) > 1:  # an encoder-decoder: the encoder's inputs, the decoder's outputs
        outputs = _io(files[-1])[1]
    fields = SOURCE_FIELDS[source.kind](source, reference, settings.task, tmp)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "task": settings.task,
        "labels": fields["labels"],
        "max_length": fields["max_length"],
        "tokenizer": fields["tokenizer"],
        "inputs": inputs,
        "outputs": outputs,
        "opset": opset_used,
        **info.to_dict(),
        "source": SourceInfo.from_dict({**source.to_dict(), "model_type": fields["model_type"],
                                        "architecture": fields["architecture"]}).to_dict(),
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "variants": {REFERENCE_VARIANT: Variant(REFERENCE_VARIANT, precision="fp32", tolerance={"atol": settings.atol},
                                                components=components).to_dict()},
        **fields.get("sections", {}),  # per-input sections, such as an image model's preprocess
    }
    manifest.update(encoder_sections(settings.task, inputs, reference, source, manifest["tokenizer"]))
    if task_spec(settings.task).method in ("generate", *ENCODER_DECODER_METHODS):
        generation = fields.get("generation") or _generation(reference)
        manifest["generation"] = Generation.from_dict({**generation, **exporter.generation}).to_dict()
    write_json(tmp / MANIFEST, manifest)
    progress("checking parity against PyTorch on a batch of uneven lengths")
    try:
        result = check_variant(tmp, REFERENCE_VARIANT, reference, settings.atol)
    except ArtifactError as exc:  # the graph just written does not load: this exporter failed (auto tries the next)
        raise ExportError(f"the {exporter.name} graph for {source.name} does not load: {first_line(exc)}") from None
    except ToolchainError:
        raise
    except Exception as exc:  # onnxruntime's untyped errors: a graph that does not run is a failed export
        first = first_line(exc)
        raise ExportError(f"the {exporter.name} graph for {source.name} does not run in ONNX Runtime: {first}") from None
    raise_misses([result], out)
    manifest["variants"][REFERENCE_VARIANT]["metrics"] = {"parity": result.metrics()}
    return manifest


def export(
    model: str | Path,
    out: str | Path,
    task: str | None = None,
    opset: int | None = None,
    atol: float | None = None,
    progress: Callable[[str], None] = lambda msg: log.info(msg),
    trust_remote_code: bool = False,
    exporter: str = "auto",
    max_length: int | None = None,
) -> dict[str, Any]:
    """Export MODEL for TASK into the artifact directory OUT; return the manifest written.

    TASK defaults to the task a module dir was trained for, else feature-extraction. Raises ParityError
    (and leaves any previous artifact at OUT intact) when the exported graph's outputs differ from
    PyTorch beyond the tolerance. MAX_LENGTH (--max-length) sets the longest input for models that state none.
    """
    settings = ExportSettings(task=task or "feature-extraction", opset=opset, atol=atol,
                              trust_remote_code=trust_remote_code, exporter=exporter, max_length=max_length)
    source = resolve(model, trust_remote_code=settings.trust_remote_code)
    check_supported(source, settings.task)  # an architecture known not to work says so before any work
    source.max_length_given = settings.max_length
    if source.task:  # a module dir knows what it was trained for
        if task and task != source.task:
            raise SourceError(f"{source.name} was trained for {source.task!r}, not {task!r}; pass --task "
                              f"{source.task} or leave --task out.")
        settings = dataclasses.replace(settings, task=source.task, atol=atol)
    started = time.perf_counter()
    import_optional("torch")  # says which extra to install, before anything imports it
    reference = reference_for(source.kind, source.path, settings.task, trust_remote_code=settings.trust_remote_code)
    names = exporters_for(settings, source, reference.config)
    with atomic_dir(out) as tmp:
        for attempt, name in enumerate(names, 1):
            try:
                manifest = _attempt(EXPORTERS[name], source, settings, reference, tmp, Path(out), progress)
                break
            except (ExportError, ParityError) as exc:
                if attempt == len(names):
                    raise
                progress(f"{name} export not used ({exc}); trying {names[attempt]}")
                for leftover in tmp.iterdir():
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
                fallback = f"{name}: {exc}"
        if attempt > 1:
            info = ExporterInfo.from_dict(manifest)  # keeps the exporter's own method and fallback, after ours
            both = "; ".join(filter(None, [fallback, info.fallback]))
            manifest.update(dataclasses.replace(info, fallback=both).to_dict())
        manifest["export_seconds"] = round(time.perf_counter() - started, 2)
        write_json(tmp / MANIFEST, manifest)
    return manifest
