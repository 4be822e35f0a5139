"""The demo end to end in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Types a sentence, clicks, reads the result; checks that the page fetched nothing from outside this
machine; saves a screenshot to tests/artifacts/demo.png.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "artifacts" / "demo.png"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
LOCAL = {"127.0.0.1", "localhost"}

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run tries that)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="the playwright package is missing: pip install -e '.[test]'")
pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(classifier_artifact, tiny_artifact, tiny_decoder):
    from toolchain.serve.app import demo

    arts = [classifier_artifact, tiny_artifact("bert"), tiny_decoder("llama")[1]]
    app = demo(arts, port=free_port(), block=False, progress=lambda m: None)
    try:
        yield app.local_url
    finally:
        app.close()


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


def test_type_click_and_read_the_sentiment(browser, url):
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    hosts, failures = set(), []
    page.on("request", lambda r: hosts.add(urlparse(r.url).hostname) if r.url.startswith(("http", "ws")) else None)
    page.on("pageerror", lambda e: failures.append(str(e)))
    page.goto(url, wait_until="networkidle")

    page.locator("#classify-text textarea").fill("a witty, moving and beautifully acted film")
    page.locator("#classify-button").click()
    result = page.locator("#classify-label [data-testid='label-output-value']")
    result.wait_for(timeout=20_000)
    assert result.inner_text().strip() in {"negative", "positive"}
    page.locator("#classify-message", has_text="on cpu").wait_for(timeout=10_000)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # bad input: a readable line in the page, and the page keeps working
    page.locator("#classify-text textarea").fill("   ")
    page.locator("#classify-button").click()
    page.locator("#classify-message", has_text="empty").wait_for(timeout=10_000)
    assert "Traceback" not in page.content()

    page.wait_for_load_state("networkidle")
    assert hosts and hosts <= LOCAL, f"the page fetched from outside: {sorted(hosts - LOCAL)}"
    assert not failures, failures
    page.close()


def test_similarity_tab_in_the_browser(browser, url):
    page = browser.new_page()
    page.goto(url, wait_until="networkidle")
    page.get_by_role("tab", name="Similarity").click()
    page.locator("#embed-a textarea").fill("A man is playing a guitar.")
    page.locator("#embed-b textarea").fill("A man is playing a guitar.")
    page.locator("#embed-button").click()
    page.locator("#embed-message", has_text="variant").wait_for(timeout=20_000)
    assert float(page.locator("#embed-similarity input").input_value()) == pytest.approx(1.0, abs=1e-3)
    page.close()


def test_generation_streams_into_the_page(browser, url):
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    page.goto(url, wait_until="networkidle")
    page.get_by_role("tab", name="Generation").click()
    page.locator("#generate-prompt textarea").fill("ROMEO:")
    page.locator("#generate-button").click()
    page.locator("#generate-message", has_text="pieces in").wait_for(timeout=30_000)
    assert page.locator("#generate-output textarea").input_value()
    page.screenshot(path=str(SCREENSHOT.with_name("demo-generate.png")), full_page=True)
    page.close()
