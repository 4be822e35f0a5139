"""The demo's image tab through its API (gradio_client uploads files): labels with scores, the variant picker,
bad uploads as one readable line, and the compare view drawing a shapes caption."""

from __future__ import annotations

import io
import shutil
import socket

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
gradio_client = pytest.importorskip("gradio_client", reason="the API tests need gradio_client")

from PIL import Image  # noqa: E402

from tiny_vision import LABELS, shapes_dev, tiny_vit, vit_artifact  # noqa: E402,F401  (fixtures)
from toolchain.data import shapes  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(vit_artifact, shapes_dev, tmp_path_factory):
    from toolchain.serve.app import demo
    from toolchain.variants.quantize import quantize

    art = shutil.copytree(vit_artifact, tmp_path_factory.mktemp("demo") / "shapes")
    assert quantize(art, "int8-dynamic", calib=shapes_dev, limit=16).passed
    app = demo([art], port=free_port(), block=False, progress=lambda msg: None)
    try:
        yield gradio_client.Client(app.local_url, verbose=False)
    finally:
        app.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    picture = shapes.render(shapes.scene_from_caption("a large red circle above a small blue square"))
    picture.save(folder / "picture.png")
    picture.convert("L").save(folder / "gray.png")
    rgba = picture.copy()
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return folder


def upload(client, path, *more):
    return client.predict(gradio_client.handle_file(str(path)), *more, api_name="/classify_image")


def test_the_image_tab_has_its_endpoint(served):
    endpoints = served.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/classify_image", "/compare", "/manifest"} <= set(endpoints)


@pytest.mark.parametrize("name", ["picture.png", "gray.png", "alpha.png"])
def test_an_uploaded_image_gets_a_label_and_scores(served, files, name):
    label, message = upload(served, files / name)
    assert label["label"] in LABELS and {c["label"] for c in label["confidences"]} == set(LABELS)
    assert sum(c["confidence"] for c in label["confidences"]) == pytest.approx(1.0, abs=1e-5)
    assert "on **cpu**" in message and " ms" in message and "⚠️" not in message


def test_the_variant_picker(served, files):
    _, message = upload(served, files / "picture.png", "int8")
    assert "variant **int8** (int8)" in message


def test_bad_uploads_are_one_readable_line(served, files):
    label, message = upload(served, files / "truncated.png")
    assert message.startswith("⚠️") and "truncated or damaged image" in message and "Traceback" not in message
    assert not label or not label.get("label")
    _, message = served.predict(None, api_name="/classify_image")
    assert message == "⚠️ No image was uploaded; choose an image file first."


def test_compare_draws_a_caption_for_two_variants(served):
    a, b, summary = served.predict("a large green star left of a small red square", "fp32", "int8", api_name="/compare")
    assert (a["variant"], b["variant"]) == ("fp32", "int8") and a["output"]["label"] in LABELS
    assert a["output"]["drawn"] == "a large green star left of a small red square" and "cosine" in summary
    _, _, summary = served.predict("a witty film", "fp32", "int8", api_name="/compare")
    assert summary.startswith("⚠️") and "is not a shapes caption" in summary
