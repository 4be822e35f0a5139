"""The embedded runtime: load an artifact and run it with ONNX Runtime, tokenizers and numpy only.

    from toolchain.runtime import load
    m = load("dist/minilm")          # variant="auto", provider="auto"
    m.embed(["a sentence", "another one"])
    m.info()["provider"]

Nothing here imports torch, transformers or optimum.
"""

from .errors import ArtifactError, InputError, ParityError, ProviderError, ToolchainError
from .manifest import Manifest, read_manifest
from .model import Model, load
from .providers import CudaOptions

__all__ = [
    "ArtifactError",
    "CudaOptions",
    "InputError",
    "Manifest",
    "Model",
    "ParityError",
    "ProviderError",
    "ToolchainError",
    "load",
    "read_manifest",
]
