"""The Gradio demo: ``toolchain demo [DIR ...]`` or ``python demos/app.py [DIR ...]``.

One tab per runtime method present among the artifacts (``TABS``: method name -> Tab; a future
``generate``, ``translate`` or ``caption`` tab plugs in there and nowhere else), a compare view (the
same input through two variants, side by side) and a model card per artifact (gates, sizes, bench).
The app uses only the public ``toolchain.runtime`` API, fetches nothing from outside (system fonts,
no analytics) and shows every failure as one readable line in the page, never a traceback.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from toolchain.runtime import InputError, Manifest, Model, ToolchainError, load

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
try:
    import gradio as gr
except ImportError:  # pragma: no cover - depends on the install
    raise ToolchainError("the demo needs Gradio; install it with pip install -e '.[demo]' (or pip install gradio).") from None

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_DIR = Path("dist/minilm")
DEFAULT_RECIPE = "models/minilm.toml"
MAX_CHARS = 5_000  # per text box; the runtime truncates over-long token sequences itself
MAX_SENTENCES = 200  # in the "search these sentences" box
MAX_FILE_SIZE = "10mb"  # uploads (for the image tab to come)
COMPARE_RUNS = 5  # the compare view reports the median latency of this many calls (1 for generation)
MAX_NEW_TOKENS = 512  # the generation tab's slider
PRECISION_ORDER = ("fp32", "int8", "fp16", "int4")
FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]
SAMPLE_SENTENCES = "\n".join([
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell today.",
    "A child is riding a bicycle in the park.",
    "Share prices dropped sharply this afternoon.",
])


# -- artifacts and loaded models ---------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    key: str  # how it is named in the page and the API (the directory as given)
    manifest: Manifest
    method: str  # the runtime method that serves it: "embed", "classify", ...


@dataclass
class Ctx:
    """The artifacts being served and their loaded models, cached per (artifact, variant)."""

    arts: dict[str, Artifact] = field(default_factory=dict)
    _models: dict[tuple[str, str], Model] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, dirs: Sequence[str | Path]) -> "Ctx":
        ctx = cls()
        for d in dict.fromkeys(str(d) for d in dirs):
            model = ctx.model(d, "auto")  # fails early, with the runtime's message, on a bad artifact
            ctx.arts[d] = Artifact(d, model.manifest, model.task.method)
        return ctx

    def model(self, key: str, variant: str) -> Model:
        variant = variant or "auto"
        with self._lock:  # a Model is thread-safe; loading each (artifact, variant) once is the point
            if (key, variant) not in self._models:
                self._models[(key, variant)] = load(key, variant=variant)
            return self._models[(key, variant)]

    def of(self, method: str) -> list[Artifact]:
        return [a for a in self.arts.values() if a.method == method]

    def pick(self, key: str | None, method: str | None = None) -> Artifact:
        arts = self.of(method) if method else list(self.arts.values())
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


# -- input checks, messages ----------------------------------------------------------------------
def _text(value: Any, what: str = "text") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"The {what} is empty; type a sentence first.")
    if len(value) > MAX_CHARS:
        raise InputError(f"The {what} has {len(value):,} characters; this demo takes at most {MAX_CHARS:,}. Shorten it.")
    return value


def _details(info: dict[str, Any], ms: float, notes: list[str]) -> str:
    line = f"variant **{info['variant']}** ({info['precision']}) on **{info['provider']}**, {ms:.1f} ms"
    return "\n\n".join([line, *(f"ℹ️ Note: {n}" for n in notes)])


def _guarded(fn: Callable[..., tuple], blanks: tuple) -> Callable[..., tuple]:
    """Wrap a handler returning (*outputs, message): any failure becomes blanks plus one readable line."""

    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*args)
        except ToolchainError as exc:
            return (*blanks, f"⚠️ {exc}")
        except Exception:  # never a traceback in the page; the server log has it
            log.exception("demo handler %s failed", fn.__name__)
            return (*blanks, "⚠️ Something went wrong on the server (details in its log); try again or change the input.")

    return wrapper


def _guarded_stream(fn: Callable[..., Any], blanks: tuple) -> Callable[..., Any]:
    """_guarded for a handler that yields (*outputs, message) as it streams."""

    @functools.wraps(fn)
    def wrapper(*args):
        try:
            yield from fn(*args)
        except ToolchainError as exc:
            yield (*blanks, f"⚠️ {exc}")
        except Exception:
            log.exception("demo handler %s failed", fn.__name__)
            yield (*blanks, "⚠️ Something went wrong on the server (details in its log); try again or change the input.")

    return wrapper


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


# -- shared pickers ------------------------------------------------------------------------------
def _variants(art: Artifact, ctx: Ctx) -> list[tuple[str, str]]:
    m = art.manifest
    rank = {name: i for i, name in enumerate(PRECISION_ORDER)}
    order = sorted(m.variants.values(), key=lambda v: (rank.get(v.name, len(rank)), v.name))
    auto = ctx.model(art.key, "auto").variant
    return [(f"auto (best passed: {auto})", "auto")] + [
        (f"{v.name}: {v.precision}, {v.bytes / 1e6:.1f} MB" + ("" if v.passed else ", FAILED its gate"), v.name)
        for v in order]


def _artifact_picker(arts: list[Artifact], elem_id: str):
    return gr.Dropdown([a.key for a in arts], value=arts[0].key, label="Artifact", visible=len(arts) > 1,
                       elem_id=f"{elem_id}-artifact")


def _variant_picker(ctx: Ctx, art: Artifact, elem_id: str, label: str = "Variant", index: int = 0):
    choices = _variants(art, ctx)
    # allow_custom_value: the API may name any artifact's variants; the handler checks them
    return gr.Dropdown(choices, value=choices[min(index, len(choices) - 1)][1], label=label,
                       allow_custom_value=True, elem_id=elem_id)


def _follow(ctx: Ctx, artifact, *pickers) -> None:
    """When the artifact changes, offer its variants in each picker (not an API endpoint)."""

    def update(key: str):
        choices = _variants(ctx.pick(key), ctx)
        return tuple(gr.Dropdown(choices=choices, value=choices[min(i, len(choices) - 1)][1])
                     for i in range(len(pickers)))

    artifact.change(update, artifact, list(pickers), api_visibility="private")


# -- the tabs: one builder per runtime method ---------------------------------------------------
def _classify_tab(ctx: Ctx, arts: list[Artifact]) -> None:
    labels = arts[0].manifest.labels
    gr.Markdown("Type a sentence; the model gives each label a probability."
                + (f" Labels: {', '.join(labels)}." if labels else ""))
    with gr.Row():
        artifact = _artifact_picker(arts, "classify")
        variant = _variant_picker(ctx, arts[0], "classify-variant")
    text = gr.Textbox(label="Text", lines=3, placeholder="a witty, moving film", elem_id="classify-text")
    button = gr.Button("Classify", variant="primary", elem_id="classify-button")
    result = gr.Label(label="Label and scores", elem_id="classify-label")
    message = gr.Markdown(elem_id="classify-message")
    _follow(ctx, artifact, variant)

    def classify(text: str, variant: str = "auto", artifact: str | None = None):
        text = _text(text)
        art = ctx.pick(artifact, "classify")
        probs, ms, notes, info = ctx.run(art, variant, lambda m: m.scores([text])[0])
        names = art.manifest.labels or [f"LABEL_{i}" for i in range(len(probs))]
        return {n: float(p) for n, p in zip(names, probs)}, _details(info, ms, notes)

    button.click(_guarded(classify, (None,)), [text, variant, artifact], [result, message], api_name="classify")


def _embed_tab(ctx: Ctx, arts: list[Artifact]) -> None:
    gr.Markdown("Two texts in, the cosine similarity of their embeddings out (1 = same meaning).")
    with gr.Row():
        artifact = _artifact_picker(arts, "embed")
        variant = _variant_picker(ctx, arts[0], "embed-variant")
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
    _follow(ctx, artifact, variant)

    def embed(text_a: str, text_b: str, variant: str = "auto", artifact: str | None = None):
        pair = [_text(text_a, "first text"), _text(text_b, "second text")]
        vecs, ms, notes, info = ctx.run(ctx.pick(artifact, "embed"), variant, lambda m: m.embed(pair))
        return round(_cosine(vecs[0], vecs[1]), 6), _details(info, ms, notes)

    def search(query: str, sentences: str, variant: str = "auto", artifact: str | None = None):
        query = _text(query, "query")
        lines = [s.strip() for s in _text(sentences, "sentence list").splitlines() if s.strip()]
        if len(lines) > MAX_SENTENCES:
            raise InputError(f"The list has {len(lines)} sentences; this demo searches at most {MAX_SENTENCES}.")
        vecs, ms, notes, info = ctx.run(ctx.pick(artifact, "embed"), variant, lambda m: m.embed([query, *lines]))
        sims = [_cosine(vecs[0], v) for v in vecs[1:]]
        rows = sorted(([round(s, 4), line] for s, line in zip(sims, lines)), key=lambda r: -r[0])
        return rows, _details(info, ms, notes)

    button.click(_guarded(embed, (None,)), [text_a, text_b, variant, artifact], [similarity, message], api_name="embed")
    search_button.click(_guarded(search, (None,)), [query, sentences, variant, artifact], [ranked, search_message],
                        api_name="search")


def _generate_tab(ctx: Ctx, arts: list[Artifact]) -> None:
    gr.Markdown("Type a prompt; the model continues it, streaming the text as it comes.")
    with gr.Row():
        artifact = _artifact_picker(arts, "generate")
        variant = _variant_picker(ctx, arts[0], "generate-variant")
    prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO:", elem_id="generate-prompt")
    with gr.Row():
        max_new = gr.Slider(1, MAX_NEW_TOKENS, value=64, step=1, label="Max new tokens", elem_id="generate-max")
        temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature (0: greedy)", elem_id="generate-temp")
        top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p", elem_id="generate-top-p")
    button = gr.Button("Generate", variant="primary", elem_id="generate-button")
    output = gr.Textbox(label="Continuation", lines=8, interactive=False, elem_id="generate-output")
    message = gr.Markdown(elem_id="generate-message")
    _follow(ctx, artifact, variant)

    def generate(prompt: str, max_new_tokens: float = 64, temperature: float = 0.8, top_p: float = 0.95,
                 variant: str = "auto", artifact: str | None = None):
        prompt = _text(prompt, "prompt")
        settings = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature), "top_p": float(top_p)}

        def first(m: Model):  # the first piece under the warnings capture: the runtime warns when it cuts a prompt
            pieces = m.generate(prompt, stream=True, **settings)
            return pieces, next(pieces, "")

        (pieces, text), ttft, notes, info = ctx.run(ctx.pick(artifact, "generate"), variant, first)
        count, start = int(bool(text)), time.perf_counter()
        head = f"{_details(info, ttft, notes)} to the first piece"
        yield text, head + "; streaming…"
        for piece in pieces:
            text, count = text + piece, count + 1
            yield text, head + "; streaming…"
        total = ttft + (time.perf_counter() - start) * 1e3
        yield text, f"{head}; {count} pieces in {total:.0f} ms ({count / max(total, 1e-9) * 1e3:.1f}/s)"

    button.click(_guarded_stream(generate, ("",)), [prompt, max_new, temperature, top_p, variant, artifact],
                 [output, message], api_name="generate")


def _classify_one(model: Model, text: str) -> tuple[Any, np.ndarray]:
    probs = model.scores([text])[0]
    names = model.manifest.labels or [f"LABEL_{i}" for i in range(len(probs))]
    top = int(probs.argmax())
    return {"label": names[top], "score": round(float(probs[top]), 6),
            "scores": {n: round(float(p), 6) for n, p in zip(names, probs)}}, probs


def _embed_one(model: Model, text: str) -> tuple[Any, np.ndarray]:
    vec = model.embed([text])[0]
    return {"dims": int(vec.shape[0]), "norm": round(float(np.linalg.norm(vec)), 6),
            "first": [round(float(x), 5) for x in vec[:6]]}, vec


def _generate_one(model: Model, text: str) -> tuple[Any, str]:
    out = model.generate(text, max_new_tokens=32, temperature=0.0)  # greedy: variants comparable
    return {"continuation": out, "settings": "greedy, 32 new tokens"}, out


def _agreement(a: Any, b: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"cosine {_cosine(a, b):.6f}, max |difference| {float(np.abs(a.astype(np.float64) - b).max()):.3g}"
    return "the same output" if a == b else "different outputs"


@dataclass(frozen=True)
class Tab:
    title: str
    build: Callable[[Ctx, list[Artifact]], None]  # adds the tab's components and named API endpoints
    compare: Callable[[Model, str], tuple[Any, Any]] | None = None  # one variant's (shown, comparable) output
    compare_runs: int = COMPARE_RUNS


# The one place a task's page plugs in: "translate" and "caption" tabs go here once the runtime has
# those methods (their endpoints: /translate, /caption; the image one takes uploads up to MAX_FILE_SIZE).
TABS: dict[str, Tab] = {
    "classify": Tab("Sentiment", _classify_tab, _classify_one),
    "embed": Tab("Similarity", _embed_tab, _embed_one),
    "generate": Tab("Generation", _generate_tab, _generate_one, compare_runs=1),
}


# -- compare view and model card -------------------------------------------------------------------
def _compare_view(ctx: Ctx) -> None:
    arts = [a for a in ctx.arts.values() if TABS[a.method].compare]
    gr.Markdown("The same text through two variants: outputs, latency (median of "
                f"{COMPARE_RUNS} calls; one for generation) and the provider actually used, side by side.")
    with gr.Row():
        artifact = _artifact_picker(arts, "compare")
        variant_a = _variant_picker(ctx, arts[0], "compare-variant-a", "Variant A", 1)
        variant_b = _variant_picker(ctx, arts[0], "compare-variant-b", "Variant B", 2)
    text = gr.Textbox(label="Text", lines=2, value="A witty, moving film.", elem_id="compare-text")
    button = gr.Button("Compare variants", variant="primary", elem_id="compare-button")
    with gr.Row():
        out_a = gr.JSON(label="Variant A", elem_id="compare-a")
        out_b = gr.JSON(label="Variant B", elem_id="compare-b")
    message = gr.Markdown(elem_id="compare-message")
    _follow(ctx, artifact, variant_a, variant_b)

    def compare(text: str, variant_a: str, variant_b: str, artifact: str | None = None):
        text = _text(text)
        art = ctx.pick(artifact)
        tab = TABS[art.method]
        sides, vecs, notes = [], [], {}
        for variant in (variant_a, variant_b):
            (shown, vec), ms, more, info = ctx.run(art, variant, lambda m: tab.compare(m, text), runs=tab.compare_runs)
            sides.append({"variant": info["variant"], "precision": info["precision"], "provider": info["provider"],
                          "latency_ms": round(ms, 3), "output": shown})
            vecs.append(vec)
            notes.update(dict.fromkeys(more))
        summary = (f"A ({sides[0]['variant']}) vs B ({sides[1]['variant']}): {_agreement(*vecs)}; latency {sides[0]['latency_ms']:.2f} ms vs {sides[1]['latency_ms']:.2f} ms")
        return sides[0], sides[1], "\n\n".join([summary, *(f"ℹ️ Note: {n}" for n in notes)])

    button.click(_guarded(compare, (None, None)), [text, variant_a, variant_b, artifact], [out_a, out_b, message],
                 api_name="compare")


def _bench_lines(m: Manifest) -> list[str]:
    lines = []
    for provider, entry in m.bench.items():
        path = m.root / str((entry or {}).get("json", ""))
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            rows = report["rows"]
            shapes = [(s["batch"], s["seq"]) for s in next(iter(rows.values()))["shapes"]]
        except (OSError, ValueError, KeyError, StopIteration, TypeError):
            lines.append(f"\nbench ({provider}): {path.name} cannot be read; re-run `toolchain bench {m.root}`.")
            continue
        lines += [f"\n**bench** on {provider}, {report.get('threads')} threads, measured {report.get('measured')} "
                  "(p50 ms per batch x seq):", "",
                  "| engine | size | " + " | ".join(f"{b} x {s}" for b, s in shapes) + " |",
                  "|---|---|" + "---|" * len(shapes)]
        for name, row in rows.items():
            cells = " | ".join(f"{s['p50_ms']:.2f}" for s in row["shapes"])
            lines.append(f"| {name} | {row.get('bytes', 0) / 1e6:.1f} MB | {cells} |")
    return lines


def _card(art: Artifact) -> str:
    m, src = art.manifest, art.manifest.source
    lines = [f"### {art.key}",
             f"task **{m.task}** (`{art.method}`)" + (f", labels: {', '.join(m.labels)}" if m.labels else "")
             + f"; source {src.model or None} ({src.architecture or None}), opset {m.opset}, "
             f"at most {m.max_length} tokens", "",
             "| variant | precision | size | gate | check | latency |", "|---|---|---|---|---|---|"]
    for v in m.variants.values():
        lines.append(f"| {v.name} | {v.precision} | {v.bytes / 1e6:.1f} MB | {'passed' if v.passed else 'FAILED'} | "
                     f"{v.check_summary()} | {v.latency_summary()} |")
    return "\n".join(lines + _bench_lines(m))


def _chart(art: Artifact) -> str | None:
    for entry in art.manifest.bench.values():
        path = art.manifest.root / str((entry or {}).get("chart", ""))
        if path.is_file():
            return str(path)
    return None


def _card_view(ctx: Ctx) -> None:
    arts = list(ctx.arts.values())
    artifact = _artifact_picker(arts, "card")
    card = gr.Markdown(_card(arts[0]), elem_id="card")
    chart = gr.Image(_chart(arts[0]), label="bench chart", interactive=False, type="filepath", elem_id="card-chart",
                     buttons=["download", "fullscreen"])  # no "share": nothing leaves this machine

    def manifest(artifact: str | None = None):
        art = ctx.pick(artifact)
        return _chart(art), _card(art)

    artifact.change(_guarded(manifest, (None,)), artifact, [chart, card], api_name="manifest")


# -- the app and its entry point -------------------------------------------------------------------
def build_app(ctx: Ctx) -> "gr.Blocks":
    """The Blocks app over the artifacts of CTX (``Ctx.open(dirs)``); not launched."""
    served = [a for a in ctx.arts.values() if a.method in TABS]
    if not served:
        raise ToolchainError(f"no tab serves the methods of {', '.join(ctx.arts)} "
                             f"({', '.join(sorted({a.method for a in ctx.arts.values()}))}); "
                             f"the demo has tabs for {', '.join(TABS)}.")
    skipped = [a for a in ctx.arts.values() if a.method not in TABS]
    ctx.arts = {a.key: a for a in served}
    with gr.Blocks(title="toolchain demo", analytics_enabled=False) as app:
        gr.Markdown("## toolchain demo\n" + "\n".join(
            f"- `{a.key}`: {a.manifest.task}, auto variant **{ctx.model(a.key, 'auto').variant}** "
            f"on **{ctx.model(a.key, 'auto').info()['provider']}**" for a in served) + "".join(
            f"\n- `{a.key}`: {a.manifest.task} has no tab in this demo yet (`{a.method}`)" for a in skipped))
        with gr.Tabs():
            for method, tab in TABS.items():
                if ctx.of(method):
                    with gr.Tab(tab.title, id=method, elem_id=f"tab-{method}"):
                        tab.build(ctx, ctx.of(method))
            with gr.Tab("Compare variants", id="compare", elem_id="tab-compare"):
                _compare_view(ctx)
            with gr.Tab("Model card", id="card", elem_id="tab-card"):
                _card_view(ctx)
    app.queue(default_concurrency_limit=4, max_size=64)
    return app


def _default_artifact(progress: Callable[[str], None]) -> Path:
    if (DEFAULT_DIR / "manifest.json").is_file():
        return DEFAULT_DIR
    recipe = Path(DEFAULT_RECIPE)
    if not recipe.is_file():
        recipe = Path(__file__).resolve().parents[2] / DEFAULT_RECIPE
    progress(f"{DEFAULT_DIR} is missing: building it from {recipe} first (export, quantize, validate, bench; "
             "a few minutes)")
    try:
        from toolchain.pipeline.stages import build  # the only non-runtime import, and only here
    except ImportError as exc:
        raise ToolchainError(f"{DEFAULT_DIR} is missing and building it needs the export extra ({exc.name} is not "
                             "installed): pip install -e '.[export]', or pass an artifact DIR.") from None
    build(recipe, out=DEFAULT_DIR, progress=progress)
    return DEFAULT_DIR


def _loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo(dirs: Sequence[str | Path] = (), host: str = HOST, port: int | None = None, block: bool = True,
         progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)) -> "gr.Blocks":
    """Serve the app over DIRS (default: dist/minilm, built if missing) on HOST:PORT (default 127.0.0.1 and
    the first free port from 7860). block=False returns the running app; call its close() to stop it."""
    ctx = Ctx.open(list(dirs) or [_default_artifact(progress)])
    app = build_app(ctx)
    charts = [c for c in (_chart(a) for a in ctx.arts.values()) if c]  # the only files served from artifacts
    theme = gr.themes.Default(font=FONTS, font_mono=MONO)  # system fonts: nothing fetched from outside
    if not _loopback(host):
        progress(f"warning: listening on {host} makes the demo reachable from other machines, with no login; "
                 f"leave out --host (default {HOST}) unless that is what you want")
    try:
        app.launch(server_name=host, server_port=port, prevent_thread_lock=True, share=False, show_error=False,
                   quiet=True, inbrowser=False, ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False,
                   max_file_size=MAX_FILE_SIZE, allowed_paths=charts, theme=theme)
    except (OSError, OverflowError) as exc:  # OverflowError: a port outside 0..65535
        raise ToolchainError(f"cannot listen on {host}:{port or '7860..'} ({exc}); choose another with --port.") from None
    progress(f"serving {len(ctx.arts)} artifact(s) at {app.local_url} (Ctrl-C to stop)")
    if block:
        app.block_thread()
    return app
