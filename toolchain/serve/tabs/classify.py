"""The text-classification tab: a sentence in, a probability per label out (endpoint /classify)."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.runtime import Model
from toolchain.serve.context import Artifact, Ctx, check_text, details
from toolchain.serve.ui import gr
from toolchain.serve.widgets import artifact_picker, follow, guarded, variant_picker

TASK = "text-classification"


def build(ctx: Ctx, arts: list[Artifact]) -> None:
    labels = arts[0].manifest.labels
    gr.Markdown("Type a sentence; the model gives each label a probability."
                + (f" Labels: {', '.join(labels)}." if labels else ""))
    with gr.Row():
        artifact = artifact_picker(arts, "classify")
        variant = variant_picker(ctx, arts[0], "classify-variant")
    text = gr.Textbox(label="Text", lines=3, placeholder="a witty, moving film", elem_id="classify-text")
    button = gr.Button("Classify", variant="primary", elem_id="classify-button")
    result = gr.Label(label="Label and scores", elem_id="classify-label")
    message = gr.Markdown(elem_id="classify-message")
    follow(ctx, artifact, variant)

    def classify(text: str, variant: str = "auto", artifact: str | None = None):
        text = check_text(text)
        art = ctx.pick(artifact, TASK)
        probs, ms, notes, info = ctx.run(art, variant, lambda m: m.scores([text])[0])
        names = art.manifest.labels or [f"LABEL_{i}" for i in range(len(probs))]
        return {n: float(p) for n, p in zip(names, probs)}, details(info, ms, notes)

    button.click(guarded(classify, (None,)), [text, variant, artifact], [result, message], api_name="classify")


def compare_one(model: Model, text: str) -> tuple[Any, np.ndarray]:
    """One variant's output in the compare view: (what is shown, the probabilities to compare)."""
    probs = model.scores([text])[0]
    names = model.manifest.labels or [f"LABEL_{i}" for i in range(len(probs))]
    top = int(probs.argmax())
    return {"label": names[top], "score": round(float(probs[top]), 6),
            "scores": {n: round(float(p), 6) for n, p in zip(names, probs)}}, probs
