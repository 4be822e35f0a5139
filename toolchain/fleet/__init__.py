"""fleet: past one machine on existing engines. Ray Serve serves artifacts behind an OpenAI-compatible
HTTP API (deploy.py, openai_api.py), Ray Data maps a file through a model (map.py).

Sits between serve (the one-process Gradio demo) and pipeline; it calls only the public runtime API
(``toolchain.runtime.load`` and the task methods). Ray is imported only when a command needs it (the
serve extra), so this package is importable without it.
"""

from toolchain.fleet.settings import MapSettings, ServeSettings

__all__ = ["MapSettings", "ServeSettings"]
