"""The HTTP API's requests and responses, in the OpenAI convention clients already speak (no Ray here).

Each ``parse_*`` takes a decoded JSON body and returns a checked request dataclass, or raises ApiError
with a status and ONE sentence naming the field, the value given and the fix; ``error_body`` is the
OpenAI-shaped JSON the client shows. Checking happens here, in the gateway, before a replica is asked:
a bad request never costs model time and never reaches the runtime as a traceback. The caps (inputs per
request, characters per input, tokens per completion, body size) are ``Limits``, set once at deploy time.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolchain.runtime.errors import ToolchainError

# The route each task of runtime/tasks.py answers on (a task added there without a route here is refused by serve).
ROUTES = {
    "feature-extraction": "/v1/embeddings",
    "text-classification": "/v1/classify",
    "text-generation": "/v1/completions",
    "text2text-generation": "/v1/translate",
    "image-to-text": "/v1/caption",
    "image-classification": "/v1/classify_image",
}


class ApiError(ToolchainError):
    """A request the API refuses: HTTP status and one sentence."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; more is a 400 (413 for the body), never a slow or dead replica."""

    max_inputs: int = 256  # texts per request
    max_chars: int = 20_000  # characters per text
    max_tokens: int = 512  # new tokens per completion or translation
    max_body_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_chars", "max_tokens", "max_body_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ToolchainError(f"Limits.{name} must be a positive integer, got {value!r}.")


def error_body(exc: ApiError) -> dict[str, Any]:
    """OpenAI's error shape: the official client raises BadRequestError etc. with this message."""
    return {"error": {"message": exc.message, "type": exc.kind, "param": None, "code": exc.status}}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _require_object(body: Any, route: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, f"the body of {route} must be a JSON object such as {{\"model\": ..., \"input\": ...}}, "
                            f"got {type(body).__name__}.")
    return body


def _model(body: dict[str, Any], models: dict[str, str], route: str) -> str:
    name = body.get("model")
    if not isinstance(name, str) or name not in models:
        served = ", ".join(sorted(models)) or "none"
        raise ApiError(404 if isinstance(name, str) else 400,
                       f"model {_show(name)} is not served here; use one of: {served} (GET /v1/models lists them).",
                       "not_found_error" if isinstance(name, str) else "invalid_request_error")
    wanted = ROUTES.get(models[name])
    if wanted != route:
        where = f"use {wanted}" if wanted else "it has no HTTP route yet"
        raise ApiError(400, f"model {name!r} is a {models[name]} model, which {route} does not serve; {where}.")
    return name


def _texts(value: Any, key: str, limits: Limits) -> list[str]:
    """A str or a non-empty list of non-empty str, within the caps."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ApiError(400, f"{key!r} must be a string or a non-empty list of strings, got {_show(value)}.")
    if len(items) > limits.max_inputs:
        raise ApiError(400, f"{key!r} has {len(items)} items, more than the {limits.max_inputs} allowed per request; "
                            "split it into several requests.")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            what = "token ids are not accepted" if isinstance(item, (int, list)) else f"got {type(item).__name__}"
            raise ApiError(400, f"{key}[{i}] must be a string ({what}); send the text itself.")
        if not item.strip():
            raise ApiError(400, f"{key}[{i}] is empty; give each item at least one non-blank character.")
        if len(item) > limits.max_chars:
            raise ApiError(400, f"{key}[{i}] has {len(item)} characters, more than the {limits.max_chars} allowed; "
                                "shorten or split it.")
    return items


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float, integer: bool = False) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"{key!r} must be {kind} from {low:g} to {high:g}, got {_show(value)}.")
    return value


def _only_one(body: dict[str, Any]) -> None:
    if body.get("n", 1) not in (1, None) or body.get("best_of", 1) not in (1, None):
        raise ApiError(400, "only n=1 and best_of=1 are served; send one request per completion wanted.")


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str
    input: list[str]
    encoding_format: str = "float"  # "float" or "base64" (the openai client asks for base64 by default)


@dataclass(frozen=True)
class TextsRequest:
    """/v1/classify and /v1/translate: texts plus the decoding options translation takes."""

    model: str
    input: list[str]
    max_tokens: int = 64
    beam_size: int = 1


@dataclass(frozen=True)
class CaptionRequest:
    """/v1/caption: images as base64 (PNG, JPEG, ...: what Pillow opens; the runtime checks their size)."""

    model: str
    images: list[bytes]
    max_tokens: int = 32
    beam_size: int = 1


@dataclass(frozen=True)
class ImagesRequest:
    """/v1/classify_image: images as base64, as /v1/caption takes them."""

    model: str
    images: list[bytes]


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompt: str
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    id: str = field(default_factory=lambda: "cmpl-" + uuid.uuid4().hex[:24])

    def options(self) -> dict[str, Any]:
        """The runtime's generate() keyword arguments."""
        return {"max_new_tokens": self.max_tokens, "temperature": float(self.temperature), "top_p": float(self.top_p),
                "stop": list(self.stop), "seed": self.seed}


