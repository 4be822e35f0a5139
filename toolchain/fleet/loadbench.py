"""`python -m toolchain.fleet.loadbench DIR`: the serve target measured the same way every time.

Starts `toolchain serve` on DIR (an encoder) in a local Ray, sends REQUESTS embedding requests from CLIENTS
threads (one keep-alive HTTP connection per thread), checks every answer against the
runtime's, reads the batch sizes the replicas formed (texts per runtime call), takes the service down, and
runs the in-process baselines on as many threads as the replicas have together: the runtime's embed() on
the same texts with the batch sizes the service formed (``ratio``, the target: >= 0.8x, p99 <= 3x p50 at
32 clients), and one call per request (INPUTS_PER_REQUEST texts each, before and after the service, so a
machine whose load changed in between shows as two different baselines; ``ratio_per_request``). CPU per
request is split: the service's processes (Ray's, all descendants of this one) and this process (the
clients, plus the Ray driver idling in it), since the clients share the machine's cores with the service; for
the same reason the client threads run at the lowest CPU priority (``--client-nice``, default 19).

Why a separate process of clients and not a Ray-side generator: the client is what users run, an HTTP
client over keep-alive connections; it shares this machine's cores with the service, which the JSON line
states (cpu count, load average) so a figure from a busy machine reads as one.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np

from toolchain.fleet.openai_api import Limits
from toolchain.fleet.settings import ServeSettings
from toolchain.runtime import read_manifest
from toolchain.runtime.errors import ToolchainError

WORDS = ("the film was a delight from start to finish with a witty script and a cast that shines while "
         "the plot dragged on for an hour of dull scenes in the rain before a moving ending").split()
DISTINCT = 256  # distinct requests; the load cycles through them


@dataclass(frozen=True)
class LoadSettings:
    """The load: how many requests, from how many concurrent clients, with how many texts each."""

    requests: int = 2000
    clients: int = 32
    inputs_per_request: int = 1
    encoding: str = "base64"  # what the official openai client asks for by default; "float": JSON lists
    warmup: int = 64  # requests sent (and not timed) before the load, so no replica starts cold
    atol: float = 1e-4  # an answer further than this from the runtime's is wrong
    baseline_threads: int | None = None  # None: the replicas' threads together
    client_nice: int | None = 19  # the client threads' CPU niceness (Linux); None: this process's own

    def __post_init__(self) -> None:
        for name in ("requests", "clients", "inputs_per_request"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ToolchainError(f"LoadSettings.{name} must be a whole number of at least 1, got {value!r}.")
        if self.encoding not in ("float", "base64"):
            raise ToolchainError(f"--encoding must be float or base64, got {self.encoding!r}.")
        nice = self.client_nice
        if nice is not None and (not isinstance(nice, int) or isinstance(nice, bool) or not 0 <= nice <= 19):
            raise ToolchainError(f"--client-nice must be a niceness from 0 to 19, got {nice!r}.")


def lower_priority(nice: int | None) -> None:
    """Give the calling thread CPU niceness NICE (Linux: niceness is per thread). The clients stand for machines
    elsewhere: on the service's own cores they run last, so they do not take CPU from the replicas they measure
    (which Ray starts at niceness 15). Raising niceness needs no privilege; elsewhere than Linux nothing changes."""
    if nice is not None and sys.platform.startswith("linux"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(nice, os.getpriority(os.PRIO_PROCESS, 0)))


def make_requests(n: int, per_request: int) -> list[list[str]]:
    """N distinct requests of PER_REQUEST texts, 6 to 30 words each (deterministic)."""
    out = []
    for i in range(n):
        texts = []
        for j in range(per_request):
            k = i * per_request + j
            length = 6 + (k * 7) % 25
            texts.append(" ".join(WORDS[(k * 3 + w * (1 + k % 5)) % len(WORDS)] for w in range(length)) + f" {k}")
        out.append(texts)
    return out


def stats(latencies: list[float], wall: float) -> dict[str, float]:
    lat = np.asarray(latencies) * 1000
    return {"rps": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2)}


def tree_cpu_s() -> float | None:
    """CPU seconds (user + system) so far of this process and its descendants: the local Ray's processes
    (raylet, proxy, replicas, HAProxy) and not another user's, read from /proc; None without /proc. On a
    busy machine CPU per request is the steadier figure: requests/s also measure the neighbours."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    mine, todo = {os.getpid()}, [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in mine:
                mine.add(child)
                todo.append(child)
    return sum(cpu.get(pid, 0.0) for pid in mine)


