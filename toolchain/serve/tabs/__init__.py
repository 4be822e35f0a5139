"""One tab per task: ``TABS`` maps a task name (a key of ``toolchain.runtime.tasks.TASKS``) to its Tab.

The one place a task's page plugs in: a tab is one module here plus one entry below (translate.py
serves /translate, classify_image.py /classify_image with uploads up to MAX_FILE_SIZE, caption.py /caption the
same way). A task with no entry is listed in the page header as having no tab yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from toolchain.runtime import Model
from toolchain.serve.context import COMPARE_RUNS, Artifact, Ctx
from toolchain.serve.tabs import caption, classify, classify_image, embed, generate, translate


@dataclass(frozen=True)
class Tab:
    title: str
    slug: str  # the tab's id and elem_id (tab-<slug>): the runtime method that serves the task
    build: Callable[[Ctx, list[Artifact]], None]  # adds the tab's components and named API endpoints
    compare: Callable[[Model, str], tuple[Any, Any]] | None = None  # one variant's (shown, comparable) output
    compare_runs: int = COMPARE_RUNS


TABS: dict[str, Tab] = {
    classify.TASK: Tab("Sentiment", "classify", classify.build, classify.compare_one),
    embed.TASK: Tab("Similarity", "embed", embed.build, embed.compare_one),
    generate.TASK: Tab("Generation", "generate", generate.build, generate.compare_one, compare_runs=1),
    translate.TASK: Tab("Translation", "translate", translate.build, translate.compare_one, compare_runs=1),
    classify_image.TASK: Tab("Image", "classify_image", classify_image.build, classify_image.compare_one),
    caption.TASK: Tab("Caption", "caption", caption.build, caption.compare_one, compare_runs=1),
}

__all__ = ["TABS", "Tab"]
