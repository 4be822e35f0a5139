"""What the `toolchain` commands print: per-task results of `toolchain run`, `toolchain info`, summaries.

Each function turns a stage's result into text; the commands (cli/commands.py) only print it. The
per-task output of `toolchain run` is one registry, ``PRINTERS``, keyed by task name (the keys of
``toolchain.runtime.tasks.TASKS``): a new task adds one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the runtime loads ONNX Runtime: not needed for `toolchain --help`
    from toolchain.runtime import Manifest


# -- `toolchain run`: one printer per task -----------------------------------------------------
def print_embeddings(texts: list[str], vectors: Any) -> None:
    for text, vec in zip(texts, vectors):
        head = ", ".join(f"{x:+.4f}" for x in vec[:4])
        print(f"{text[:60]!r}: dim {len(vec)}, norm {float((vec ** 2).sum() ** 0.5):.3f}, [{head}, ...]")
    if len(texts) > 1:
        sims = vectors @ vectors.T
        print("cosine similarity:")
        for i, row in enumerate(sims):
            print(f"  [{i}] " + " ".join(f"{x:6.3f}" for x in row))


def print_labels(texts: list[str], results: list[dict[str, Any]]) -> None:
    for text, r in zip(texts, results):
        print(f"{text[:60]!r}: {r['label']} ({r['score']:.3f})")


def print_image_labels(images: list[str], results: list[dict[str, Any]]) -> None:
    for image, r in zip(images, results):
        print(f"{image}: {r['label']} ({r['score']:.3f})")


def print_continuations(prompts: list[str], results: list[str]) -> None:
    for prompt, text in zip(prompts, results):
        print(f"{prompt}{text}\n")


def print_translations(sources: list[str], results: list[str]) -> None:
    for source, text in zip(sources, results):
        print(f"{source} -> {text}")


def print_captions(images: list[str], captions: list[str]) -> None:
    for image, text in zip(images, captions):
        print(f"{image}: {text}")


@dataclass(frozen=True)
class Printer:
    """How `toolchain run` serves one task: the runtime method it calls and how its result is shown."""

    method: str  # the public runtime method (model.embed, ...); also the result's key in `--json` output
    show: Callable[[list[str], Any], None]  # prints (texts, result) for people
    options: tuple[str, ...] = ()  # `toolchain run` options passed on to the method as keywords

    def __call__(self, texts: list[str], result: Any) -> None:
        self.show(texts, result)


PRINTERS: dict[str, Printer] = {
    "feature-extraction": Printer("embed", print_embeddings),
    "text-classification": Printer("classify", print_labels),
    "text-generation": Printer("generate", print_continuations,
                               ("max_new_tokens", "temperature", "top_p", "seed")),
    "text2text-generation": Printer("translate", print_translations, ("max_new_tokens", "beam_size", "length_penalty")),
    "image-classification": Printer("classify_image", print_image_labels),  # the arguments are image files
    "image-to-text": Printer("caption", print_captions, ("max_new_tokens", "beam_size", "length_penalty")),  # images too
}


def run_footer(info: dict[str, Any]) -> str:
    """The stderr line after `toolchain run`'s results: the variant and provider actually used."""
    return (f"variant {info['variant']} on {info['provider']}"
            + (f" ({info['placement']})" if info.get("provider") == "cuda" else ""))


