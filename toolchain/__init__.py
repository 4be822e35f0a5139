"""ONNX export and edge deployment toolchain: export, validate and run Transformer models.

Importing this package is torch-free; the export stages import torch lazily.
"""

__version__ = "0.1.0"
