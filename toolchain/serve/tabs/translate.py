"""The text2text-generation tab: a source text in, its translation out (endpoint /translate)."""

from __future__ import annotations

from typing import Any

from toolchain.runtime import Model
from toolchain.serve.context import Artifact, Ctx, check_text, details
from toolchain.serve.ui import gr
from toolchain.serve.widgets import artifact_picker, follow, guarded, variant_picker

TASK = "text2text-generation"
MAX_NEW_TOKENS = 256  # the slider's top
MAX_BEAMS = 8


def build(ctx: Ctx, arts: list[Artifact]) -> None:
    gr.Markdown("Type a date or an amount in words (\"the twenty-fifth of November, 2026\", \"Nov 25 '26\", "
                "\"one thousand two hundred and five\"); the encoder-decoder writes its target form.")
    with gr.Row():
        artifact = artifact_picker(arts, "translate")
        variant = variant_picker(ctx, arts[0], "translate-variant")
    text = gr.Textbox(label="Source", lines=2, value="March 3, 2021", elem_id="translate-text")
    with gr.Row():
        max_new = gr.Slider(1, MAX_NEW_TOKENS, value=64, step=1, label="Max new tokens", elem_id="translate-max")
        beams = gr.Slider(1, MAX_BEAMS, value=1, step=1, label="Beams (1: greedy)", elem_id="translate-beams")
    button = gr.Button("Translate", variant="primary", elem_id="translate-button")
    output = gr.Textbox(label="Translation", lines=2, interactive=False, elem_id="translate-output")
    message = gr.Markdown(elem_id="translate-message")
    follow(ctx, artifact, variant)

    def translate(text: str, max_new_tokens: float = 64, beam_size: float = 1, variant: str = "auto",
                  artifact: str | None = None):
        text = check_text(text, "source")
        settings = {"max_new_tokens": int(max_new_tokens), "beam_size": int(beam_size)}
        out, ms, notes, info = ctx.run(ctx.pick(artifact, TASK), variant, lambda m: m.translate(text, **settings))
        return out, details(info, ms, notes)

    button.click(guarded(translate, ("",)), [text, max_new, beams, variant, artifact], [output, message],
                 api_name="translate")


def compare_one(model: Model, text: str) -> tuple[Any, str]:
    """One variant's output in the compare view: greedy, so that variants are comparable."""
    out = model.translate(text)
    return {"translation": out, "settings": "greedy"}, out
