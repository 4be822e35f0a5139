"""The image-to-text tab: an uploaded image in, its caption out (endpoint /caption), with the latency, the variant
picker and the decoding settings.

The upload reaches the runtime as the file Gradio saved (``image_mode=None``: no conversion on the way), so the
runtime's own checks answer bad input in one sentence (a truncated file, too many pixels, an odd mode). In the
compare view a captioner reads its text as a shapes caption, draws that scene and captions the drawing.
"""

from __future__ import annotations

from typing import Any

from toolchain.data.shapes import render, scene_from_caption
from toolchain.runtime import Model
from toolchain.serve.context import Artifact, Ctx, check_text, details
from toolchain.serve.tabs.classify_image import check_image
from toolchain.serve.ui import gr
from toolchain.serve.widgets import artifact_picker, follow, guarded, variant_picker

TASK = "image-to-text"
MAX_NEW_TOKENS = 64  # the slider's top
MAX_BEAMS = 8


def build(ctx: Ctx, arts: list[Artifact]) -> None:
    gr.Markdown("Upload an image; the model writes a caption (the shapes captioner: \"a large blue square below a "
                "small red circle\").")
    with gr.Row():
        artifact = artifact_picker(arts, "caption")
        variant = variant_picker(ctx, arts[0], "caption-variant")
    image = gr.Image(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                     elem_id="caption-input")
    with gr.Row():
        max_new = gr.Slider(1, MAX_NEW_TOKENS, value=32, step=1, label="Max new tokens", elem_id="caption-max")
        beams = gr.Slider(1, MAX_BEAMS, value=1, step=1, label="Beams (1: greedy)", elem_id="caption-beams")
    button = gr.Button("Caption", variant="primary", elem_id="caption-button")
    output = gr.Textbox(label="Caption", lines=2, interactive=False, elem_id="caption-output")
    message = gr.Markdown(elem_id="caption-message")
    follow(ctx, artifact, variant)

    def caption(image: str | None, max_new_tokens: float = 32, beam_size: float = 1, variant: str = "auto",
                artifact: str | None = None):
        path = check_image(image)
        settings = {"max_new_tokens": int(max_new_tokens), "beam_size": int(beam_size)}
        out, ms, notes, info = ctx.run(ctx.pick(artifact, TASK), variant, lambda m: m.caption(path, **settings))
        return out, details(info, ms, notes)

    button.click(guarded(caption, ("",)), [image, max_new, beams, variant, artifact], [output, message],
                 api_name="caption")


def compare_one(model: Model, text: str) -> tuple[Any, str]:
    """One variant's output in the compare view: TEXT is a shapes caption, drawn and captioned greedily."""
    drawn = check_text(text, "caption").strip()
    out = model.caption(render(scene_from_caption(drawn)))
    return {"caption": out, "drawn": drawn, "settings": "greedy"}, out
