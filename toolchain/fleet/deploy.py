"""Ray Serve deployment: N replicas of one FastAPI ``Gateway`` that speaks the OpenAI-compatible API
(openai_api.py) and holds every served artifact, loaded once per replica (``ModelHost``).

Why Ray Serve and not a home-made server: replicas, request routing between them, restarting a dead
replica, placing replicas across the nodes of a cluster and batching concurrent requests are what it
does; the same code runs on one laptop (a local Ray started here) and on a cluster (``address="auto"``
or ``ray://head:10001``). Encoders batch concurrent requests with ``@serve.batch`` (max batch size and
wait time from ServeSettings): one runtime call embeds the texts of many requests. Requests are checked
before the model is asked, and replicas only call the public runtime API.

Why the models live in the HTTP replica and not in deployments of their own behind it: a separate model
deployment costs every request one more Ray call (the gateway's handle call, its serialization and the
replica's request loop). Measured here (MiniLM int8, 1 text per request, 32 clients on the same 2 busy
cores): the service's CPU per request fell from 19.2 ms to 12.4-13.1 ms with the models in the gateway (the
model's share 3.8 ms; Ray's Python HTTP proxy 4.1-4.9 ms), and to 5.1 ms with --haproxy, where the replica
answers HTTP itself. Replicas still spread over the nodes of a cluster and a dead one is still replaced by
Serve; each replica reserves ``cpus_per_replica`` per artifact it holds.
"""


import asyncio
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve

from toolchain.fleet import openai_api as api
from toolchain.fleet.settings import ServeSettings
from toolchain.runtime import read_manifest
from toolchain.runtime.errors import ToolchainError

APP_NAME = "toolchain"


try:  # optional: installed with Ray Serve's dependencies here, but not required by the project
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None


def _json(body: dict[str, Any]) -> Response:
    """BODY as a JSON response, serialized once. A returned dict would go through FastAPI's jsonable_encoder
    first, which walks every float of every embedding: 1.0 ms per 384-d vector against 0.45 ms for json.dumps
    alone and 0.02 ms for orjson (measured here), on the gateway that every request passes."""
    if orjson is None:
        return JSONResponse(body)
    return Response(orjson.dumps(body), media_type="application/json")


_END = object()  # the end of a streamed generation


def _runtime_reason(exc: BaseException) -> str | None:
    """The one-sentence message of a runtime error (Ray wraps one raised in another process), else None."""
    cause = getattr(exc, "cause", None) or exc
    return str(cause).splitlines()[0] if isinstance(cause, ToolchainError) else None


