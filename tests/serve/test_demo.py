"""The Gradio demo through its API (gradio_client): real values from tiny artifacts, readable errors."""

from __future__ import annotations

import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
gradio_client = pytest.importorskip("gradio_client", reason="the API tests need gradio_client")

LABELS = {"negative", "positive"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def classifier_with_variants(classifier_artifact, tmp_path_factory) -> Path:
    """The tiny classifier plus a real int8 variant and a (short) bench, in a copy of its own."""
    from toolchain.bench.core import bench
    from toolchain.variants.quantize import quantize

    out = tmp_path_factory.mktemp("demo") / "sentiment"
    shutil.copytree(classifier_artifact, out)
    assert quantize(out, "int8-dynamic", limit=32).passed
    bench(out, batches=(1,), seqs=(16,), vs_pytorch=False, real=False, runs=3)
    return out


@pytest.fixture(scope="module")
def served(classifier_with_variants, tiny_artifact):
    from toolchain.serve.app import demo

    messages = []
    app = demo([classifier_with_variants, tiny_artifact("bert")], port=free_port(), block=False,
               progress=messages.append)
    try:
        yield app, gradio_client.Client(app.local_url, verbose=False), messages
    finally:
        app.close()


@pytest.fixture
def client(served):
    return served[1]


def test_listens_on_localhost_and_names_its_endpoints(served):
    app, client, messages = served
    assert app.local_url.startswith("http://127.0.0.1:")
    assert any("serving 2 artifact(s)" in m for m in messages)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/classify", "/embed", "/search", "/compare", "/manifest"} <= set(endpoints)


def test_classify_gives_a_label_and_scores(client):
    label, message = client.predict("a witty, moving film", api_name="/classify")
    assert label["label"] in LABELS
    assert {c["label"] for c in label["confidences"]} == LABELS
    assert sum(c["confidence"] for c in label["confidences"]) == pytest.approx(1.0, abs=1e-5)
    assert "on **cpu**" in message and "⚠️" not in message


def test_classify_variant_picker(client):
    _, message = client.predict("dull", "int8", api_name="/classify")
    assert "variant **int8** (int8)" in message


def test_embed_similarity(client):
    same, message = client.predict("A man is playing a guitar.", "A man is playing a guitar.", api_name="/embed")
    assert same == pytest.approx(1.0, abs=1e-4)
    other, _ = client.predict("A man is playing a guitar.", "The stock market fell today.", api_name="/embed")
    assert -1.0 <= other < same
    assert "variant **fp32**" in message


def test_search_ranks_the_same_sentence_first(client):
    table, message = client.predict("the stock market fell today", "a cat sleeps\nthe stock market fell today\nrain",
                                    api_name="/search")
    rows = table["data"]
    assert [r[1] for r in rows][0] == "the stock market fell today"
    assert rows[0][0] == pytest.approx(1.0, abs=1e-4) and len(rows) == 3


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("   \n", "empty"),
    ("x" * 5_001, "5,001 characters"),
])
def test_bad_text_is_a_readable_message(client, text, words):
    label, message = client.predict(text, api_name="/classify")
    assert message.startswith("⚠️") and words in message and "Traceback" not in message
    assert not label or not label.get("label")
    similarity, message = client.predict(text, "fine", api_name="/embed")
    assert similarity is None and words in message


def test_unknown_variant_is_a_readable_message_and_the_server_keeps_serving(client):
    _, message = client.predict("fine", "int3", api_name="/classify")
    assert message.startswith("⚠️") and "int3" in message and "fp32" in message  # names the choices
    label, _ = client.predict("fine", api_name="/classify")
    assert label["label"] in LABELS


def test_the_api_serves_only_the_listed_artifacts(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"Value: /etc is not in the list of choices"):
        client.predict("fine", "auto", "/etc", api_name="/classify")


def test_over_long_token_sequence_is_truncated_with_a_note(client):
    label, message = client.predict("word " * 400, api_name="/classify")
    assert label["label"] in LABELS
    assert "Note:" in message and "truncated" in message


def test_concurrent_requests(client):
    texts = [f"sentence number {i} is rather good" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: client.predict(t, api_name="/classify"), texts))
        sims = list(pool.map(lambda t: client.predict(t, t, api_name="/embed"), texts))
    assert all(r[0]["label"] in LABELS for r in results)
    assert all(s[0] == pytest.approx(1.0, abs=1e-4) for s in sims)


def test_compare_two_variants_side_by_side(client):
    a, b, summary = client.predict("a witty, moving film", "fp32", "int8", api_name="/compare")
    assert (a["variant"], b["variant"]) == ("fp32", "int8")
    for side in (a, b):
        assert side["provider"] == "cpu" and side["latency_ms"] > 0
        assert side["output"]["label"] in LABELS
    assert "cosine" in summary and "latency" in summary


