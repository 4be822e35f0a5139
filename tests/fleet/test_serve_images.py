"""Slow: /v1/caption on Ray Serve answers what the runtime's caption() answers for the same image bytes."""

from __future__ import annotations

import base64
import io

import pytest

from fleet.conftest import free_port

pytestmark = pytest.mark.slow
httpx = pytest.importorskip("httpx")

from toolchain.data import shapes  # noqa: E402
from toolchain.fleet import ServeSettings  # noqa: E402
from toolchain.runtime import load  # noqa: E402


def png(scene_caption: str) -> bytes:
    buf = io.BytesIO()
    shapes.render(shapes.scene_from_caption(scene_caption)).save(buf, format="PNG")
    return buf.getvalue()


def test_caption_over_http_equals_the_runtime(local_ray, caption_artifact):
    from toolchain.fleet.cluster import start_service

    url = start_service([caption_artifact], ServeSettings(port=free_port(), cpus_per_replica=0.5))
    images = [png(c) for c in ("a small green star", "a large red circle above a small blue square")]
    body = {"model": caption_artifact.name, "image": [base64.b64encode(b).decode() for b in images], "max_tokens": 12}
    r = httpx.post(f"{url}/v1/caption", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert [d["text"] for d in r.json()["data"]] == load(caption_artifact).caption(images, max_new_tokens=12)
    bad = httpx.post(f"{url}/v1/caption", json={**body, "image": base64.b64encode(b"not an image").decode()}, timeout=60)
    assert bad.status_code == 400 and "Traceback" not in bad.json()["error"]["message"]