class ModelHost:
    """One artifact in one replica, loaded once with ``toolchain.runtime.load``; runs each task's method and
    counts the batch sizes it formed (texts per runtime call), which the load benchmark replays in-process.

    Encoder batches run on one thread of their own (``batch_thread``) and two may be in flight
    (``max_concurrent_batches=2``): the next batch already waits in that thread's queue when one ends, so the
    model never idles while the event loop hands it work, and still runs one batch at a time on the ONNX Runtime
    threads the replica reserved. Measured (loadbench --haproxy, MiniLM int8, 1 text per request, 32 clients):
    the model's thread was busy 80% of the time with one batch in flight on the loop's default executor, 95-97%
    this way."""

    def __init__(self, path: str, variant: str, threads: int | None, max_batch_size: int, batch_wait_s: float):
        from toolchain.runtime import load

        self.model = load(path, variant=variant, threads=threads)
        self.task = self.model.info()["task"]
        self.batches: Counter[int] = Counter()
        self.batch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches")
        self.encode.set_max_batch_size(max_batch_size)
        self.encode.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=2)
    async def encode(self, requests: list[list[Any]]) -> list[Any]:
        """Embed or classify the texts (or images) of many concurrent requests in one runtime call, split back
        per request."""
        self.batches[sum(len(texts) for texts in requests)] += 1  # here, on the event loop: one writer
        return await asyncio.get_running_loop().run_in_executor(self.batch_thread, self._encode_all, requests)

    def _encode_all(self, requests: list[list[Any]]) -> list[Any]:
        """Texts (embed, classify) or image bytes (an image classifier's classify): one call for them all."""
        run = self.model.embed if self.task == "feature-extraction" else self.model.classify
        flat = [t for texts in requests for t in texts]
        try:
            out = run(flat)
        except ToolchainError:  # one bad request must not fail the others batched with it
            return [self._one(run, texts) for texts in requests]
        results, start = [], 0
        for texts in requests:
            results.append(out[start : start + len(texts)])
            start += len(texts)
        return results

    @staticmethod
    def _one(run, texts: list[str]) -> Any:
        try:
            return run(texts)
        except ToolchainError as exc:
            return {"error": str(exc).splitlines()[0]}

    async def translate(self, texts: list[str], max_tokens: int, beam_size: int) -> Any:
        def work():
            try:
                return self.model.translate(texts, max_new_tokens=max_tokens, beam_size=beam_size)
            except ToolchainError as exc:
                return {"error": str(exc).splitlines()[0]}

        return await asyncio.get_running_loop().run_in_executor(None, work)

    async def caption(self, images: list[bytes], max_tokens: int, beam_size: int) -> Any:
        def work():
            try:
                return self.model.caption(images, max_new_tokens=max_tokens, beam_size=beam_size)
            except ToolchainError as exc:
                return {"error": str(exc).splitlines()[0]}

        return await asyncio.get_running_loop().run_in_executor(None, work)

    async def complete(self, prompt: str, options: dict[str, Any]) -> Any:
        """{"text", "usage"}: the completion and the runtime's token counts and finish reason for it."""
        def work():
            usage: dict[str, Any] = {}
            try:
                return {"text": self.model.generate(prompt, usage=usage, **options), "usage": usage}
            except ToolchainError as exc:
                return {"error": str(exc).splitlines()[0]}

        return await asyncio.get_running_loop().run_in_executor(None, work)

    async def stream(self, prompt: str, options: dict[str, Any]):
        """The pieces of one greedy or sampled generation, each as soon as the runtime yields it, then one dict:
        the runtime's usage (token counts, finish reason) for the last event."""
        loop = asyncio.get_running_loop()
        usage: dict[str, Any] = {}
        pieces = await loop.run_in_executor(
            None, lambda: iter(self.model.generate(prompt, stream=True, usage=usage, **options)))
        while (piece := await loop.run_in_executor(None, next, pieces, _END)) is not _END:
            yield piece
        yield {"usage": usage}


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


app = FastAPI(title="toolchain", docs_url=None, redoc_url=None)