# -- `toolchain info` ----------------------------------------------------------------------------
def info_lines(m: Manifest) -> list[str]:
    """An artifact's manifest, readably: task, source, exporter, graph signature, variants, bench."""
    src, exp, pool = m.source, m.exporter_info, m.pooling
    lines = [
        f"artifact   {m.root}",
        f"task       {m.task}" + (f"  labels: {', '.join(m.labels)}" if m.labels else ""),
        f"source     {src.model or None} ({src.kind or None}, {src.architecture or None}), "
        f"weights sha256 {str(src.weights_sha256 or None)[:12]}",
        f"exporter   {exp.name}" + (f" ({exp.method})" if exp.method else "")
        + (f" (fell back from {exp.fallback})" if exp.fallback else ""),
        f"opset      {m.opset}   max length {m.max_length} tokens"
        + (f"   pooling {{'mode': {pool.mode!r}, 'normalize': {pool.normalize}}}" if m.task == "feature-extraction" else ""),
    ]
    for kind, specs in (("inputs", m.inputs), ("outputs", m.outputs)):
        lines.append(f"{kind:<10} " + "; ".join(f"{s.name} {s.dtype} {list(s.dims)}" for s in specs))
    lines.append("variants")
    for v in m.variants.values():
        lines.append(f"  {v.name:<12} {v.precision:<6} {v.bytes / 1e6:8.1f} MB  {'passed' if v.passed else 'FAILED':<6}  "
                     f"{v.latency_summary():<38} {v.check_summary()}  {', '.join(c.file for c in v.components.values())}")
    if m.bench:
        lines.append("bench      " + "; ".join(f"{p}: {b.get('json')} {b.get('chart')} ({b.get('measured')})"
                                             for p, b in m.bench.items()))
    lines.append("versions   " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    return lines


# -- one-line summaries of the stages -------------------------------------------------------------
def export_summary(manifest: dict[str, Any], out: str) -> str:
    """export() returns the manifest it wrote, as a dict."""
    from pathlib import Path

    from toolchain.runtime.manifest import MANIFEST, REFERENCE_VARIANT, Variant

    v = Variant.from_dict(REFERENCE_VARIANT, manifest["variants"][REFERENCE_VARIANT], Path(out) / MANIFEST)
    parity = v.metrics["parity"]
    return (
        f"exported {manifest['source']['model']} ({manifest['task']}) with {manifest.get('exporter', 'optimum')} to {out}: "
        f"{v.bytes / 1e6:.1f} MB, opset {manifest['opset']}, parity max diff {parity['max_abs_diff']:.2g} "
        f"<= {parity['atol']:g}, {manifest['export_seconds']:.1f} s"
    )


def validate_lines(checks: list[Any], directory: str) -> list[str]:
    return [f"{c.variant}: {c.kind} ok: {c.summary}" for c in checks] + [
        f"all {len(checks)} variant(s) of {directory} pass (parity against PyTorch, or their gate against fp32)"]


def quantize_summary(r: Any, directory: str) -> str:
    if r.passed:
        share = r.bytes / r.fp32_bytes
        speed = f"; p50 {r.p50_ms:.2f} ms vs fp32 {r.fp32_p50_ms:.2f} ms ({r.p50_ms / r.fp32_p50_ms:.2f}x)"
        return (f"{r.variant}: passed its gate ({r.gate.summary}); {r.bytes / 1e6:.1f} MB = {share:.0%} of fp32"
                f"{speed}; plan: {r.plan}")
    return (f"{r.variant}: FAILED its gate ({r.gate.summary}); kept in {directory} for inspection but never chosen by "
            f"variant='auto'; tried: " + "; ".join(t["plan"] for t in r.tried))


def optimize_lines(rows: list[dict[str, Any]]) -> list[str]:
    kept = sum(r["kept"] for r in rows)
    return [f"{r['rewrite']}: {'kept as ' + r['variant'] if r['kept'] else 'dropped'} ({r['reason']})"
            for r in rows] + [f"{kept} of {len(rows)} rewrites kept"]


def train_summary(result: Any) -> str:
    fine = result.metrics.get("finetune", {})
    pre = result.metrics.get("pretrain", {})
    parts = [f"trained model in {result.model_dir}"]
    if pre:
        loss = pre.get("held_out_loss", pre.get("held_out_mlm_loss"))
        parts.append(f"pretraining ({pre.get('objective', 'masked-lm')}) held-out loss {loss:.3f} ({pre['train_seconds']:.0f} s)")
    if "dev_accuracy" in fine:
        parts.append(f"dev accuracy {fine['dev_accuracy']:.4f} ({fine['train_seconds']:.0f} s of training)")
    return "; ".join(parts)


def train_shortfall(result: Any) -> str | None:
    """The stderr line when finetuning missed the recipe's min_accuracy, else None."""
    fine = result.metrics.get("finetune", {})
    if fine.get("reached_min_accuracy") is False:
        return f"below the recipe's min_accuracy {fine['min_accuracy']}"
    return None

