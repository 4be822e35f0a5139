"""Slow: /v1/caption and /v1/classify_image on Ray Serve answer what the runtime's caption() and classify() answer
for the same image bytes; bad images and a text model on an image route are a 4xx of one sentence."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from fleet.conftest import free_port
from tiny_vision import tiny_vit, vit_artifact  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
httpx = pytest.importorskip("httpx")

from toolchain.data import shapes  # noqa: E402
from toolchain.fleet import ServeSettings  # noqa: E402
from toolchain.fleet.openai_api import Limits  # noqa: E402
from toolchain.runtime import load  # noqa: E402

SCENES = ("a small green star", "a large red circle above a small blue square", "a large yellow triangle")


def png(scene_caption: str) -> bytes:
    buf = io.BytesIO()
    shapes.render(shapes.scene_from_caption(scene_caption)).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def service(local_ray, caption_artifact, vit_artifact, tiny_artifact):
    from toolchain.fleet.cluster import start_service

    text = tiny_artifact("bert", "text-classification")
    settings = ServeSettings(port=free_port(), cpus_per_replica=0.25, limits=Limits(max_inputs=4))
    url = start_service([caption_artifact, vit_artifact, text], settings)
    return {"url": url, "caption": caption_artifact, "vit": vit_artifact, "text": text.name}


def test_caption_over_http_equals_the_runtime(service):
    images = [png(c) for c in SCENES[:2]]
    body = {"model": service["caption"].name, "image": [b64(b) for b in images], "max_tokens": 12}
    r = httpx.post(f"{service['url']}/v1/caption", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert [d["text"] for d in r.json()["data"]] == load(service["caption"]).caption(images, max_new_tokens=12)
    bad = httpx.post(f"{service['url']}/v1/caption", json={**body, "image": b64(b"not an image")}, timeout=60)
    assert bad.status_code == 400 and "Traceback" not in bad.json()["error"]["message"]


def test_classify_image_over_http_equals_the_runtime(service):
    images = [png(c) for c in SCENES]
    name, url = service["vit"].name, service["url"]
    r = httpx.post(f"{url}/v1/classify_image", json={"model": name, "image": [b64(b) for b in images]}, timeout=120)
    assert r.status_code == 200, r.text
    got, want = r.json()["data"], load(service["vit"]).classify(images)
    assert [(d["index"], d["label"]) for d in got] == [(i, w["label"]) for i, w in enumerate(want)]
    np.testing.assert_allclose([d["score"] for d in got], [w["score"] for w in want], atol=1e-6)
    one = httpx.post(f"{url}/v1/classify_image", json={"model": name, "image": "data:image/png;base64," + b64(images[2])},
                     timeout=60).json()["data"]
    assert one[0]["label"] == want[2]["label"] and len(one) == 1


@pytest.mark.parametrize("image,model,status,says", [
    ("@@not base64@@", "VIT", 400, "not valid base64"),
    (b64(b"not an image at all"), "VIT", 400, "not an image"),
    ([b64(b"x")] * 5, "VIT", 400, "more than the 4"),
    ("", "VIT", 400, "'image' must be"),
    (b64(b"x"), "TEXT", 400, "use /v1/classify"),
    (b64(b"x"), "nope", 404, "is not served here"),
])
def test_bad_images_are_one_sentence_of_json(service, image, model, status, says):
    name = {"VIT": service["vit"].name, "TEXT": service["text"]}.get(model, model)
    r = httpx.post(f"{service['url']}/v1/classify_image", json={"model": name, "image": image}, timeout=60)
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert says in message and "Traceback" not in message and message.count(". ") == 0 and message.endswith(".")
