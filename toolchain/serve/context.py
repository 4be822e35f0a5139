"""The artifacts the demo serves and their loaded models, plus the input checks every tab shares.

Only the public ``toolchain.runtime`` API: ``load``, ``Model`` and ``Manifest`` with their public methods.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from toolchain.runtime import InputError, Manifest, Model, load

MAX_CHARS = 5_000  # per text box; the runtime truncates over-long token sequences itself
MAX_SENTENCES = 200  # in the "search these sentences" box
COMPARE_RUNS = 5  # the compare view reports the median latency of this many calls (1 for generation)
PRECISION_ORDER = ("fp32", "int8", "fp16", "int4")


@dataclass(frozen=True)
class Artifact:
    key: str  # how it is named in the page and the API (the directory as given)
    manifest: Manifest

    @property
    def task(self) -> str:
        """The task name (a key of the TABS registry): "feature-extraction", "text-classification", ..."""
        return self.manifest.task


@dataclass
class Ctx:
    """The artifacts being served and their loaded models, cached per (artifact, variant)."""

    arts: dict[str, Artifact] = field(default_factory=dict)
    web: dict[str, str] = field(default_factory=dict)  # artifact key -> its in-browser page (card.web_links)
    _models: dict[tuple[str, str], Model] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, dirs: Sequence[str | Path]) -> "Ctx":
        ctx = cls()
        for d in dict.fromkeys(str(d) for d in dirs):
            model = ctx.model(d, "auto")  # fails early, with the runtime's message, on a bad artifact
            ctx.arts[d] = Artifact(d, model.manifest)
        return ctx

    def model(self, key: str, variant: str) -> Model:
        variant = variant or "auto"
        with self._lock:  # a Model is thread-safe; loading each (artifact, variant) once is the point
            if (key, variant) not in self._models:
                self._models[(key, variant)] = load(key, variant=variant)
            return self._models[(key, variant)]

    def of(self, task: str) -> list[Artifact]:
        return [a for a in self.arts.values() if a.task == task]

    def pick(self, key: str | None, task: str | None = None) -> Artifact:
        arts = self.of(task) if task else list(self.arts.values())
        art = next((a for a in arts if a.key == key), None) if key else arts[0]
        if art is None:
            raise InputError(f"artifact {key!r} is not served here; choose one of {', '.join(a.key for a in arts)}.")
        return art

    def run(self, art: Artifact, variant: str, fn: Callable[[Model], Any], runs: int = 1):
        """fn(model) -> (result, median ms over `runs`, the runtime's warnings as notes, model.info())."""
        model = self.model(art.key, variant)  # loading is not timed
        with _CAPTURE, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                out = fn(model)
                times.append((time.perf_counter() - start) * 1e3)
        notes = dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning))
        return out, float(np.median(times)), list(notes), model.info()


# warnings.catch_warnings is process-wide state, so one capture at a time: the runtime reports truncation
# only as a UserWarning, which the page turns into a note.
_CAPTURE = threading.Lock()


def check_text(value: Any, what: str = "text") -> str:
    """A text box's value, refused in one sentence when empty or over MAX_CHARS."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"The {what} is empty; type a sentence first.")
    if len(value) > MAX_CHARS:
        raise InputError(f"The {what} has {len(value):,} characters; this demo takes at most {MAX_CHARS:,}. Shorten it.")
    return value


def details(info: dict[str, Any], ms: float, notes: list[str]) -> str:
    """The line under a result: variant, precision, provider, latency, and the runtime's notes."""
    line = f"variant **{info['variant']}** ({info['precision']}) on **{info['provider']}**, {ms:.1f} ms"
    return "\n\n".join([line, *(f"ℹ️ Note: {n}" for n in notes)])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def variant_choices(art: Artifact, ctx: Ctx) -> list[tuple[str, str]]:
    """(label, value) per variant of ART for a picker: "auto" first, then by precision."""
    m = art.manifest
    rank = {name: i for i, name in enumerate(PRECISION_ORDER)}
    order = sorted(m.variants.values(), key=lambda v: (rank.get(v.name, len(rank)), v.name))
    auto = ctx.model(art.key, "auto").variant
    return [(f"auto (best passed: {auto})", "auto")] + [
        (f"{v.name}: {v.precision}, {v.bytes / 1e6:.1f} MB" + ("" if v.passed else ", FAILED its gate"), v.name)
        for v in order]
