"""The embedded runtime: load an artifact and run it with ONNX Runtime, tokenizers and numpy only.

    from toolchain.runtime import load
    m = load("dist/minilm")          # variant="auto", provider="auto"
    m.embed(["a sentence", "another one"])
    m.info()["provider"]

``load()`` returns the class registered for the artifact's task (``RUNTIMES``): an Embedder, a
Classifier, a TextGenerator, a Translator, an ImageClassifier or a Captioner, all of them a ``Model``. Nothing here
imports torch, transformers or optimum; image input needs Pillow (the ``vision`` extra).
"""

from .base import RUNTIMES, register_runtime
from .caption import Captioner
from .encoders import Classifier, Embedder
from .errors import ArtifactError, InputError, ParityError, ProviderError, ToolchainError
from .manifest import Manifest, read_manifest
from .model import Model, load, open_variant
from .providers import CudaOptions
from .textgen import TextGenerator
from .translate import Translator
from .vision import ImageClassifier

__all__ = [
    "ArtifactError",
    "Captioner",
    "Classifier",
    "CudaOptions",
    "Embedder",
    "ImageClassifier",
    "InputError",
    "Manifest",
    "Model",
    "ParityError",
    "ProviderError",
    "RUNTIMES",
    "TextGenerator",
    "ToolchainError",
    "Translator",
    "load",
    "open_variant",
    "read_manifest",
    "register_runtime",
]
