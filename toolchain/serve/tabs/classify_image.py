"""The image-classification tab: an uploaded image in, a probability per label out (endpoint /classify_image).

The upload reaches the runtime as the file Gradio saved (``image_mode=None``: no conversion on the way), so
the runtime's own checks answer bad input in one sentence (a truncated file, too many pixels, an odd mode).
In the compare view an image artifact reads its text as a shapes caption and classifies the drawn scene.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.data.shapes import render, scene_from_caption
from toolchain.runtime import InputError, Model
from toolchain.serve.context import Artifact, Ctx, check_text, details
from toolchain.serve.ui import gr
from toolchain.serve.widgets import artifact_picker, follow, guarded, variant_picker

TASK = "image-classification"


def check_image(value: Any) -> str:
    """The uploaded image's path, refused in one sentence when nothing was uploaded."""
    if not isinstance(value, str) or not value:
        raise InputError("No image was uploaded; choose an image file first.")
    return value


def _named(art: Artifact, probs: np.ndarray) -> dict[str, float]:
    names = art.manifest.labels or [f"LABEL_{i}" for i in range(len(probs))]
    return {n: float(p) for n, p in zip(names, probs)}


def build(ctx: Ctx, arts: list[Artifact]) -> None:
    labels = arts[0].manifest.labels
    gr.Markdown("Upload an image; the model gives each label a probability."
                + (f" Labels: {', '.join(labels)}." if labels else ""))
    with gr.Row():
        artifact = artifact_picker(arts, "image")
        variant = variant_picker(ctx, arts[0], "image-variant")
    image = gr.Image(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                     elem_id="image-input")
    button = gr.Button("Classify", variant="primary", elem_id="image-button")
    result = gr.Label(label="Label and scores", elem_id="image-label")
    message = gr.Markdown(elem_id="image-message")
    follow(ctx, artifact, variant)

    def classify_image(image: str | None, variant: str = "auto", artifact: str | None = None):
        path = check_image(image)
        art = ctx.pick(artifact, TASK)
        probs, ms, notes, info = ctx.run(art, variant, lambda m: m.scores([path])[0])
        return _named(art, probs), details(info, ms, notes)

    button.click(guarded(classify_image, (None,)), [image, variant, artifact], [result, message],
                 api_name="classify_image")


def compare_one(model: Model, text: str) -> tuple[Any, np.ndarray]:
    """One variant's output in the compare view: TEXT is a shapes caption, drawn and classified."""
    probs = model.scores([render(scene_from_caption(check_text(text, "caption")))])[0]
    names = model.manifest.labels or [f"LABEL_{i}" for i in range(len(probs))]
    top = int(probs.argmax())
    return {"label": names[top], "score": round(float(probs[top]), 6), "drawn": text.strip(),
            "scores": {n: round(float(p), 6) for n, p in zip(names, probs)}}, probs
