"""The API's request checks and response shapes, without Ray; and `toolchain serve` refusing before Ray starts."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from toolchain.cli import main
from toolchain.fleet import ServeSettings
from toolchain.fleet import openai_api as api
from toolchain.runtime.errors import ToolchainError

MODELS = {"minilm": "feature-extraction", "llama": "text-generation", "sst2": "text-classification"}
LIMITS = api.Limits(max_inputs=4, max_chars=50, max_tokens=32)


def refusal(fn, *args) -> api.ApiError:
    with pytest.raises(api.ApiError) as info:
        fn(*args)
    err = info.value
    assert err.message.endswith(".") and "\n" not in err.message
    return err


def test_requests_are_checked_field_by_field():
    req = api.parse_embeddings({"model": "minilm", "input": "a cat", "encoding_format": "base64"}, MODELS, LIMITS)
    assert req.input == ["a cat"] and req.encoding_format == "base64"
    assert refusal(api.parse_embeddings, {"model": "gpt-4", "input": "x"}, MODELS, LIMITS).status == 404
    assert "use /v1/completions" in refusal(api.parse_embeddings, {"model": "llama", "input": "x"}, MODELS, LIMITS).message
    assert "more than the 4" in refusal(api.parse_embeddings, {"model": "minilm", "input": ["x"] * 5}, MODELS, LIMITS).message
    assert "dimensions" in refusal(api.parse_embeddings, {"model": "minilm", "input": "x", "dimensions": 8}, MODELS, LIMITS).message
    c = api.parse_completion({"model": "llama", "prompt": "hi", "max_tokens": 5, "temperature": 0, "stop": "\n"}, MODELS, LIMITS)
    assert c.options() == {"max_new_tokens": 5, "temperature": 0.0, "top_p": 1.0, "stop": ["\n"], "seed": None}
    assert "'max_tokens'" in refusal(api.parse_completion, {"model": "llama", "prompt": "hi", "max_tokens": 33}, MODELS, LIMITS).message
    assert "one prompt" in refusal(api.parse_completion, {"model": "llama", "prompt": ["a", "b"]}, MODELS, LIMITS).message
    assert "'stream'" in refusal(api.parse_completion, {"model": "llama", "prompt": "a", "stream": "yes"}, MODELS, LIMITS).message
    assert "JSON object" in refusal(api.parse_texts, ["x"], MODELS, LIMITS, "/v1/classify").message
    cap = api.parse_caption({"model": "cap", "image": "data:image/png;base64," + base64.b64encode(b"png").decode()},
                            {"cap": "image-to-text"}, LIMITS)
    assert cap.images == [b"png"] and cap.max_tokens == 32
    assert "not valid base64" in refusal(api.parse_caption, {"model": "cap", "image": "@@"}, {"cap": "image-to-text"},
                                         LIMITS).message


def test_classify_image_requests_are_checked():
    models = {"vit": "image-classification", "cap": "image-to-text", "sst2": "text-classification"}
    png = b"\x89PNG\r\n\x1a\n fake"
    req = api.parse_classify_image({"model": "vit", "image": [base64.b64encode(png).decode(), "data:image/png;base64,"
                                                              + base64.b64encode(b"two").decode()]}, models, LIMITS)
    assert req == api.ImagesRequest("vit", [png, b"two"])
    assert api.parse_classify_image({"model": "vit", "image": base64.b64encode(png).decode()}, models, LIMITS).images == [png]
    say = lambda body: refusal(api.parse_classify_image, body, models, LIMITS)  # noqa: E731
    assert "image[1] is not valid base64" in say({"model": "vit", "image": ["aGk=", "not base64!"]}).message
    assert "more than the 4" in say({"model": "vit", "image": ["aGk="] * 5}).message
    for bad in (None, [], [""], [7], {"url": "x"}):
        assert "'image' must be a base64 string" in say({"model": "vit", "image": bad}).message
    assert "use /v1/classify." in say({"model": "sst2", "image": "aGk="}).message  # a text model on the image route
    assert "use /v1/caption" in say({"model": "cap", "image": "aGk="}).message
    assert "use /v1/classify_image" in refusal(api.parse_texts, {"model": "vit", "input": "x"}, models, LIMITS,
                                               "/v1/classify").message
    assert say({"model": "nope", "image": "aGk="}).status == 404
    out = api.classify_response(req, [{"label": "circle", "score": 0.5}, {"label": "star", "score": 0.25}])
    assert out["data"][1] == {"object": "classification", "index": 1, "label": "star", "score": 0.25}
    assert {"route": "/v1/classify_image"}.items() <= api.models_response(models, 0)["data"][2].items()


def test_responses_in_the_openai_shape():
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    req = api.EmbeddingsRequest("minilm", ["a", "b"], "base64")
    data = api.embeddings_response(req, vectors)["data"]
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(data[1]["embedding"]), "<f4"), vectors[1])
    req = api.CompletionRequest("llama", "p")
    counts = {"prompt_tokens": [3], "completion_tokens": [16], "finish_reasons": ["length"]}
    chunk = api.completion_chunk(req, "piece", usage=counts)
    assert chunk.startswith("data: {") and chunk.endswith("\n\n") and '"finish_reason": "length"' in chunk
    assert '"finish_reason": null' in api.completion_chunk(req, "piece") and '"usage"' not in api.completion_chunk(req, "x")
    done = api.completion_response(req, "text", counts)
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 16, "total_tokens": 19}
    assert done["choices"][0]["finish_reason"] == "length"
    assert api.error_body(api.ApiError(400, "bad."))["error"]["message"] == "bad."
    with pytest.raises(ToolchainError, match="max_inputs"):
        api.Limits(max_inputs=0)
    with pytest.raises(ToolchainError, match="replicas"):
        ServeSettings(replicas=0)


def test_serve_cli_refuses_a_bad_dir_before_ray_starts(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and err.count("\n") == 1
    assert main(["serve", str(tmp_path), "--replicas", "0"]) == 2
    assert "replicas" in capsys.readouterr().err
