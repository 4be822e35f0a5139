"""The feature-extraction tab: the similarity of two texts, and a search over sentences (/embed, /search)."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.runtime import InputError, Model
from toolchain.serve.context import MAX_SENTENCES, Artifact, Ctx, check_text, cosine, details
from toolchain.serve.ui import gr
from toolchain.serve.widgets import artifact_picker, follow, guarded, variant_picker

TASK = "feature-extraction"
SAMPLE_SENTENCES = "\n".join([
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell today.",
    "A child is riding a bicycle in the park.",
    "Share prices dropped sharply this afternoon.",
])


def build(ctx: Ctx, arts: list[Artifact]) -> None:
    gr.Markdown("Two texts in, the cosine similarity of their embeddings out (1 = same meaning).")
    with gr.Row():
        artifact = artifact_picker(arts, "embed")
        variant = variant_picker(ctx, arts[0], "embed-variant")
    with gr.Row():
        text_a = gr.Textbox(label="Text A", lines=2, value="A man is playing a guitar.", elem_id="embed-a")
        text_b = gr.Textbox(label="Text B", lines=2, value="Someone plays an instrument.", elem_id="embed-b")
    button = gr.Button("Compare meaning", variant="primary", elem_id="embed-button")
    similarity = gr.Number(label="Cosine similarity", precision=4, elem_id="embed-similarity")
    message = gr.Markdown(elem_id="embed-message")
    with gr.Accordion("Search these sentences", open=True):
        query = gr.Textbox(label="Query", value="music", elem_id="search-query")
        sentences = gr.Textbox(label="Sentences (one per line)", lines=5, value=SAMPLE_SENTENCES, elem_id="search-sentences")
        search_button = gr.Button("Search", elem_id="search-button")
        ranked = gr.Dataframe(headers=["similarity", "sentence"], interactive=False, elem_id="search-results")
        search_message = gr.Markdown(elem_id="search-message")
    follow(ctx, artifact, variant)

    def embed(text_a: str, text_b: str, variant: str = "auto", artifact: str | None = None):
        pair = [check_text(text_a, "first text"), check_text(text_b, "second text")]
        vecs, ms, notes, info = ctx.run(ctx.pick(artifact, TASK), variant, lambda m: m.embed(pair))
        return round(cosine(vecs[0], vecs[1]), 6), details(info, ms, notes)

    def search(query: str, sentences: str, variant: str = "auto", artifact: str | None = None):
        query = check_text(query, "query")
        lines = [s.strip() for s in check_text(sentences, "sentence list").splitlines() if s.strip()]
        if len(lines) > MAX_SENTENCES:
            raise InputError(f"The list has {len(lines)} sentences; this demo searches at most {MAX_SENTENCES}.")
        vecs, ms, notes, info = ctx.run(ctx.pick(artifact, TASK), variant, lambda m: m.embed([query, *lines]))
        sims = [cosine(vecs[0], v) for v in vecs[1:]]
        rows = sorted(([round(s, 4), line] for s, line in zip(sims, lines)), key=lambda r: -r[0])
        return rows, details(info, ms, notes)

    button.click(guarded(embed, (None,)), [text_a, text_b, variant, artifact], [similarity, message], api_name="embed")
    search_button.click(guarded(search, (None,)), [query, sentences, variant, artifact], [ranked, search_message],
                        api_name="search")


def compare_one(model: Model, text: str) -> tuple[Any, np.ndarray]:
    """One variant's output in the compare view: (a summary of the vector, the vector)."""
    vec = model.embed([text])[0]
    return {"dims": int(vec.shape[0]), "norm": round(float(np.linalg.norm(vec)), 6),
            "first": [round(float(x), 5) for x in vec[:6]]}, vec