def parse_embeddings(body: Any, models: dict[str, str], limits: Limits) -> EmbeddingsRequest:
    body = _require_object(body, "/v1/embeddings")
    name = _model(body, models, "/v1/embeddings")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, f"'encoding_format' must be 'float' or 'base64', got {_show(fmt)}.")
    if body.get("dimensions") is not None:
        raise ApiError(400, "'dimensions' is not supported: the model's embeddings have one size; leave it out.")
    return EmbeddingsRequest(name, _texts(body.get("input"), "input", limits), fmt)


def parse_texts(body: Any, models: dict[str, str], limits: Limits, route: str) -> TextsRequest:
    body = _require_object(body, route)
    name = _model(body, models, route)
    items = _texts(body.get("input"), "input", limits)
    return TextsRequest(name, items, _number(body, "max_tokens", 64, 1, limits.max_tokens, integer=True),
                        _number(body, "beam_size", 1, 1, 16, integer=True))


def _images(body: dict[str, Any], limits: Limits) -> list[bytes]:
    """'image': one base64 string (or a data: URL) or a non-empty list of them, within the count cap, decoded.
    Whether the bytes are an image, and its pixel count, the runtime checks (one sentence naming the image)."""
    value = body.get("image")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x for x in items):
        raise ApiError(400, f"'image' must be a base64 string or a non-empty list of them, got {_show(value)}.")
    if len(items) > limits.max_inputs:
        raise ApiError(400, f"'image' has {len(items)} items, more than the {limits.max_inputs} allowed per request; "
                            "split it into several requests.")
    images = []
    for i, item in enumerate(items):
        try:
            images.append(base64.b64decode(item.split(",", 1)[-1] if item.startswith("data:") else item, validate=True))
        except ValueError:
            raise ApiError(400, f"image[{i}] is not valid base64; send the file's bytes base64-encoded.") from None
        if not images[-1]:
            raise ApiError(400, f"image[{i}] decodes to no bytes; send the file's bytes base64-encoded.")
    return images


def parse_caption(body: Any, models: dict[str, str], limits: Limits) -> CaptionRequest:
    body = _require_object(body, "/v1/caption")
    name = _model(body, models, "/v1/caption")
    return CaptionRequest(name, _images(body, limits), _number(body, "max_tokens", 32, 1, limits.max_tokens, integer=True),
                          _number(body, "beam_size", 1, 1, 16, integer=True))


def parse_classify_image(body: Any, models: dict[str, str], limits: Limits) -> ImagesRequest:
    body = _require_object(body, "/v1/classify_image")
    name = _model(body, models, "/v1/classify_image")
    return ImagesRequest(name, _images(body, limits))


