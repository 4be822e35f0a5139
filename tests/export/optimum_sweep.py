"""Coverage against optimum's own list: every text architecture its ONNX exporter supports for feature-extraction,
text-classification and text-generation-with-past, built tiny from its config (tiny_text_models.py), exported with
`toolchain export`, validated, and run through the runtime.

As a script it runs the full sweep (134 pairs, about 12 minutes on one core) and writes a report:

    python tests/export/optimum_sweep.py --report coverage.json        # every pair
    python tests/export/optimum_sweep.py --types llama,bloom --tasks feature-extraction
    python tests/export/optimum_sweep.py --sample 10 --seed 20260301    # the default suite's sample for that seed

A model whose export asks for --max-length (no limit stated anywhere: BLOOM) is exported again with it, as a user
would, and the outcome says so (max_length_given).

The denominator is what optimum itself exports: a pair whose toolchain export fails counts against the toolchain
only if optimum's exporter, run alone on the same tiny model, writes a graph.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import tiny_text_models  # noqa: E402

# toolchain task -> optimum's task name
TASKS = {"feature-extraction": "feature-extraction", "text-classification": "text-classification",
         "text-generation": "text-generation-with-past"}
TEXT_INPUTS = {"input_ids", "attention_mask", "token_type_ids", "position_ids", "global_attention_mask"}
TEXTS = ["Hi.", "The quick brown fox jumps over the lazy dog.", "a dull and lifeless story with no surprises " * 3]
MIN_COSINE = 0.9999  # embeddings through the runtime against PyTorch on each text alone
RETRY_MAX_LENGTH = 256  # what a user passes as --max-length when the export asks for it


def _text_only(model_type: str, optimum_task: str) -> bool:
    """Whether optimum's ONNX config for the pair reads text alone (no boxes, pixels, audio or decoder ids)."""
    from optimum.exporters.tasks import TasksManager
    from transformers import CONFIG_MAPPING
    from transformers.models.auto import modeling_auto

    if model_type not in CONFIG_MAPPING or model_type in modeling_auto.MODEL_FOR_IMAGE_MAPPING_NAMES:
        return False
    config = tiny_text_models.tiny_config(model_type, 400)
    if config.is_encoder_decoder or any(hasattr(config, k) for k in ("vision_config", "audio_config")):
        return False
    ctor = TasksManager.get_exporter_config_constructor(exporter="onnx", model_type=model_type, task=optimum_task,
                                                        library_name="transformers")
    names = set(ctor(config, task=optimum_task).inputs)
    return all(n in TEXT_INPUTS or n.startswith("past_key_values") for n in names)


def text_pairs() -> list[tuple[str, str]]:
    """(model type, toolchain task) for every text-only pair optimum's ONNX exporter lists, sorted."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  registers the ONNX configs
    from optimum.exporters.tasks import TasksManager

    pairs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for task, optimum_task in TASKS.items():
            for model_type in TasksManager.get_supported_model_type_for_task(optimum_task, exporter="onnx"):
                if _text_only(model_type, optimum_task):
                    pairs.append((model_type, task))
    return sorted(pairs)


def sample(pairs: list[tuple[str, str]], seed: int, k: int = 10) -> list[tuple[str, str]]:
    """K pairs drawn reproducibly from SEED."""
    return sorted(random.Random(seed).sample(pairs, min(k, len(pairs))))


@dataclass
class Outcome:
    model_type: str
    task: str
    status: str = "passed"  # passed | failed | optimum-failed (not counted: optimum cannot export it either)
    stage: str = ""  # build | export | validate | runtime, where it failed
    error: str = ""
    seconds: float = 0.0
    exporter: str = ""
    max_length: int | None = None
    max_length_given: bool = False  # the export asked for --max-length and got RETRY_MAX_LENGTH
    pooling: dict = field(default_factory=dict)
    cosine: float | None = None


def _export(src: Path, art: Path, task: str, outcome: Outcome) -> dict:
    from toolchain.export.core import export
    from toolchain.runtime.errors import ExportError

    try:
        return export(src, art, task=task, progress=lambda msg: None)
    except ExportError as exc:
        if "--max-length" not in str(exc):
            raise
    outcome.max_length_given = True
    return export(src, art, task=task, progress=lambda msg: None, max_length=RETRY_MAX_LENGTH)


def _runtime(src: Path, art: Path, task: str, outcome: Outcome) -> None:
    """Serve the artifact; embeddings must match PyTorch's on each text alone (cosine >= MIN_COSINE)."""
    from toolchain.runtime import load

    model = load(art, provider="cpu")
    if task == "text-generation":
        assert isinstance(model.generate(TEXTS[0], max_new_tokens=4), str)
    elif task == "text-classification":
        assert [r["label"] for r in model.classify(TEXTS)][:1]
    else:
        outcome.pooling = model.manifest.pooling.to_dict()
        outcome.cosine = min_cosine(src, model, TEXTS)
        assert outcome.cosine >= MIN_COSINE, f"embeddings differ from PyTorch's: cosine {outcome.cosine:.6f}"


