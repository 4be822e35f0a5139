"""The accuracy gate: a new variant is compared with fp32 on real data and passes only within budget.

One gate per runtime method (a registry): embeddings by cosine similarity to fp32, classifiers by
accuracy drop against the labels (agreement with fp32 where the data has no labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from toolchain.data.metrics import bleu4, char_error_rate, exact_match
from toolchain.data.texts import TextSet
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.manifest import REFERENCE_VARIANT, Manifest
from toolchain.runtime.model import Model, open_variant


@dataclass
class GateResult:
    metrics: dict[str, Any]
    passed: bool
    summary: str  # one line: the numbers that decided


@dataclass(frozen=True)
class Gate:
    task: str  # a key of toolchain.runtime.tasks.TASKS
    default_max_drop: float
    judge: Callable[[np.ndarray, np.ndarray, TextSet, float], GateResult]
    outputs: Callable[[Model, TextSet], np.ndarray]  # what the gate compares, through the public runtime API


GATES: dict[str, Gate] = {}


def register(gate: Gate) -> Gate:
    GATES[gate.task] = gate
    return gate


def _embed_gate(ref: np.ndarray, got: np.ndarray, data: TextSet, max_drop: float) -> GateResult:
    """Cosine to fp32 per text: mean must stay within max_drop of 1, the worst within 4x that."""
    ref64, got64 = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    num = (ref64 * got64).sum(axis=1)
    den = np.linalg.norm(ref64, axis=1) * np.linalg.norm(got64, axis=1)
    cos = np.clip(num / np.clip(den, 1e-12, None), -1.0, 1.0)
    cos[(ref64 == got64).all(axis=1)] = 1.0  # identical outputs: exactly 1, not 1 +- rounding
    mean, worst = float(cos.mean()), float(cos.min())
    need_mean, need_min = 1 - max_drop, 1 - 4 * max_drop
    passed = bool(mean >= need_mean and worst >= need_min)
    metrics = {"mean_cosine": mean, "min_cosine": worst, "p01_cosine": float(np.percentile(cos, 1)),
               "required_mean": need_mean, "required_min": need_min, "texts": len(cos)}
    return GateResult(metrics, passed, f"cosine to fp32 mean {mean:.4f} (>= {need_mean:.4f}), min {worst:.4f} (>= {need_min:.4f})")


def _classify_gate(ref: np.ndarray, got: np.ndarray, data: TextSet, max_drop: float) -> GateResult:
    """Accuracy may drop by at most max_drop against the labels; without labels, agreement with fp32."""
    ref_pred, got_pred = ref.argmax(axis=1), got.argmax(axis=1)
    n = len(ref_pred)
    agreement = float((ref_pred == got_pred).mean())
    metrics: dict[str, Any] = {"agreement": agreement, "texts": n}
    if data.labels is None:
        # compared as counts / n, so a budget of exactly k/n passes (1 - k/n is not exact in floating point)
        passed = bool(int((ref_pred != got_pred).sum()) / n <= max_drop)
        metrics["required_agreement"] = 1 - max_drop
        return GateResult(metrics, passed, f"agreement with fp32 {agreement:.4f} (>= {1 - max_drop:.4f}); no labels in the data")
    gold = np.asarray(data.labels)
    if gold.min() < 0 or gold.max() >= ref.shape[1]:
        raise ToolchainError(f"{data.path} has labels outside 0..{ref.shape[1] - 1}, the model's {ref.shape[1]} classes; fix the data.")
    right_ref, right_got = int((ref_pred == gold).sum()), int((got_pred == gold).sum())
    acc_ref, acc_got = right_ref / n, right_got / n
    drop = (right_ref - right_got) / n  # not acc_ref - acc_got: 0.8 - 0.7 > 0.1 in floating point
    metrics.update({"accuracy": acc_got, "fp32_accuracy": acc_ref, "accuracy_drop": drop, "max_drop": max_drop})
    return GateResult(metrics, bool(drop <= max_drop), f"accuracy {acc_got:.4f} vs fp32 {acc_ref:.4f} (drop {drop:+.4f}, budget {max_drop:.4f}), agreement {agreement:.4f}")


def _generate_gate(ref: np.ndarray, got: np.ndarray, data: TextSet, max_drop: float) -> GateResult:
    """Decoders, teacher-forced on held-out text: next-token agreement with fp32 must stay within
    4 x max_drop of 1 and perplexity within (1 + max_drop) of fp32's."""
    agreement = float((ref[:, 0] == got[:, 0]).mean())
    ppl_ref, ppl_got = float(np.exp(-ref[:, 1].mean())), float(np.exp(-got[:, 1].mean()))
    need_agree, max_ratio = 1 - 4 * max_drop, 1 + max_drop
    passed = bool(agreement >= need_agree and ppl_got <= ppl_ref * max_ratio)
    metrics = {"token_agreement": agreement, "perplexity": ppl_got, "fp32_perplexity": ppl_ref,
               "perplexity_ratio": ppl_got / ppl_ref, "required_agreement": need_agree, "max_perplexity_ratio": max_ratio,
               "positions": int(len(ref))}
    return GateResult(metrics, passed, f"next-token agreement {agreement:.4f} (>= {need_agree:.4f}), perplexity "
                                       f"{ppl_got:.3f} vs fp32 {ppl_ref:.3f} (ratio {ppl_got / ppl_ref:.4f} <= {max_ratio:.4f})")


