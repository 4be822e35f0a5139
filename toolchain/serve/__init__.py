"""serve: the Gradio demo over the public runtime API. Entry: demo()."""

from toolchain.serve.app import demo

__all__ = ["demo"]