DEPLOYMENT = "gateway"


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256, health_check_period_s=2)
@serve.ingress(app)
class Gateway:
    """One replica of the HTTP API: checks each request (openai_api.py), asks the model it holds, shapes the
    answer."""

    def __init__(self, served: dict[str, tuple[str, str]], variant: str, threads: int | None, max_batch_size: int,
                 batch_wait_s: float, limits: dict[str, int]):
        self.models = {name: ModelHost(path, variant, threads, max_batch_size, batch_wait_s)
                       for name, (path, _) in served.items()}
        self.tasks, self.limits = {name: task for name, (_, task) in served.items()}, api.Limits(**limits)
        self.created = int(time.time())

    def info(self) -> dict[str, Any]:
        """This replica's process, node and models (each model's runtime info() and the batch sizes it formed
        so far, texts per runtime call -> calls): for tests and the load benchmark, through a deployment handle."""
        models = {name: {**host.model.info(), "batches": dict(host.batches)} for name, host in self.models.items()}
        return {"pid": os.getpid(), "node": _node_id(), "models": models}

    async def _body(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise api.ApiError(413, f"the request body has {declared} bytes, more than the "
                                    f"{self.limits.max_body_bytes} allowed; send fewer or shorter texts.")
        raw = await request.body()
        if len(raw) > self.limits.max_body_bytes:
            raise api.ApiError(413, f"the request body has {len(raw)} bytes, more than the "
                                    f"{self.limits.max_body_bytes} allowed; send fewer or shorter texts.")
        try:
            return json.loads(raw)
        except ValueError:
            raise api.ApiError(400, "the request body is not valid JSON; send a JSON object with Content-Type "
                                    "application/json.") from None

    async def _guard(self, work) -> Any:
        """Run a route; a dict answer is serialized once (_json), refusals become OpenAI-shaped JSON errors of
        one sentence, never a traceback."""
        try:
            out = await work()
            return _json(out) if isinstance(out, dict) else out
        except api.ApiError as exc:
            return JSONResponse(api.error_body(exc), status_code=exc.status)
        except Exception as exc:  # noqa: BLE001  the client gets one sentence; the replica's log has the rest
            reason = _runtime_reason(exc)
            err = api.ApiError(400, reason) if reason else api.ApiError(
                503, f"the model replica failed ({type(exc).__name__}); retry the request.", "server_error")
            return JSONResponse(api.error_body(err), status_code=err.status)

    @staticmethod
    def _checked(result: Any) -> Any:
        if isinstance(result, dict) and "error" in result:
            raise api.ApiError(400, result["error"])
        return result

    @app.get("/health")
    @app.get("/v1/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "models": self.tasks}

    @app.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return api.models_response(self.tasks, self.created)

    @app.post("/v1/embeddings")
    async def embeddings(self, request: Request):
        async def work():
            req = api.parse_embeddings(await self._body(request), self.tasks, self.limits)
            vectors = self._checked(await self.models[req.model].encode(req.input))
            return api.embeddings_response(req, vectors)
        return await self._guard(work)

    @app.post("/v1/classify")
    async def classify(self, request: Request):
        async def work():
            req = api.parse_texts(await self._body(request), self.tasks, self.limits, "/v1/classify")
            return api.classify_response(req, self._checked(await self.models[req.model].encode(req.input)))
        return await self._guard(work)

    @app.post("/v1/classify_image")
    async def classify_image(self, request: Request):
        async def work():
            req = api.parse_classify_image(await self._body(request), self.tasks, self.limits)
            return api.classify_response(req, self._checked(await self.models[req.model].encode(req.images)))
        return await self._guard(work)

    @app.post("/v1/translate")
    async def translate(self, request: Request):
        async def work():
            req = api.parse_texts(await self._body(request), self.tasks, self.limits, "/v1/translate")
            out = await self.models[req.model].translate(req.input, req.max_tokens, req.beam_size)
            return api.translate_response(req, self._checked(out))
        return await self._guard(work)

    @app.post("/v1/caption")
    async def caption(self, request: Request):
        async def work():
            req = api.parse_caption(await self._body(request), self.tasks, self.limits)
            out = await self.models[req.model].caption(req.images, req.max_tokens, req.beam_size)
            return api.caption_response(req, self._checked(out))
        return await self._guard(work)

    @app.post("/v1/completions")
    async def completions(self, request: Request):
        async def work():
            req = api.parse_completion(await self._body(request), self.tasks, self.limits)
            host = self.models[req.model]
            if not req.stream:
                done = self._checked(await host.complete(req.prompt, req.options()))
                return api.completion_response(req, done["text"], done["usage"])
            pieces = host.stream(req.prompt, req.options())
            first = await pieces.__anext__()  # a refusal (a bad option) is still a 4xx, before any event is sent
            return StreamingResponse(self._events(req, first, pieces), media_type="text/event-stream")
        return await self._guard(work)

    @staticmethod
    async def _events(req: api.CompletionRequest, first: Any, pieces):
        """Each text piece as an event; the replica's closing usage dict becomes the last event's finish_reason."""
        usage: dict[str, Any] = {}
        piece = first
        while True:
            if isinstance(piece, dict):
                usage = piece["usage"]
            elif piece:
                yield api.completion_chunk(req, piece)
            try:
                piece = await pieces.__anext__()
            except StopAsyncIteration:
                break
        yield api.completion_chunk(req, "", usage=usage)
        yield api.STREAM_END


def model_names(dirs: list[str | Path]) -> dict[str, tuple[Path, str]]:
    """name (the directory's name) -> (path, task) for each artifact; refuses duplicates and unserved tasks."""
    out: dict[str, tuple[Path, str]] = {}
    for d in dirs:
        path = Path(d).resolve()
        task = read_manifest(path).task
        if task not in api.ROUTES:
            raise ToolchainError(f"{d} is a {task} artifact, which `toolchain serve` has no route for; serve one of "
                                 f"{', '.join(api.ROUTES)}.")
        if path.name in out:
            raise ToolchainError(f"two artifacts are named {path.name!r} ({out[path.name][0]} and {path}); "
                                 "models are named after their directory, so rename one.")
        out[path.name] = (path, task)
    return out


def build_app(dirs: list[str | Path], settings: ServeSettings):
    """The Ray Serve application: SETTINGS.replicas Gateway replicas, each holding every artifact."""
    served = {name: (str(path), task) for name, (path, task) in model_names(dirs).items()}
    threads = max(1, int(settings.cpus_per_replica)) if settings.cpus_per_replica else None
    cpus = settings.cpus_per_replica * len(served)
    return Gateway.options(name=DEPLOYMENT, num_replicas=settings.replicas, ray_actor_options={"num_cpus": cpus}).bind(
        served, settings.variant, threads, settings.max_batch_size, settings.batch_wait_s, settings.limits_dict())
