"""export: a PyTorch / Hugging Face model to an ONNX artifact, with parity against PyTorch. Entry: export()."""

from toolchain.export.core import export

__all__ = ["export"]