def test_compare_embeddings_of_another_artifact(client, tiny_artifact):
    a, b, summary = client.predict("hello", "fp32", "auto", str(tiny_artifact("bert")), api_name="/compare")
    assert a["output"]["dims"] == b["output"]["dims"] == 32
    assert "cosine 1.000000" in summary


def test_manifest_panel_shows_variants_gates_and_bench(client, classifier_with_variants):
    chart, card = client.predict(str(classifier_with_variants), api_name="/manifest")
    for words in ("| fp32 | fp32 |", "| int8 | int8 |", "passed", "accuracy", "**bench** on cpu", "negative, positive"):
        assert words in card
    assert chart and Path(chart).read_bytes()[:4] == b"\x89PNG"


def test_cli_demo_defaults_to_localhost():
    from toolchain.cli.commands import build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.dirs, args.host, args.port) == ([], "127.0.0.1", None)
    args = build_parser().parse_args(["demo", "a", "b", "--host", "0.0.0.0", "--port", "7999"])
    assert (args.dirs, args.host, args.port) == (["a", "b"], "0.0.0.0", 7999)


def test_no_dir_builds_the_default_artifact_first(monkeypatch, tmp_path, classifier_artifact):
    import toolchain.pipeline.stages
    import toolchain.serve.policy as demo_mod

    built = []

    def fake_build(recipe, out=None, progress=print, **_):
        built.append(Path(recipe).name)
        shutil.copytree(classifier_artifact, out)
        return {"ok": True}

    monkeypatch.setattr(demo_mod, "DEFAULT_DIR", tmp_path / "dist" / "minilm")
    from toolchain.runtime import ToolchainError

    with pytest.raises(ToolchainError, match="pass an artifact DIR"):  # no builder: one sentence, nothing built
        demo_mod.default_artifact(print)
    monkeypatch.setattr(toolchain.pipeline.stages, "build", fake_build)
    messages = []
    from toolchain.cli.commands import default_build  # what `toolchain demo` passes in
    assert demo_mod.default_artifact(messages.append, default_build) == tmp_path / "dist" / "minilm"
    assert built == ["minilm.toml"] and "building it from" in messages[0]
    assert demo_mod.default_artifact(messages.append, default_build) == tmp_path / "dist" / "minilm"
    assert built == ["minilm.toml"]  # built once, reused after


def test_bad_artifact_is_a_toolchain_error(tmp_path):
    from toolchain.serve.app import demo
    from toolchain.runtime import ToolchainError

    with pytest.raises(ToolchainError, match="not an artifact directory"):
        demo([tmp_path / "nope"], block=False)


def serving(art: Path):
    """(ART, a client of a demo serving only it) for a module-scoped fixture; the demo closes after."""
    from toolchain.serve.app import demo

    app = demo([art], port=free_port(), block=False, progress=lambda m: None)
    try:
        yield art, gradio_client.Client(app.local_url, verbose=False)
    finally:
        app.close()


@pytest.fixture(scope="module")
def generation(tiny_decoder):
    yield from serving(tiny_decoder("llama")[1])


def test_generate_streams_the_runtimes_text(generation):
    from toolchain.runtime import load

    art, client = generation
    expected = load(art).generate("ROMEO:", max_new_tokens=8, temperature=0.0)
    job = client.submit("ROMEO:", 8, 0.0, api_name="/generate")
    text, message = job.result(timeout=60)
    assert text == expected and text
    assert len(job.outputs()) >= 3  # streamed: the first piece, more pieces, then the summary
    assert "to the first piece" in message and "pieces in" in message and "on **cpu**" in message


def test_generate_bad_input_and_compare(generation):
    _, client = generation
    text, message = client.predict("", api_name="/generate")
    assert text == "" and message.startswith("⚠️") and "empty" in message
    a, b, summary = client.predict("ROMEO:", "fp32", "fp32", api_name="/compare")
    assert a["output"]["continuation"] == b["output"]["continuation"] and "the same output" in summary
    assert a["provider"] == "cpu" and a["latency_ms"] > 0


@pytest.fixture(scope="module")
def translation(tiny_seq2seq):
    yield from serving(tiny_seq2seq[1])


def test_translate_serves_the_runtimes_output(translation):
    from toolchain.runtime import load

    art, client = translation
    assert "/translate" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for beams in (1, 3):
        expected = load(art).translate("the plot", max_new_tokens=6, beam_size=beams)
        text, message = client.predict("the plot", 6, beams, api_name="/translate")
        assert text == expected and text and "on **cpu**" in message


def test_translate_bad_input_and_compare(translation):
    _, client = translation
    text, message = client.predict("   ", api_name="/translate")
    assert text == "" and message.startswith("⚠️") and "empty" in message
    with pytest.raises(Exception, match="less than minimum value 1"):  # the slider's own check, before the runtime
        client.predict("the plot", 6, 0, api_name="/translate")
    a, b, summary = client.predict("the plot", "fp32", "fp32", api_name="/compare")
    assert a["output"]["translation"] == b["output"]["translation"] and "the same output" in summary
