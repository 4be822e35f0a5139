"""pipeline: train -> export -> quantize -> optimize -> validate -> bench in one go. Entry: build()."""

from toolchain.pipeline.stages import build

__all__ = ["build"]
