"""The demo's caption tab through its API (gradio_client uploads files): a caption with the latency, the variant
picker, the decoding settings, bad uploads as one readable line, and the compare view captioning a drawn scene."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
gradio_client = pytest.importorskip("gradio_client", reason="the API tests need gradio_client")

from toolchain.data import shapes  # noqa: E402
from toolchain.runtime import load  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(caption_artifact):
    from toolchain.serve.app import demo

    app = demo([caption_artifact], port=free_port(), block=False, progress=lambda msg: None)
    try:
        yield gradio_client.Client(app.local_url, verbose=False)
    finally:
        app.close()


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("uploads") / "picture.png"
    shapes.render(shapes.scene_from_caption("a large red circle above a small blue square")).save(path)
    return path


def test_the_caption_tab_has_its_endpoint(served):
    endpoints = served.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/caption", "/compare", "/manifest"} <= set(endpoints)


def test_an_uploaded_image_gets_its_caption(served, picture, caption_artifact):
    caption, message = served.predict(gradio_client.handle_file(str(picture)), 8, 1, "fp32", api_name="/caption")
    assert caption == load(caption_artifact).caption(str(picture), max_new_tokens=8)
    assert "variant **fp32**" in message and "on **cpu**" in message and " ms" in message and "⚠️" not in message


def test_bad_uploads_are_one_readable_line(served, tmp_path):
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    broken = tmp_path / "truncated.png"
    broken.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    caption, message = served.predict(gradio_client.handle_file(str(broken)), api_name="/caption")
    assert message.startswith("⚠️") and "truncated or damaged image" in message and "Traceback" not in message
    assert not caption
    _, message = served.predict(None, api_name="/caption")
    assert message == "⚠️ No image was uploaded; choose an image file first."


def test_compare_captions_a_drawn_scene(served):
    a, b, summary = served.predict("a large green star left of a small red square", "fp32", "fp32",
                                   api_name="/compare")
    assert a["output"]["caption"] == b["output"]["caption"] and "the same output" in summary
    assert a["output"]["drawn"] == "a large green star left of a small red square"
