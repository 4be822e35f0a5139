"""The compare view: the same text through two variants, outputs and latency side by side (/compare)."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.serve.context import COMPARE_RUNS, Ctx, check_text, cosine
from toolchain.serve.tabs import TABS
from toolchain.serve.ui import gr
from toolchain.serve.widgets import artifact_picker, follow, guarded, variant_picker


def agreement(a: Any, b: Any) -> str:
    """How close two variants' comparable outputs are: vectors by cosine, anything else by equality."""
    if isinstance(a, np.ndarray):
        return f"cosine {cosine(a, b):.6f}, max |difference| {float(np.abs(a.astype(np.float64) - b).max()):.3g}"
    return "the same output" if a == b else "different outputs"


def compare_view(ctx: Ctx) -> None:
    arts = [a for a in ctx.arts.values() if TABS[a.task].compare]
    gr.Markdown("The same text through two variants: outputs, latency (median of "
                f"{COMPARE_RUNS} calls; one for generation) and the provider actually used, side by side.")
    with gr.Row():
        artifact = artifact_picker(arts, "compare")
        variant_a = variant_picker(ctx, arts[0], "compare-variant-a", "Variant A", 1)
        variant_b = variant_picker(ctx, arts[0], "compare-variant-b", "Variant B", 2)
    text = gr.Textbox(label="Text", lines=2, value="A witty, moving film.", elem_id="compare-text")
    button = gr.Button("Compare variants", variant="primary", elem_id="compare-button")
    with gr.Row():
        out_a = gr.JSON(label="Variant A", elem_id="compare-a")
        out_b = gr.JSON(label="Variant B", elem_id="compare-b")
    message = gr.Markdown(elem_id="compare-message")
    follow(ctx, artifact, variant_a, variant_b)

    def compare(text: str, variant_a: str, variant_b: str, artifact: str | None = None):
        text = check_text(text)
        art = ctx.pick(artifact)
        tab = TABS[art.task]
        sides, vecs, notes = [], [], {}
        for variant in (variant_a, variant_b):
            (shown, vec), ms, more, info = ctx.run(art, variant, lambda m: tab.compare(m, text), runs=tab.compare_runs)
            sides.append({"variant": info["variant"], "precision": info["precision"], "provider": info["provider"],
                          "latency_ms": round(ms, 3), "output": shown})
            vecs.append(vec)
            notes.update(dict.fromkeys(more))
        summary = (f"A ({sides[0]['variant']}) vs B ({sides[1]['variant']}): {agreement(*vecs)}; "
                   f"latency {sides[0]['latency_ms']:.2f} ms vs {sides[1]['latency_ms']:.2f} ms")
        return sides[0], sides[1], "\n\n".join([summary, *(f"ℹ️ Note: {n}" for n in notes)])

    button.click(guarded(compare, (None, None)), [text, variant_a, variant_b, artifact], [out_a, out_b, message],
                 api_name="compare")
