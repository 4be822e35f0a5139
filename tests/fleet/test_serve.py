"""`toolchain serve` on Ray Serve, spoken to with the official openai client: the answers are the runtime's.

One local Ray and one deployment (a tiny encoder, a tiny classifier, a tiny decoder) per module."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import time

import numpy as np
import pytest

from conftest import CORPUS
from fleet.conftest import free_port

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from toolchain.fleet import ServeSettings  # noqa: E402
from toolchain.fleet.openai_api import Limits  # noqa: E402
from toolchain.runtime import load  # noqa: E402

TEXTS = ["a cat sat on the mat", "the film was a delight", "dull"]


@pytest.fixture(scope="module")
def service(local_ray, tiny_artifact, tiny_decoder):
    from toolchain.fleet.cluster import start_service

    dirs = {"embed": tiny_artifact("bert"), "classify": tiny_artifact("bert", "text-classification"),
            "generate": tiny_decoder("llama")[1]}
    settings = ServeSettings(port=free_port(), cpus_per_replica=0.25, limits=Limits(max_inputs=64, max_chars=2000,
                                                                                      max_body_bytes=100_000))
    url = start_service(list(dirs.values()), settings)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    yield {"url": url, "dirs": dirs, "names": {k: v.name for k, v in dirs.items()}, "client": client}


def test_embeddings_equal_the_runtime(service):
    name, want = service["names"]["embed"], load(service["dirs"]["embed"]).embed(TEXTS)
    for fmt in ({}, {"encoding_format": "float"}):  # by default the client asks for base64 and decodes it
        got = service["client"].embeddings.create(model=name, input=TEXTS, **fmt)
        assert [d.index for d in got.data] == [0, 1, 2]
        np.testing.assert_allclose(np.array([d.embedding for d in got.data]), want, atol=1e-6)
    raw = service["client"].embeddings.create(model=name, input=TEXTS, encoding_format="base64")
    decoded = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in raw.data]
    np.testing.assert_allclose(np.array(decoded), want, atol=1e-6)
    one = service["client"].embeddings.create(model=name, input="dull")
    np.testing.assert_allclose(one.data[0].embedding, want[2], atol=1e-6)


def test_greedy_completion_equals_generate_and_stream_joins(service):
    name, model = service["names"]["generate"], load(service["dirs"]["generate"])
    for prompt in ("the film", "a dull"):
        counts: dict = {}
        want = model.generate(prompt, max_new_tokens=12, usage=counts)
        got = service["client"].completions.create(model=name, prompt=prompt, max_tokens=12, temperature=0)
        assert got.choices[0].text == want
        assert got.choices[0].finish_reason == counts["finish_reasons"][0]  # the runtime's, "length" or "stop"
        assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (counts["prompt_tokens"][0],
                                                                           counts["completion_tokens"][0])
        assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens > 0
        chunks = list(service["client"].completions.create(
            model=name, prompt=prompt, max_tokens=12, temperature=0, stream=True))
        pieces = [c.choices[0].text for c in chunks]
        assert "".join(pieces) == want and len([p for p in pieces if p]) > 1
        assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + [counts["finish_reasons"][0]]
        assert chunks[-1].usage.completion_tokens == counts["completion_tokens"][0]


def test_models_classify_and_health(service):
    listed = {m.id: m for m in service["client"].models.list().data}
    assert set(listed) == set(service["names"].values())
    assert listed[service["names"]["classify"]].model_extra["task"] == "text-classification"
    name = service["names"]["classify"]
    r = httpx.post(f"{service['url']}/v1/classify", json={"model": name, "input": TEXTS}, timeout=60)
    want = load(service["dirs"]["classify"]).classify(TEXTS)
    assert r.status_code == 200
    got = r.json()["data"]
    assert [d["label"] for d in got] == [w["label"] for w in want]
    np.testing.assert_allclose([d["score"] for d in got], [w["score"] for w in want], atol=1e-6)
    assert httpx.get(f"{service['url']}/health").json()["status"] == "ok"


@pytest.mark.parametrize("route,body,status,says", [
    ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "is not served here"),
    ("/v1/embeddings", {"model": "EMBED", "input": []}, 400, "non-empty list"),
    ("/v1/embeddings", {"model": "EMBED", "input": [1, 2]}, 400, "token ids"),
    ("/v1/embeddings", {"model": "EMBED", "input": ["x"] * 65}, 400, "more than the 64"),
    ("/v1/embeddings", {"model": "EMBED", "input": "x" * 2001}, 400, "characters"),
    ("/v1/embeddings", {"model": "EMBED", "input": ["x" * 1900] * 60}, 413, "bytes"),
    ("/v1/embeddings", {"model": "GENERATE", "input": "x"}, 400, "use /v1/completions"),
    ("/v1/completions", {"model": "GENERATE", "prompt": "x", "max_tokens": 10_000}, 400, "'max_tokens'"),
    ("/v1/completions", {"model": "GENERATE", "prompt": "x", "temperature": "hot"}, 400, "'temperature'"),
    ("/v1/completions", {"model": "GENERATE", "prompt": "x", "n": 3}, 400, "n=1"),
    ("/v1/completions", "not json", 400, "not valid JSON"),
])
def test_bad_input_is_one_sentence_of_json(service, route, body, status, says):
    names = {k.upper(): v for k, v in service["names"].items()}
    if isinstance(body, dict):
        content = json.dumps({k: names.get(v, v) if k == "model" else v for k, v in body.items()})
    else:
        content = body
    r = httpx.post(f"{service['url']}{route}", content=content, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert says in message and "Traceback" not in message and message.count(". ") == 0 and message.endswith(".")


def test_openai_client_raises_on_a_bad_request(service):
    with pytest.raises(openai.BadRequestError, match="non-blank"):
        service["client"].embeddings.create(model=service["names"]["embed"], input=["fine", "   "])


def load_test(client, name: str, want: dict[str, np.ndarray], requests: int, clients: int) -> dict:
    """REQUESTS embedding calls from CLIENTS threads; latencies and the number of wrong answers."""
    texts = list(want)

    def one(i: int) -> tuple[float, bool]:
        text = texts[i % len(texts)]
        t0 = time.perf_counter()
        got = client.embeddings.create(model=name, input=text).data[0].embedding
        return time.perf_counter() - t0, bool(np.allclose(got, want[text], atol=1e-5))

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    lat = np.array([r[0] for r in results])
    return {"wrong": sum(not r[1] for r in results), "rps": requests / wall, "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99))}


def _load(service, requests: int, clients: int) -> dict:
    texts = sorted(set(CORPUS))[:4] + [f"sentence number {i}" for i in range(12)]
    want = dict(zip(texts, load(service["dirs"]["embed"]).embed(texts)))
    return load_test(service["client"], service["names"]["embed"], want, requests, clients)


def test_concurrent_requests_each_get_their_own_answer(service):
    """Smoke size of the load test: concurrent requests are batched together and split back correctly, in the one
    replica that answers HTTP and holds every model, which counts each text once in the batch sizes it formed."""
    from toolchain.fleet.cluster import replica_infos

    def texts_counted() -> tuple[set[int], int]:
        infos = replica_infos(1)
        embed = service["names"]["embed"]
        return set(infos), sum(int(size) * n for info in infos.values() for size, n in info["models"][embed]["batches"].items())

    pids, before = texts_counted()
    stats = _load(service, requests=100, clients=8)
    assert stats["wrong"] == 0
    again, after = texts_counted()
    assert again == pids and len(pids) == 1 and after - before == 100
    assert set(replica_infos(1)[next(iter(pids))]["models"]) == set(service["names"].values())


@pytest.mark.slow
def test_load_2000_requests_32_clients(service):
    stats = _load(service, requests=2000, clients=32)
    print(f"\nload: {stats}")
    assert stats["wrong"] == 0