def baseline(model, requests: list[list[str]], total: int) -> dict[str, float]:
    """The runtime in this process: embed() on each request's texts in turn, TOTAL requests (cycled)."""
    latencies = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(total):
        t = time.perf_counter()
        model.embed(requests[i % len(requests)])
        latencies.append(time.perf_counter() - t)
    out = stats(latencies, time.perf_counter() - t0)
    return {**out, "cpu_ms_per_request": round((time.process_time() - cpu0) / total * 1000, 2)}


def formed_batches(model_name: str, replicas: int) -> Counter[int]:
    """Texts per runtime call -> calls, summed over the service's replicas so far (each counts its own)."""
    from toolchain.fleet.cluster import replica_infos

    total: Counter[int] = Counter()
    for info in replica_infos(replicas).values():
        total.update({int(k): v for k, v in info["models"][model_name]["batches"].items()})
    return total


def replay(model, requests: list[list[str]], batches: Counter[int], per_request: int) -> dict[str, Any]:
    """The runtime in this process on BATCHES (texts per call -> calls, what the service formed), in a fixed
    shuffled order, over the requests' texts (cycled): requests/s as texts/s divided by PER_REQUEST."""
    sizes = sorted(batches.elements())
    random.Random(0).shuffle(sizes)
    texts = [t for r in requests for t in r]
    t0, cpu0, at = time.perf_counter(), time.process_time(), 0
    for size in sizes:
        model.embed([texts[(at + j) % len(texts)] for j in range(size)])
        at += size
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = at / per_request
    return {"rps": round(n / wall, 1) if wall else 0.0, "calls": len(sizes),
            "mean_batch": round(at / max(1, len(sizes)), 2), "cpu_ms_per_request": round(cpu / max(n, 1) * 1000, 2)}


def decode(item: dict[str, Any]) -> np.ndarray:
    emb = item["embedding"]
    return np.frombuffer(base64.b64decode(emb), dtype="<f4") if isinstance(emb, str) else np.asarray(emb, np.float32)


