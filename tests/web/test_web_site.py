"""build_site(), serve_site() and `toolchain web` without a browser: the files a site holds, what is refused
before anything is written, atomic replacement, the headers that make the page cross-origin isolated, and
the Gradio card's link to a served site."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from toolchain.runtime import read_manifest
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.variants import sha256_file


@pytest.fixture(scope="module")
def npm():
    from suite_policy import require_tool

    return require_tool("npm", install="apt-get install npm; the site vendors onnxruntime-web from the npm registry")


@pytest.fixture(scope="module")
def built(npm, tiny_artifact, classifier_artifact, tmp_path_factory):
    from toolchain.web import build_site

    out = tmp_path_factory.mktemp("web") / "site"
    return out, build_site([tiny_artifact("bert"), classifier_artifact], out)


def retask(src: Path, dst: Path, task: str) -> Path:
    """A copy of artifact SRC whose manifest names TASK (a task the page does not run)."""
    shutil.copytree(src, dst)
    data = json.loads((dst / "manifest.json").read_text())
    data["task"] = task
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst


def test_the_site_holds_the_page_the_runtime_and_each_models_files(built, tiny_artifact, classifier_artifact):
    out, site = built
    for name in ("index.html", "app.js", "toolchain-web.js", "vendor/ort.wasm.min.mjs", "vendor/ort-wasm-simd-threaded.wasm",
                 "vendor/ort-wasm-simd-threaded.mjs", "vendor/tokenizers.min.mjs", "vendor/NOTICE.txt"):
        assert (out / name).is_file(), name
    assert (out / "vendor" / "ort-wasm-simd-threaded.wasm").read_bytes()[:4] == b"\0asm"
    sw = (out / "sw.js").read_text()
    assert "__BUILD__" not in sw and site["build"] in sw  # a rebuilt site gets a cache of its own
    # the service worker caches site.json's list: it must be every file, so a second visit needs no server
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert sorted([*site["files"], "site.json"]) == on_disk
    assert json.loads((out / "site.json").read_text()) == site
    for art, entry in zip([tiny_artifact("bert"), classifier_artifact], site["models"]):
        manifest = read_manifest(art)
        folder = out / entry["path"]
        web = json.loads((folder / "web.json").read_text())
        assert entry["variant"] == web["variant"] == "fp32"  # `auto` on CPU: these have only fp32
        assert entry["artifact"] == str(art.resolve())
        assert sha256_file(folder / web["file"]) == web["sha256"] == manifest.variant("fp32").sha256
        assert (folder / "tokenizer.json").read_bytes() == (art / "tokenizer.json").read_bytes()
        assert json.loads((folder / "manifest.json").read_text())["task"] == web["task"] == manifest.task
    assert [json.loads((out / m["path"] / "web.json").read_text())["output"] for m in site["models"]] == \
        ["last_hidden_state", "logits"]


def test_a_task_the_page_cannot_run_is_refused_in_one_sentence_before_any_write(npm, classifier_artifact, tmp_path):
    from toolchain.web import build_site

    art = retask(classifier_artifact, tmp_path / "gen", "text-generation")
    with pytest.raises(ToolchainError) as err:
        build_site([classifier_artifact, art], tmp_path / "site")
    message = str(err.value)
    assert "text-generation" in message and "feature-extraction and text-classification" in message
    assert message.count(". ") == 0 and "\n" not in message
    assert not (tmp_path / "site").exists()


def test_other_refusals_name_the_fix(npm, classifier_artifact, tmp_path):
    from toolchain.web import build_site

    with pytest.raises(ToolchainError, match="choose one of"):
        build_site([classifier_artifact], tmp_path / "a", variant="int4")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ToolchainError, match="non-empty directory"):
        build_site([classifier_artifact], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    damaged = tmp_path / "damaged"
    shutil.copytree(classifier_artifact, damaged)
    with open(damaged / "model.onnx", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff\xff")
    with pytest.raises(ToolchainError, match="sha256"):
        build_site([damaged], tmp_path / "b")


def test_a_failed_build_leaves_the_previous_site_untouched(npm, built, classifier_artifact, tmp_path, monkeypatch):
    from toolchain.web import build_site, site as site_module

    out = tmp_path / "site"
    first = build_site([classifier_artifact], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.stat().st_size < 100_000}
    writes = []

    def fail_on_second(p, folder, progress):
        writes.append(p.name)
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return real(p, folder, progress)

    real = site_module._write_model
    monkeypatch.setattr(site_module, "_write_model", fail_on_second)
    with pytest.raises(ToolchainError, match="no space left"):
        build_site([classifier_artifact, classifier_artifact], out)
    assert writes == ["bert-text-classification", "bert-text-classification-2"]
    assert {p: p.read_bytes() for p in before} == before
    assert json.loads((out / "site.json").read_text())["build"] == first["build"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temp dir left beside it


def test_without_npm_the_build_says_how_to_install_it(classifier_artifact, tmp_path, monkeypatch):
    from toolchain.web import SiteSettings, build_site, vendor

    demo = tmp_path / "demo"
    demo.mkdir()
    for name in (*vendor.PAGE_FILES, "package.json", "package-lock.json"):
        shutil.copyfile(vendor.DEMO_DIR / name, demo / name)
    monkeypatch.setattr(vendor.shutil, "which", lambda name: None)
    with pytest.raises(ToolchainError, match=r"npm is not installed.*apt-get install npm"):
        build_site([classifier_artifact], tmp_path / "site", settings=SiteSettings(demo_dir=demo))
    assert not (tmp_path / "site").exists()


def test_the_server_sends_the_isolation_headers_and_wasm_type(built, tmp_path):
    from toolchain.web import serve_site

    out, _ = built
    server = serve_site(out, block=False)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url) as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert b"app.js" in response.read()
        with urllib.request.urlopen(server.url + "vendor/ort-wasm-simd-threaded.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
        with urllib.request.urlopen(server.url + "vendor/ort.wasm.min.mjs") as response:
            assert response.headers["Content-Type"] == "text/javascript"
    finally:
        server.close()
    with pytest.raises(ToolchainError, match="not a site built by `toolchain web`"):
        serve_site(tmp_path, block=False)


def test_the_cli_writes_a_site_and_refuses_in_one_line(npm, classifier_artifact, tmp_path, capsys):
    from toolchain.cli import main

    assert main(["web", str(classifier_artifact), "--out", str(tmp_path / "site")]) == 0
    assert "bert-text-classification (text-classification, fp32)" in capsys.readouterr().out
    art = retask(classifier_artifact, tmp_path / "vit", "image-classification")
    assert main(["web", str(art), "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "image-classification" in err and len(err.splitlines()) == 1


def test_the_gradio_card_links_only_the_artifacts_a_served_site_holds(built, classifier_artifact, tmp_path):
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
    from toolchain.serve.card import card, web_links
    from toolchain.serve.context import Artifact
    from toolchain.web import serve_site

    out, _ = built
    arts = [Artifact(str(classifier_artifact), read_manifest(classifier_artifact)),
            Artifact("other", read_manifest(shutil.copytree(classifier_artifact, tmp_path / "other")))]
    server = serve_site(out, block=False)
    try:
        links = web_links(server.url, arts)
    finally:
        server.close()
    assert links == {str(classifier_artifact): f"{server.url}?model=bert-text-classification"}
    assert links[str(classifier_artifact)] in card(arts[0], links[str(classifier_artifact)])
    assert "in your browser" not in card(arts[0])
    with pytest.raises(ToolchainError, match="no site built by `toolchain web` answers"):
        web_links(server.url, arts)  # stopped
