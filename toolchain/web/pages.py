"""Which tasks the in-browser page runs (PAGES, keyed by task like every stage's registry) and how.

The page (demos/web) implements the encoder heads in JavaScript: pooling and normalisation for embeddings,
softmax and labels for classifiers. Decoders and encoder-decoders need a generate loop with a KV cache in
the page, and image classifiers an image preprocessor: until the page has them, `toolchain web` refuses
those artifacts in one sentence instead of writing a site that cannot run them.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.runtime.tasks import TASKS, TaskSpec, Unsupported


@dataclass(frozen=True)
class Page:
    """What the page offers for one task: the model method it calls and the views it shows."""

    method: str  # the method of the page's model (toolchain-web.js), as the Python runtime names it
    views: tuple[str, ...]  # the page's sections (ids in index.html)


RUNS = {
    "feature-extraction": Page("embed", ("similarity", "search")),
    "text-classification": Page("classify", ("classification",)),
}


def _why_not(spec: TaskSpec) -> Unsupported:
    if spec.inputs == "image":
        return Unsupported("the page reads text, not images, so far; use `toolchain demo`")
    return Unsupported("the page has no generate loop with a KV cache yet; use `toolchain demo`")


# Every task of TASKS: the page's entry, or why it has none (a task added later is refused until it has a page).
PAGES: dict[str, Page | Unsupported] = {name: RUNS.get(name) or _why_not(spec) for name, spec in TASKS.items()}


def runnable() -> list[str]:
    """The tasks the page runs, for error messages."""
    return [task for task, page in PAGES.items() if isinstance(page, Page)]
