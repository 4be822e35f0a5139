"""The quality axis of a sweep, per task (QUALITY): a number where lower is better, for every variant.

The fp32 model's number comes from training (the held-out loss a language model was evaluated on, the
dev accuracy a classifier reached); a quantized variant's is that number moved by what its gate measured
against fp32 on the same kind of data (the perplexity ratio, the accuracy drop). So every variant of every
size is scored on one scale without a second pass over the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.tasks import TASKS, Unsupported


@dataclass(frozen=True)
class Quality:
    label: str  # the chart's axis, e.g. "validation loss (nats/token)"
    short: str  # a column name, e.g. "loss"
    score: Callable[[dict[str, Any], dict[str, Any]], float | None]  # (training.json, variant metrics) -> lower is better


def lm_loss(training: dict[str, Any], metrics: dict[str, Any]) -> float | None:
    """Held-out loss; a quantized variant adds ln(its perplexity / fp32's) from the gate."""
    loss = training.get("finetune", training).get("val_loss")
    if loss is None:
        return None
    ratio = metrics.get("gate", {}).get("perplexity_ratio")
    return float(loss) + (math.log(ratio) if ratio else 0.0)


def classifier_error(training: dict[str, Any], metrics: dict[str, Any]) -> float | None:
    """Dev error (1 - accuracy); a quantized variant adds its gate's accuracy drop against fp32."""
    accuracy = training.get("finetune", training).get("dev_accuracy")
    if accuracy is None:
        return None
    return 1.0 - float(accuracy) + float(metrics.get("gate", {}).get("accuracy_drop", 0.0))


QUALITY: dict[str, Quality | Unsupported] = {
    "text-generation": Quality("validation loss (nats/token)", "loss", lm_loss),
    "text-classification": Quality("dev error (1 - accuracy)", "error", classifier_error),
    "image-classification": Quality("dev error (1 - accuracy)", "error", classifier_error),
    "feature-extraction": Unsupported("embedding recipes export a pretrained encoder as it is: there is no family "
                                      "to train"),
    "text2text-generation": Unsupported("no single held-out number is recorded by the seq2seq stages yet"),
    "image-to-text": Unsupported("no single held-out number is recorded by the captioner stage yet"),
}


def quality_for(task: str) -> Quality:
    """The task's quality axis, or one sentence naming the tasks a sweep can score."""
    entry = QUALITY.get(task)
    if not isinstance(entry, Quality):
        why = f" ({entry.reason})" if isinstance(entry, Unsupported) else ""
        able = ", ".join(t for t, q in QUALITY.items() if isinstance(q, Quality) and t in TASKS)
        raise ToolchainError(f"`toolchain sweep` cannot score task {task!r}{why}; it sweeps {able}.")
    return entry
