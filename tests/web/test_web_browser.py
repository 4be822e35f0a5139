"""The site in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright), against the Python runtime.

50 SST-2 dev sentences go through window.model in the page and through toolchain.runtime on the same variant:
embeddings agree to cosine >= 0.999 and labels are identical; every request goes to the local server; a second
visit works with the server stopped (the service worker); a text past max_length gets a visible note. The
timings (first inference including download and session creation, per-sentence latency) are written to
tests/artifacts/web-latency.json beside the page's screenshot.
"""

from __future__ import annotations

import csv
import json
import os
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
OUT = Path(__file__).resolve().parents[1] / "artifacts"
SST2 = Path(__file__).resolve().parents[2] / "toolchain" / "data" / "bundled" / "sst2-dev.tsv"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
READY = "() => !!window.model"
EMBED, CLASSIFY = "bert-feature-extraction", "bert-text-classification"

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run tries that)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="the playwright package is missing: pip install -e '.[test]'")


def sentences(n: int = 50) -> list[str]:
    with open(SST2, encoding="utf-8", newline="") as fh:
        return [row["content"] for row, _ in zip(csv.DictReader(fh, delimiter="\t"), range(n))]


@pytest.fixture(scope="module")
def site(tiny_artifact, classifier_artifact, tmp_path_factory):
    from suite_policy import require_tool
    from toolchain.web import build_site

    require_tool("npm", install="apt-get install npm; the site vendors onnxruntime-web from the npm registry")
    out = tmp_path_factory.mktemp("web") / "site"
    build_site([tiny_artifact("bert"), classifier_artifact], out)
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    os.environ.pop("DISPLAY", None)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def served(site):
    from toolchain.web import serve_site

    server = serve_site(site, block=False)
    try:
        yield server
    finally:
        server.close()


def open_page(browser, url: str):
    """A fresh context (its own cache and service worker) and page; the origins and paths it asked for and its errors."""
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    seen: dict[str, list] = {"origins": [], "paths": [], "errors": []}

    def request(r) -> None:  # every request of the context, the service worker's included
        if not r.url.startswith(("data:", "blob:")):
            seen["origins"].append(f"{urlparse(r.url).scheme}://{urlparse(r.url).netloc}")
            seen["paths"].append(urlparse(r.url).path)

    context.on("request", request)
    page = context.new_page()
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_function(READY, timeout=90_000)
    seen["ready_s"] = time.perf_counter() - started
    return context, page, seen


def per_sentence_ms(page, model: str, texts: list[str]) -> float:
    return page.evaluate("""async ([name, texts]) => {
        const m = await window.site.use(name); const t = performance.now();
        for (const text of texts) await m.embed([text]);
        return (performance.now() - t) / texts.length; }""", [model, texts])


def test_the_page_matches_the_python_runtime_on_sst2(browser, served, tiny_artifact, classifier_artifact):
    from toolchain.runtime import load

    texts = sentences()
    context, page, seen = open_page(browser, served.url)
    first = page.evaluate("async (t) => { const s = performance.now(); await window.model.embed(t); "
                          "return performance.now() - s; }", texts[:1])
    assert page.evaluate("() => window.model.info().variant") == "fp32"
    vectors = np.asarray(page.evaluate("(t) => window.model.embed(t)", texts))
    labels = page.evaluate(f"async (t) => (await window.site.use('{CLASSIFY}')).classify(t)", texts)
    web_ms = per_sentence_ms(page, EMBED, texts)

    embedder = load(tiny_artifact("bert"), variant="fp32", provider="cpu")
    reference = embedder.embed(texts)
    assert vectors.shape == reference.shape == (50, 32)
    cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999, cosine.min()
    expected = load(classifier_artifact, variant="fp32", provider="cpu").classify(texts)
    assert [r["label"] for r in labels] == [r["label"] for r in expected]
    assert np.allclose([r["score"] for r in labels], [r["score"] for r in expected], atol=1e-4)

    started = time.perf_counter()
    for text in texts:
        embedder.embed([text])
    python_ms = (time.perf_counter() - started) * 1e3 / len(texts)
    info = page.evaluate("() => window.model.info()")
    OUT.mkdir(exist_ok=True)
    (OUT / "web-latency.json").write_text(json.dumps({
        "model": "tiny bert (2 layers, hidden 32)", "threads": info["threads"],
        "cross_origin_isolated": info["cross_origin_isolated"], "page_ready_s": round(seen["ready_s"], 3),
        "load_ms": round(info["load_ms"], 1), "first_call_ms": round(first, 1), "web_ms_per_sentence": round(web_ms, 2),
        "python_ms_per_sentence": round(python_ms, 2)}, indent=2))
    assert info["cross_origin_isolated"] and info["threads"] >= 1
    assert any(p.endswith("/model.onnx") for p in seen["paths"]) and any(p.endswith(".wasm") for p in seen["paths"])
    origin = served.url.rstrip("/")
    assert set(seen["origins"]) == {origin}, f"the page fetched from elsewhere: {sorted(set(seen['origins']) - {origin})}"
    assert not seen["errors"], seen["errors"]
    context.close()


