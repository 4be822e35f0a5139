"""serve: the Gradio demo over the public runtime API. Entry: demo().

app.py (build_app, demo), context.py (artifacts, model cache, input checks), widgets.py (pickers,
guarded handlers), tabs/ (TABS: one module per task), compare.py, card.py, policy.py (default
artifact, host check), ui.py (the one Gradio import).
"""

from toolchain.serve.app import demo

__all__ = ["demo"]