def torch_embedding(reference, model, text: str):
    """PyTorch's sentence vector for TEXT alone: the runtime's unpadded feeds (without position_ids, which
    PyTorch numbers itself), the manifest's pooling over every token, normalised where it says so."""
    import numpy as np

    feeds, _ = model.encode([text])
    feeds.pop("position_ids", None)
    states = reference.outputs(feeds, "last_hidden_state")[0]
    pooling = model.manifest.pooling
    vec = {"mean": states.mean(axis=0), "cls": states[0], "last": states[-1], "max": states.max(axis=0)}[pooling.mode]
    return vec / np.linalg.norm(vec) if pooling.normalize else vec


def min_cosine(src: Path, model, texts: list[str]) -> float:
    """The smallest cosine between the runtime's embeddings of TEXTS (one batch) and PyTorch's, text by text."""
    import numpy as np

    from toolchain.export.parity import Reference

    reference = Reference(src, "feature-extraction")
    ours = model.embed(texts)
    theirs = np.stack([torch_embedding(reference, model, t) for t in texts])
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    return float(cos.min())


def optimum_exports(src: Path, task: str, work: Path) -> str:
    """'' when optimum's exporter alone writes a graph for SRC, else its first error line."""
    from optimum.exporters.onnx import main_export

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main_export(str(src), output=str(work), task=TASKS[task], do_validation=False, library_name="transformers",
                        device="cpu")
    except Exception as exc:  # noqa: BLE001  any failure means optimum does not export it
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return "" if (work / "model.onnx").is_file() else "optimum wrote no model.onnx"


def check_pair(model_type: str, task: str, work: Path) -> Outcome:
    """Build, export, validate and serve one pair; on failure, run optimum alone to see whether it counts."""
    from toolchain.variants.validate import validate

    outcome, started = Outcome(model_type, task), time.perf_counter()
    src, art = work / "model", work / "artifact"
    stage = "build"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tiny_text_models.build(model_type, task, src)
            stage = "export"
            manifest = _export(src, art, task, outcome)
            outcome.exporter, outcome.max_length = manifest.get("exporter", ""), manifest.get("max_length")
            stage = "validate"
            validate(art)
            stage = "runtime"
            _runtime(src, art, task, outcome)
    except Exception as exc:  # noqa: BLE001  every failure is reported, with the stage it happened in
        outcome.status, outcome.stage = "failed", stage
        outcome.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:400] or traceback.format_exc(limit=1)
        if stage != "build" and optimum_exports(src, task, work / "optimum"):
            outcome.status = "optimum-failed"
    outcome.seconds = round(time.perf_counter() - started, 1)
    return outcome


def summary(outcomes: list[Outcome]) -> dict:
    counted = [o for o in outcomes if o.status != "optimum-failed"]
    passed = [o for o in counted if o.status == "passed"]
    return {"pairs": len(outcomes), "optimum_exported": len(counted), "toolchain_passed": len(passed),
            "coverage": round(len(passed) / len(counted), 4) if counted else None,
            "failed": [f"{o.model_type}/{o.task} ({o.stage}): {o.error}" for o in counted if o.status != "passed"],
            "optimum_failed": [f"{o.model_type}/{o.task}: {o.error}" for o in outcomes if o.status == "optimum-failed"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", help="comma-separated model types (default: every one optimum lists)")
    parser.add_argument("--tasks", help=f"comma-separated tasks (default: {','.join(TASKS)})")
    parser.add_argument("--sample", type=int, help="only this many pairs, drawn with --seed")
    parser.add_argument("--seed", type=int, default=int(time.strftime("%Y%m%d")))
    parser.add_argument("--report", type=Path, help="write the outcomes and the summary as JSON here")
    args = parser.parse_args(argv)
    pairs = text_pairs()
    if args.types:
        pairs = [p for p in pairs if p[0] in args.types.split(",")]
    if args.tasks:
        pairs = [p for p in pairs if p[1] in args.tasks.split(",")]
    if args.sample:
        pairs = sample(pairs, args.seed, args.sample)
    print(f"{len(pairs)} pairs (seed {args.seed})", flush=True)
    outcomes = []
    for model_type, task in pairs:
        with tempfile.TemporaryDirectory() as tmp:
            outcome = check_pair(model_type, task, Path(tmp))
        outcomes.append(outcome)
        print(f"{outcome.status:15} {model_type:16} {task:20} {outcome.seconds:6.1f}s {outcome.stage} {outcome.error}",
              flush=True)
        if args.report:
            args.report.write_text(json.dumps({"seed": args.seed, "summary": summary(outcomes),
                                               "outcomes": [asdict(o) for o in outcomes]}, indent=1))
    print(json.dumps(summary(outcomes), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
