"""Which tasks the in-browser page runs (PAGES, keyed by task like every stage's registry) and how.

The page (demos/web) implements the encoder heads in JavaScript: pooling and normalisation for embeddings,
softmax and labels for classifiers. Decoders and encoder-decoders need a generate loop with a KV cache in
the page, and image classifiers an image preprocessor: until the page has them, `toolchain web` refuses
those artifacts in one sentence instead of writing a site that cannot run them.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.runtime.tasks import Unsupported


@dataclass(frozen=True)
class Page:
    """What the page offers for one task: the model method it calls and the views it shows."""

    method: str  # the method of the page's model (toolchain-web.js), as the Python runtime names it
    views: tuple[str, ...]  # the page's sections (ids in index.html)


_NO_IMAGES = Unsupported("the page reads text, not images, so far; use `toolchain demo`")
_NO_LOOP = Unsupported("the page has no generate loop with a KV cache yet; use `toolchain demo`")

# Every task of TASKS, written out like every other stage's registry (tests/test_registries.py checks that
# none is missing): the page's entry, or why it has none.
PAGES: dict[str, Page | Unsupported] = {
    "feature-extraction": Page("embed", ("similarity", "search")),
    "text-classification": Page("classify", ("classification",)),
    "text-generation": _NO_LOOP,
    "text2text-generation": _NO_LOOP,
    "image-classification": _NO_IMAGES,
    "image-to-text": _NO_IMAGES,
}


def runnable() -> list[str]:
    """The tasks the page runs, for error messages."""
    return [task for task, page in PAGES.items() if isinstance(page, Page)]