def parse_completion(body: Any, models: dict[str, str], limits: Limits) -> CompletionRequest:
    body = _require_object(body, "/v1/completions")
    name = _model(body, models, "/v1/completions")
    _only_one(body)
    prompts = _texts(body.get("prompt"), "prompt", limits)
    if len(prompts) != 1:
        raise ApiError(400, f"'prompt' has {len(prompts)} prompts; send one prompt per request.")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, f"'stop' must be a string or a list of up to 4 non-empty strings, got {_show(body.get('stop'))}.")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ApiError(400, f"'seed' must be an integer, got {_show(seed)}.")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"'stream' must be true or false, got {_show(stream)}.")
    return CompletionRequest(
        name, prompts[0], _number(body, "max_tokens", 16, 1, limits.max_tokens, integer=True),
        _number(body, "temperature", 1.0, 0.0, 2.0), _number(body, "top_p", 1.0, 0.0, 1.0), tuple(stop), seed, stream)


# -- responses -----------------------------------------------------------------------------------------
def _usage(counts: dict[str, Any] | None = None) -> dict[str, int]:
    """OpenAI's usage block from the runtime's generate(usage=...) counts (one prompt); zero where nothing is
    counted (embeddings: the runtime reports no token counts for encoders)."""
    prompt = int((counts or {}).get("prompt_tokens", [0])[0])
    completion = int((counts or {}).get("completion_tokens", [0])[0])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(counts: dict[str, Any] | None) -> str:
    """"stop" (EOS or a stop string) or "length" (max_tokens reached), as the runtime reports it."""
    return str((counts or {}).get("finish_reasons", ["stop"])[0])


def embeddings_response(req: EmbeddingsRequest, vectors: np.ndarray) -> dict[str, Any]:
    def encode(v: np.ndarray) -> Any:
        v = np.asarray(v, dtype="<f4")
        return base64.b64encode(v.tobytes()).decode("ascii") if req.encoding_format == "base64" else v.tolist()

    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": req.model, "usage": _usage()}


def classify_response(req: TextsRequest | ImagesRequest, results: list[dict[str, Any]]) -> dict[str, Any]:
    data = [{"object": "classification", "index": i, **r} for i, r in enumerate(results)]
    return {"object": "list", "data": data, "model": req.model}


def translate_response(req: TextsRequest, texts: list[str]) -> dict[str, Any]:
    data = [{"object": "translation", "index": i, "text": t} for i, t in enumerate(texts)]
    return {"object": "list", "data": data, "model": req.model}


def caption_response(req: CaptionRequest, texts: list[str]) -> dict[str, Any]:
    data = [{"object": "caption", "index": i, "text": t} for i, t in enumerate(texts)]
    return {"object": "list", "data": data, "model": req.model}


def completion_response(req: CompletionRequest, text: str, counts: dict[str, Any] | None = None) -> dict[str, Any]:
    """COUNTS: the runtime's generate(usage=...) dict for this prompt."""
    return {"id": req.id, "object": "text_completion", "created": int(time.time()), "model": req.model,
            "choices": [{"index": 0, "text": text, "finish_reason": _finish_reason(counts), "logprobs": None}],
            "usage": _usage(counts)}


def completion_chunk(req: CompletionRequest, piece: str, usage: dict[str, Any] | None = None) -> str:
    """One server-sent event of a streamed completion; the last one (USAGE given: the runtime's counts) carries
    finish_reason and the usage block."""
    import json

    last = usage is not None
    chunk = {"id": req.id, "object": "text_completion", "created": int(time.time()), "model": req.model,
             "choices": [{"index": 0, "text": piece, "finish_reason": _finish_reason(usage) if last else None,
                          "logprobs": None}]}
    if last:
        chunk["usage"] = _usage(usage)
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


STREAM_END = "data: [DONE]\n\n"


def models_response(models: dict[str, str], created: int) -> dict[str, Any]:
    data = [{"id": name, "object": "model", "created": created, "owned_by": "toolchain", "task": task,
             "route": ROUTES.get(task)} for name, task in sorted(models.items())]
    return {"object": "list", "data": data}
