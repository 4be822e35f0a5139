"""The Gradio demo: ``toolchain demo [DIR ...]`` or ``python demos/app.py [DIR ...]``.

One tab per task present among the artifacts (``TABS`` in serve/tabs/: task name -> Tab; a future
translation or captioning tab plugs in there and nowhere else), a compare view (the same input through
two variants, side by side) and a model card per artifact (gates, sizes, bench). The app uses only the
public ``toolchain.runtime`` API, fetches nothing from outside (system fonts, no analytics) and shows
every failure as one readable line in the page, never a traceback.

The parts: context.py (artifacts, model cache, input checks), widgets.py (pickers, guarded handlers),
tabs/ (one module per task), compare.py, card.py, policy.py (default artifact, host check); here the
page is put together and launched.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

from toolchain.runtime import ToolchainError
from toolchain.serve.card import card_view, chart, web_links
from toolchain.serve.compare import compare_view
from toolchain.serve.context import MAX_CHARS, MAX_SENTENCES, Ctx
from toolchain.serve.policy import HOST, Builder, default_artifact, host_warning
from toolchain.serve.tabs import TABS
from toolchain.serve.ui import gr

MAX_FILE_SIZE = "10mb"  # uploads (the image tab)
FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]

__all__ = ["HOST", "MAX_CHARS", "MAX_FILE_SIZE", "MAX_SENTENCES", "Ctx", "build_app", "demo"]


def _header(ctx: Ctx, skipped: list) -> str:
    return "## toolchain demo\n" + "\n".join(
        f"- `{a.key}`: {a.manifest.task}, auto variant **{ctx.model(a.key, 'auto').variant}** "
        f"on **{ctx.model(a.key, 'auto').info()['provider']}**" for a in ctx.arts.values()) + "".join(
        f"\n- `{a.key}`: {a.manifest.task} has no tab in this demo yet" for a in skipped)


def build_app(ctx: Ctx) -> "gr.Blocks":
    """The Blocks app over the artifacts of CTX (``Ctx.open(dirs)``); not launched."""
    served = [a for a in ctx.arts.values() if a.task in TABS]
    if not served:
        raise ToolchainError(f"no tab serves the tasks of {', '.join(ctx.arts)} "
                             f"({', '.join(sorted({a.task for a in ctx.arts.values()}))}); "
                             f"the demo has tabs for {', '.join(TABS)}.")
    skipped = [a for a in ctx.arts.values() if a.task not in TABS]
    ctx.arts = {a.key: a for a in served}
    with gr.Blocks(title="toolchain demo", analytics_enabled=False) as app:
        gr.Markdown(_header(ctx, skipped))
        with gr.Tabs():
            for task, tab in TABS.items():
                if ctx.of(task):
                    with gr.Tab(tab.title, id=tab.slug, elem_id=f"tab-{tab.slug}"):
                        tab.build(ctx, ctx.of(task))
            with gr.Tab("Compare variants", id="compare", elem_id="tab-compare"):
                compare_view(ctx)
            with gr.Tab("Model card", id="card", elem_id="tab-card"):
                card_view(ctx)
    app.queue(default_concurrency_limit=4, max_size=64)
    return app


def demo(dirs: Sequence[str | Path] = (), host: str = HOST, port: int | None = None, block: bool = True,
         progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
         build: Builder | None = None, web: str | None = None) -> "gr.Blocks":
    """Serve the app over DIRS (default: dist/minilm, built with BUILD if missing) on HOST:PORT (default 127.0.0.1
    and the first free port from 7860). block=False returns the running app; call its close() to stop it.
    WEB: the URL of a site `toolchain web --serve` serves; the model card links the artifacts it was built from."""
    ctx = Ctx.open(list(dirs) or [default_artifact(progress, build)])
    ctx.web = web_links(web, list(ctx.arts.values())) if web else {}
    app = build_app(ctx)
    charts = [c for c in (chart(a) for a in ctx.arts.values()) if c]  # the only files served from artifacts
    theme = gr.themes.Default(font=FONTS, font_mono=MONO)  # system fonts: nothing fetched from outside
    warning = host_warning(host)
    if warning:
        progress(warning)
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
