"""validate re-runs a lossy variant's gate against fp32: a variant that misses it raises ParityError
naming the variant and the gate (the sha256 is consistent, so only the gate can catch it)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from toolchain.artifact import add_variant
from toolchain.runtime import ParityError
from toolchain.variants.validate import validate

TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate(["films", "books", "food", "music"] * 4)]


@pytest.fixture(scope="module")
def built(tiny_artifact):
    return tiny_artifact("bert")


@pytest.fixture
def art(built, tmp_path):
    out = tmp_path / "art"
    shutil.copytree(built, out)
    (tmp_path / "calib.txt").write_text("\n".join(TEXTS) + "\n")
    return out


def _add_int8(art, scale: float | None):
    """An 'int8' variant: the fp32 graph, its weights scaled by SCALE (None: unchanged), listed with a
    matching sha256 and the tight embedding budget a real quantized variant gets."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(art / "model.onnx"))
    if scale is not None:
        for init in model.graph.initializer:
            w = numpy_helper.to_array(init)
            if w.dtype == np.float32 and w.ndim == 2:  # every weight matrix: a badly broken "quantization"
                init.CopyFrom(numpy_helper.from_array((w * scale + 0.05).astype(np.float32), init.name))
    built = art.parent / "built.onnx"
    onnx.save(model, str(built))
    calib = art.parent / "calib.txt"
    entry = {"precision": "int8", "passed": True, "tolerance": {"max_drop": 0.005},
             "metrics": {"gate": {"data": str(calib), "texts": len(TEXTS)}}, "latency": {}}
    add_variant(art, "int8", built, entry)


def test_failing_int8_variant_raises_naming_it_and_its_gate(art):
    _add_int8(art, scale=-1.0)
    with pytest.raises(ParityError) as info:
        validate(art)
    message = str(info.value)
    assert "int8 misses its gate check" in message
    assert "cosine to fp32" in message  # the embedding gate's numbers
    assert "fp32 misses" not in message  # the reference itself is fine


def test_failing_int8_variant_alone(art):
    _add_int8(art, scale=-1.0)
    with pytest.raises(ParityError, match=r"int8 misses its gate check \(cosine to fp32 mean"):
        validate(art, variants=["int8"])


def test_passing_int8_variant_validates(art):
    """The control: the same setup with an unchanged graph passes (so the failure above is the gate's)."""
    _add_int8(art, scale=None)
    checks = validate(art)
    by_name = {c.variant: c for c in checks}
    assert by_name["int8"].kind == "gate" and by_name["int8"].passed is True
    assert by_name["fp32"].kind == "parity" and by_name["fp32"].passed is True