def test_the_views_show_results_latency_and_a_truncation_note(browser, served):
    context, page, seen = open_page(browser, served.url)
    page.locator("#sim-a").fill("a witty film")
    page.locator("#sim-b").fill("a witty film")
    page.locator("#sim-button").click()
    page.locator("#sim-latency", has_text="ms on fp32").wait_for(timeout=20_000)
    assert page.locator("#sim-result").inner_text() == "1.0000"
    page.locator("#search-button").click()
    page.locator("#search-results tr").nth(3).wait_for(timeout=20_000)
    assert page.locator("#note").inner_text() == ""

    page.goto(f"{served.url}?model={CLASSIFY}")  # the link the Gradio card gives
    page.wait_for_function(READY, timeout=60_000)
    assert page.evaluate("() => window.model.info().task") == "text-classification"
    page.locator("#cls-text").fill("great film\n" + "a long review " * 200)
    page.locator("#cls-button").click()
    page.locator("#note", has_text="1 of 2 inputs exceed the model's maximum of 128 tokens").wait_for(timeout=20_000)
    assert page.locator("#cls-results tr").count() == 2
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "web.png"), full_page=True)
    assert not seen["errors"], seen["errors"]
    context.close()


def test_a_second_visit_works_with_the_server_stopped(browser, site):
    from toolchain.web import serve_site

    server = serve_site(site, block=False)
    context, page, _ = open_page(browser, server.url)
    page.evaluate("() => navigator.serviceWorker.ready")
    server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=5)
    page.close()
    again = context.new_page()
    again.goto(server.url)
    again.wait_for_function(READY, timeout=60_000)
    out = again.evaluate(f"async () => (await window.site.use('{CLASSIFY}')).classify(['a fine film'])")
    assert out[0]["label"] in {"negative", "positive"}
    context.close()


def test_a_model_file_that_does_not_match_its_sha256_is_refused_in_the_page(browser, site, tmp_path):
    import shutil

    from toolchain.web import serve_site

    copy = Path(shutil.copytree(site, tmp_path / "site"))
    graph = copy / "models" / EMBED / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[-100] ^= 0xFF
    graph.write_bytes(bytes(data))
    server = serve_site(copy, block=False)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url)
        page.locator("#status .error", has_text="does not match the sha256").wait_for(timeout=60_000)
        assert page.evaluate("() => window.model") is None
    finally:
        context.close()
        server.close()


@pytest.mark.slow
def test_minilm_in_the_page_matches_the_python_runtime(browser, minilm_artifact, tmp_path):
    """The bundled all-MiniLM-L6-v2 (6 layers, 384 wide): the same agreement as the tiny model, and its timings."""
    from toolchain.runtime import load
    from toolchain.web import build_site, serve_site

    texts = sentences()
    build_site([minilm_artifact], tmp_path / "site")
    server = serve_site(tmp_path / "site", block=False)
    try:
        context, page, seen = open_page(browser, server.url)
        vectors = np.asarray(page.evaluate("(t) => window.model.embed(t)", texts))
        web_ms = per_sentence_ms(page, "minilm", texts)
        context.close()
    finally:
        server.close()
    reference = load(minilm_artifact, variant="fp32", provider="cpu").embed(texts)
    cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999, cosine.min()
    assert set(seen["origins"]) == {server.url.rstrip("/")}
    OUT.mkdir(exist_ok=True)
    (OUT / "web-latency-minilm.json").write_text(json.dumps({"page_ready_s": round(seen["ready_s"], 2),
                                                             "web_ms_per_sentence": round(web_ms, 2)}))


def test_the_int8_variant_runs_in_the_page_as_in_python(browser, tiny_artifact, tmp_path):
    """The quantized graph (per-row int8: MatMulIntegerToFloat from ONNX Runtime's contrib ops) must load in the
    WASM build and give what the native runtime gives on the same variant: int8 is what `auto` ships on CPU."""
    import shutil

    from toolchain.runtime import load
    from toolchain.runtime.manifest import read_manifest
    from toolchain.variants.quantize import quantize
    from toolchain.web import build_site, serve_site

    art = shutil.copytree(tiny_artifact("bert"), tmp_path / "art")
    quantize(art, "int8-dynamic")
    assert "int8" in read_manifest(art).variants
    texts = sentences(20)
    build_site([art], tmp_path / "site", variant="int8")
    server = serve_site(tmp_path / "site", block=False)
    try:
        context, page, seen = open_page(browser, server.url)
        assert page.evaluate("() => window.model.info().variant") == "int8"
        vectors = np.asarray(page.evaluate("(t) => window.model.embed(t)", texts))
        context.close()
    finally:
        server.close()
    assert not seen["errors"], seen["errors"]
    reference = load(art, variant="int8", provider="cpu").embed(texts)
    cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999, cosine.min()