def _lm_positions(model, texts: list[str], window: int = 128) -> np.ndarray:
    """(positions, 2): the argmax next token and the log-probability of the true next token, over
    windows of the held-out text's lines joined by newlines again (as the model read them in training)."""
    gen = model.generator
    ids = gen.tok.encode("\n".join(texts), add_special_tokens=False).ids
    size = min(window, gen.context)
    rows = []
    for start in range(0, max(1, len(ids) - 1), size):
        chunk = np.asarray([ids[start : start + size]], dtype=np.int64)
        if chunk.shape[1] < 2:
            continue
        logits = gen.prompt_logits(chunk, np.ones_like(chunk))[0].astype(np.float64)
        logp = logits - logits.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        target = chunk[0, 1:]
        rows.append(np.stack([logits[:-1].argmax(axis=1), logp[np.arange(len(target)), target]], axis=1))
    if not rows:
        raise ToolchainError("the evaluation text is too short to score a language model; give it a few sentences.")
    return np.concatenate(rows)


def _translate_gate(ref: np.ndarray, got: np.ndarray, data: TextSet, max_drop: float) -> GateResult:
    """Encoder-decoders (outputs are strings): exact match against the targets may drop by at most max_drop
    (character error rate reported beside it); without targets, agreement with fp32's outputs."""
    n = len(ref)
    agreement = float(np.mean([a == b for a, b in zip(ref, got)])) if n else 1.0
    metrics: dict[str, Any] = {"agreement": agreement, "texts": n}
    if data.targets is None:
        passed = bool(sum(a != b for a, b in zip(ref, got)) / max(1, n) <= max_drop)
        metrics["required_agreement"] = 1 - max_drop
        return GateResult(metrics, passed, f"output agreement with fp32 {agreement:.4f} (>= {1 - max_drop:.4f}); no targets")
    targets = data.targets[:n]
    right_ref = sum(a == t for a, t in zip(ref, targets))
    right_got = sum(a == t for a, t in zip(got, targets))
    drop = (right_ref - right_got) / max(1, n)
    cer, cer_ref = char_error_rate(list(got), targets), char_error_rate(list(ref), targets)
    metrics.update({"exact_match": right_got / max(1, n), "fp32_exact_match": right_ref / max(1, n), "exact_match_drop": drop,
                    "cer": cer, "fp32_cer": cer_ref, "max_drop": max_drop})
    return GateResult(metrics, bool(drop <= max_drop),
                      f"exact match {right_got / max(1, n):.4f} vs fp32 {right_ref / max(1, n):.4f} (drop {drop:+.4f}, "
                      f"budget {max_drop:.4f}), CER {cer:.4f} vs {cer_ref:.4f}, agreement {agreement:.4f}")


register(Gate("feature-extraction", 0.005, _embed_gate, lambda model, data: model.embed(data.texts)))
register(Gate("text-classification", 0.01, _classify_gate, lambda model, data: model.scores(data.texts)))
register(Gate("text-generation", 0.02, _generate_gate, lambda model, data: _lm_positions(model, data.texts)))
register(Gate("text2text-generation", 0.01, _translate_gate,
              lambda model, data: np.array(model.translate(data.texts), dtype=object)))


def _images_of(data: TextSet) -> list:
    """The image files of DATA, or one sentence saying which kind of file an image gate needs."""
    if data.images is None:
        raise ToolchainError(f"{data.path} holds texts, but an image model is gated on images; pass --calib a .tsv "
                             "with an 'image' column of image files and a 'label' column (such as "
                             "models/data/shapes/dev.tsv).")
    return data.images


