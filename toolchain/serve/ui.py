"""Gradio, imported once for the whole demo: no analytics, and one sentence when it is not installed."""

from __future__ import annotations

import os

from toolchain.runtime import ToolchainError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
try:
    import gradio as gr
except ImportError:  # pragma: no cover - depends on the install
    raise ToolchainError("the demo needs Gradio; install it with pip install -e '.[demo]' (or pip install gradio).") from None

__all__ = ["gr"]
