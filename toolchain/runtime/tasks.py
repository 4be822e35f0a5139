"""The task registry: one entry per task tells export, validation and the runtime what they need.

Adding a task is adding one ``register(...)`` call here plus its head in the runtime; nothing else
branches on task names. Task names follow optimum's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ToolchainError


@dataclass(frozen=True)
class TaskSpec:
    name: str  # optimum's task name
    output: str  # the graph output the runtime reads
    method: str  # the runtime method that serves this task
    auto_class: str  # the transformers Auto class that builds the PyTorch reference
    atol: float  # parity tolerance of the fp32 export against PyTorch, on `output`
    optimum_task: str = ""  # the task optimum exports (default: the same name)
    inputs: str = "text"  # what the runtime method takes: "text" (a tokenizer) or "image" (the preprocess section)

    @property
    def export_task(self) -> str:
        return self.optimum_task or self.name

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise ValueError(f"TaskSpec inputs {self.inputs!r} is not known; use one of {', '.join(INPUTS)}.")


INPUTS = ("text", "image")


TASKS: dict[str, TaskSpec] = {}


@dataclass(frozen=True)
class Unsupported:
    """A registry entry saying, on purpose, that a stage has nothing for a task, and why.

    Every stage keeps one registry keyed by task name (RUNTIMES, PARITY, GATES, STAGES, PRINTERS, TABS);
    tests/test_registries.py fails when a task has neither an entry nor an Unsupported(reason) there."""

    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("Unsupported needs a reason: say why the stage has nothing for the task.")


def register(spec: TaskSpec) -> TaskSpec:
    TASKS[spec.name] = spec
    return spec


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ToolchainError(f"task {name!r} is not supported; use one of {', '.join(sorted(TASKS))}.")
    return TASKS[name]


register(TaskSpec("feature-extraction", "last_hidden_state", "embed", "AutoModel", 1e-4))
register(TaskSpec("text-classification", "logits", "classify", "AutoModelForSequenceClassification", 1e-4))
# Decoders export with their KV cache: one graph for the prompt (empty past) and every decode step.
register(TaskSpec("text-generation", "logits", "generate", "AutoModelForCausalLM", 1e-3, "text-generation-with-past"))
# Encoder-decoders export as two graphs (runtime/seq2seq_io.py): the encoder, and a decoder step with its state.
register(TaskSpec("text2text-generation", "logits", "translate", "AutoModelForSeq2SeqLM", 1e-3,
                  "text2text-generation-with-past"))
# Image classifiers take images (runtime/images.py); classify_image() names the task's own method, so a text
# artifact asked for it refuses in one sentence (ImageClassifier.classify takes images too).
register(TaskSpec("image-classification", "logits", "classify_image", "AutoModelForImageClassification", 1e-4,
                  inputs="image"))
# Captioners: an image encoder and a text decoder, two graphs under the encoder-decoder contract (runtime/seq2seq_io.py)
# whose encoder takes pixel_values; caption() decodes with the same loop as translate() (runtime/seq2seq.py).
register(TaskSpec("image-to-text", "logits", "caption", "AutoModelForImageTextToText", 1e-3, "image-to-text-with-past",
                  inputs="image"))