# Image classifiers: accuracy against the labels, as text classifiers (agreement with fp32 without labels).
register(Gate("image-classification", 0.01, _classify_gate, lambda model, data: model.scores(_images_of(data))))


CAPTION_COLUMNS = ("caption", "target")  # an image table's reference captions (models/data/shapes/*.tsv)


def _captions_of(data: TextSet) -> list[str] | None:
    """The reference caption of each image of DATA, read from its table's caption column; None without one."""
    import csv

    with open(data.path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if data.path.suffix == ".tsv" else ",",
                                quoting=csv.QUOTE_NONE if data.path.suffix == ".tsv" else csv.QUOTE_MINIMAL)
        column = next((c for c in CAPTION_COLUMNS if c in (reader.fieldnames or [])), None)
        if column is None:
            return None
        return [(row[column] or "").strip().lower() for _, row in zip(range(len(data.images or [])), reader)]


def _caption_gate(ref: np.ndarray, got: np.ndarray, data: TextSet, max_drop: float) -> GateResult:
    """Captioners (outputs are strings): exact match and BLEU-4 against the table's captions may each drop by at
    most max_drop from fp32's; without captions, agreement with fp32's captions."""
    n = len(ref)
    agreement = float(np.mean([a == b for a, b in zip(ref, got)])) if n else 1.0
    metrics: dict[str, Any] = {"agreement": agreement, "images": n}
    refs = _captions_of(data)
    if refs is None:
        passed = bool(sum(a != b for a, b in zip(ref, got)) / max(1, n) <= max_drop)
        metrics["required_agreement"] = 1 - max_drop
        return GateResult(metrics, passed, f"caption agreement with fp32 {agreement:.4f} (>= {1 - max_drop:.4f}); "
                                           "no caption column")
    em_ref, em_got = exact_match(list(ref), refs), exact_match(list(got), refs)
    bleu_ref, bleu_got = bleu4(list(ref), refs), bleu4(list(got), refs)
    em_drop = (sum(a == t for a, t in zip(ref, refs)) - sum(a == t for a, t in zip(got, refs))) / max(1, n)
    bleu_drop = bleu_ref - bleu_got
    metrics.update({"exact_match": em_got, "fp32_exact_match": em_ref, "exact_match_drop": em_drop, "bleu4": bleu_got,
                    "fp32_bleu4": bleu_ref, "bleu4_drop": bleu_drop, "max_drop": max_drop})
    return GateResult(metrics, bool(em_drop <= max_drop and bleu_drop <= max_drop),
                      f"caption exact match {em_got:.4f} vs fp32 {em_ref:.4f} (drop {em_drop:+.4f}), BLEU-4 "
                      f"{bleu_got:.4f} vs {bleu_ref:.4f} (drop {bleu_drop:+.4f}), budget {max_drop:.4f} each, "
                      f"agreement {agreement:.4f}")


# Captioners: exact match and BLEU-4 of greedy captions against the table's captions, within 2 points of fp32.
register(Gate("image-to-text", 0.02, _caption_gate,
              lambda model, data: np.array(model.caption(list(_images_of(data))), dtype=object)))


def gate_for(task: str) -> Gate:
    if task not in GATES:
        raise ToolchainError(f"no gate for task {task!r}; gates exist for {', '.join(GATES)}.")
    return GATES[task]


def outputs(manifest: Manifest, variant: str, data: TextSet, provider: str = "cpu") -> np.ndarray:
    """What the task's gate compares (embeddings, class probabilities, next-token scores) for one variant."""
    gate = gate_for(manifest.task)
    return gate.outputs(open_variant(manifest, variant=variant, provider=provider), data)


def judge(manifest: Manifest, variant: str, data: TextSet, max_drop: float | None,
          reference: np.ndarray | None = None, provider: str = "cpu") -> tuple[GateResult, np.ndarray]:
    """Gate ``variant`` against fp32 on ``data``; returns the result and the fp32 outputs (for reuse)."""
    gate = gate_for(manifest.task)
    budget = gate.default_max_drop if max_drop is None else float(max_drop)
    if not 0 <= budget < 1:
        raise ToolchainError(f"max-drop must be in [0, 1), got {max_drop}.")
    if reference is None:
        reference = outputs(manifest, REFERENCE_VARIANT, data, provider)
    got = outputs(manifest, variant, data, provider)
    result = gate.judge(reference, got, data, budget)
    result.metrics.setdefault("max_drop", budget)  # the budget actually applied (the gate's default when None)
    result.metrics["data"] = str(data.path)
    return result, reference
