"""The text-generation tab: a prompt in, its continuation streamed out (endpoint /generate)."""

from __future__ import annotations

import time
from typing import Any

from toolchain.runtime import Model
from toolchain.serve.context import Artifact, Ctx, check_text, details
from toolchain.serve.ui import gr
from toolchain.serve.widgets import artifact_picker, follow, guarded_stream, variant_picker

TASK = "text-generation"
MAX_NEW_TOKENS = 512  # the slider's top


def build(ctx: Ctx, arts: list[Artifact]) -> None:
    gr.Markdown("Type a prompt; the model continues it, streaming the text as it comes.")
    with gr.Row():
        artifact = artifact_picker(arts, "generate")
        variant = variant_picker(ctx, arts[0], "generate-variant")
    prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO:", elem_id="generate-prompt")
    with gr.Row():
        max_new = gr.Slider(1, MAX_NEW_TOKENS, value=64, step=1, label="Max new tokens", elem_id="generate-max")
        temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature (0: greedy)", elem_id="generate-temp")
        top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p", elem_id="generate-top-p")
    button = gr.Button("Generate", variant="primary", elem_id="generate-button")
    output = gr.Textbox(label="Continuation", lines=8, interactive=False, elem_id="generate-output")
    message = gr.Markdown(elem_id="generate-message")
    follow(ctx, artifact, variant)

    def generate(prompt: str, max_new_tokens: float = 64, temperature: float = 0.8, top_p: float = 0.95,
                 variant: str = "auto", artifact: str | None = None):
        prompt = check_text(prompt, "prompt")
        settings = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature), "top_p": float(top_p)}

        def first(m: Model):  # the first piece under the warnings capture: the runtime warns when it cuts a prompt
            pieces = m.generate(prompt, stream=True, **settings)
            return pieces, next(pieces, "")

        (pieces, text), ttft, notes, info = ctx.run(ctx.pick(artifact, TASK), variant, first)
        count, start = int(bool(text)), time.perf_counter()
        head = f"{details(info, ttft, notes)} to the first piece"
        yield text, head + "; streaming…"
        for piece in pieces:
            text, count = text + piece, count + 1
            yield text, head + "; streaming…"
        total = ttft + (time.perf_counter() - start) * 1e3
        yield text, f"{head}; {count} pieces in {total:.0f} ms ({count / max(total, 1e-9) * 1e3:.1f}/s)"

    button.click(guarded_stream(generate, ("",)), [prompt, max_new, temperature, top_p, variant, artifact],
                 [output, message], api_name="generate")


def compare_one(model: Model, text: str) -> tuple[Any, str]:
    """One variant's output in the compare view: greedy, so that variants are comparable."""
    out = model.generate(text, max_new_tokens=32, temperature=0.0)
    return {"continuation": out, "settings": "greedy, 32 new tokens"}, out