def http_load(url: str, name: str, requests: list[list[str]], want: list[np.ndarray], load: LoadSettings,
              total: int) -> dict[str, Any]:
    """TOTAL requests from LOAD.clients threads, each with its own keep-alive connection; latencies, wrong and
    failed answers (a non-200 or a broken body is failed; an answer off the runtime's by more than atol, wrong).

    The clients are the standard library's HTTP/1.1 connection with the request bodies encoded once: they share
    the service's cores here, and httpx cost 1.3-1.5 ms of CPU per request against 0.4-0.5 for this (measured)."""
    counter, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []
    wrong, failed = [0], [0]
    bodies = [json.dumps({"model": name, "input": texts, "encoding_format": load.encoding}).encode()
              for texts in requests]
    where = urlsplit(url)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}

    def client() -> None:
        lower_priority(load.client_nice)
        http = HTTPConnection(where.hostname, where.port, timeout=120)
        while (i := next(counter)) < total:
            k = i % len(requests)
            t = time.perf_counter()
            try:
                http.request("POST", "/v1/embeddings", body=bodies[k], headers=headers)
                r = http.getresponse()
                data = r.read()
                got = np.stack([decode(d) for d in json.loads(data)["data"]]) if r.status == 200 else None
            except (OSError, HTTPException, ValueError, KeyError):
                got = None
                http.close()  # a fresh connection for the next request
            spent = time.perf_counter() - t
            with lock:
                latencies.append(spent)
                if got is None:
                    failed[0] += 1
                elif got.shape != want[k].shape or not np.allclose(got, want[k], atol=load.atol):
                    wrong[0] += 1
        http.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(load.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {**stats(latencies, time.perf_counter() - t0), "wrong": wrong[0], "failed": failed[0]}


def run(artifact: str | Path, serve: ServeSettings, load: LoadSettings, address: str | None = None,
        progress: Callable[[str], None] = lambda m: None, haproxy: bool = False) -> dict[str, Any]:
    """Baseline, service under load, baseline again; the JSON line's fields."""
    from toolchain.fleet.cluster import connect, require_ray, start_service, stop_service
    from toolchain.runtime import load as load_model

    path = Path(artifact).resolve()
    name, task = path.name, read_manifest(path).task
    if task != "feature-extraction":
        raise ToolchainError(f"{artifact} is a {task} artifact; the load benchmark embeds, so give an encoder.")
    per_replica = max(1, int(serve.cpus_per_replica)) if serve.cpus_per_replica else 1
    threads = load.baseline_threads or per_replica * serve.replicas
    model = load_model(path, variant=serve.variant, threads=threads)
    requests = make_requests(min(DISTINCT, load.requests), load.inputs_per_request)
    want = [model.embed(texts) for texts in requests]
    progress(f"baseline: the runtime in this process ({threads} thread(s)), {load.requests} calls")
    before = baseline(model, requests, load.requests)  # before Ray is imported here, as a user's process runs it
    require_ray("the load benchmark")
    connect(address, num_cpus=os.cpu_count(), haproxy=haproxy)
    url = start_service([path], serve, progress)
    try:
        if load.warmup:
            http_load(url, name, requests, want, replace(load, clients=min(load.clients, load.warmup)), load.warmup)
        formed0 = formed_batches(name, serve.replicas)
        progress(f"load: {load.requests} requests from {load.clients} clients at {url}")
        served = timed_load(url, name, requests, want, load, local=address is None)
        batches = formed_batches(name, serve.replicas) - formed0
    finally:
        stop_service()
    progress("baseline again, then the service's batch sizes in-process")
    after = baseline(model, requests, load.requests)
    same = replay(model, requests, batches, load.inputs_per_request)
    per_request_rps = (before["rps"] + after["rps"]) / 2
    return {"artifact": name, "variant": model.info().get("variant"), **asdict(load),
            "replicas": serve.replicas, "cpus_per_replica": serve.cpus_per_replica,
            "max_batch_size": serve.max_batch_size, "batch_wait_ms": serve.batch_wait_s * 1000,
            "baseline_threads": threads, "haproxy": os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1",
            "serve": served, "batches": dict(sorted(batches.items())), "baseline_same_batches": same,
            "baseline": before, "baseline_after": after,
            "ratio": round(served["rps"] / same["rps"], 3) if same["rps"] else None,
            "ratio_per_request": round(served["rps"] / per_request_rps, 3),
            "p99_over_p50": round(served["p99_ms"] / served["p50_ms"], 2),
            "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def timed_load(url: str, name: str, requests: list[list[str]], want: list[np.ndarray], load: LoadSettings,
               local: bool) -> dict[str, Any]:
    """http_load's figures plus CPU ms per request: this process (the clients), and when the service is LOCAL
    (its processes are this one's descendants; a cluster's are not ours to read) the service and both together."""
    tree0, own0 = tree_cpu_s() if local else None, time.process_time()
    served = http_load(url, name, requests, want, load, load.requests)
    own = time.process_time() - own0
    per = lambda seconds: round(seconds / load.requests * 1000, 2)  # noqa: E731
    served["client_cpu_ms_per_request"] = per(own)
    if tree0 is not None:
        tree = tree_cpu_s() - tree0
        served["cpu_ms_per_request"], served["server_cpu_ms_per_request"] = per(tree), per(tree - own)
    return served


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m toolchain.fleet.loadbench", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="a feature-extraction artifact (e.g. MiniLM with its int8 variant)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--inputs-per-request", type=int, default=1)
    p.add_argument("--encoding", default="base64", choices=("float", "base64"))
    p.add_argument("--warmup", type=int, default=64)
    p.add_argument("--baseline-threads", type=int, default=None)
    p.add_argument("--client-nice", type=int, default=LoadSettings.client_nice,
                   help="CPU niceness of the client threads, 0-19 (default 19: below the service's replicas)")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.add_argument("--max-batch-size", type=int, default=ServeSettings.max_batch_size)
    p.add_argument("--batch-wait-ms", type=float, default=ServeSettings.batch_wait_s * 1000)
    p.add_argument("--variant", default="auto")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--address", default=None, help="a Ray cluster to use (default: a local Ray started here)")
    p.add_argument("--haproxy", action="store_true",
                   help="start the local Ray in Ray Serve's high-throughput mode (as `toolchain serve --haproxy`)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        limits = Limits(max_inputs=max(Limits.max_inputs, args.inputs_per_request))
        serve = ServeSettings(replicas=args.replicas, port=args.port, variant=args.variant,
                              cpus_per_replica=args.cpus_per_replica, max_batch_size=args.max_batch_size,
                              batch_wait_s=args.batch_wait_ms / 1000, limits=limits)
        load = LoadSettings(args.requests, args.clients, args.inputs_per_request, args.encoding, args.warmup,
                            baseline_threads=args.baseline_threads, client_nice=args.client_nice)
        result = run(args.dir, serve, load, args.address, lambda m: print(f"[loadbench] {m}", file=sys.stderr), args.haproxy)
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
