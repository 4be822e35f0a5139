"""The serve load benchmark (python -m toolchain.fleet.loadbench) at smoke size: a real HTTP load with every answer
checked against the runtime, the in-process baseline before and after, and one JSON line of figures."""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fleet.conftest import free_port
from toolchain.fleet import ServeSettings
from toolchain.fleet import loadbench
from toolchain.runtime.errors import ToolchainError



def test_requests_are_distinct_and_settings_checked():
    reqs = loadbench.make_requests(5, 3)
    texts = [t for r in reqs for t in r]
    assert len(reqs) == 5 and all(len(r) == 3 for r in reqs) and len(set(texts)) == 15
    assert loadbench.make_requests(5, 3) == reqs  # the same load every time
    with pytest.raises(ToolchainError, match="clients"):
        loadbench.LoadSettings(clients=0)
    with pytest.raises(ToolchainError, match="--encoding"):
        loadbench.LoadSettings(encoding="json")


class Stub(BaseHTTPRequestHandler):
    """/v1/embeddings answering [1, 2, 3] (base64) for every input, and a 500 for the input "fail"."""

    def do_POST(self):  # noqa: N802  (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body["input"] == ["fail"]:
            self.send_response(500)
            self.end_headers()
            return
        vec = base64.b64encode(np.array([1, 2, 3], dtype="<f4").tobytes()).decode()
        out = json.dumps({"data": [{"index": i, "embedding": vec} for i, _ in enumerate(body["input"])]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_http_load_counts_wrong_and_failed_answers():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        right, off = np.array([[1, 2, 3]], np.float32), np.array([[1, 2, 3.01]], np.float32)
        requests, want = [["a"], ["b"], ["fail"], ["c"]], [right, off, right, right]
        out = loadbench.http_load(f"http://127.0.0.1:{server.server_port}", "m", requests, want,
                                  loadbench.LoadSettings(requests=8, clients=3), total=8)
    finally:
        server.shutdown()
    assert (out["wrong"], out["failed"]) == (2, 2)  # requests 1 and 5 answered off by 0.01, 2 and 6 refused
    assert out["rps"] > 0 and out["p50_ms"] <= out["p99_ms"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU niceness per thread is Linux's")
def test_client_threads_run_at_the_lowest_priority_and_the_caller_keeps_its_own(monkeypatch):
    seen: list[int] = []
    real = loadbench.lower_priority

    def spy(nice):
        real(nice)
        seen.append(os.getpriority(os.PRIO_PROCESS, 0))  # this thread's niceness, as the kernel now has it

    monkeypatch.setattr(loadbench, "lower_priority", spy)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        want = [np.array([[1, 2, 3]], np.float32)]
        loadbench.http_load(f"http://127.0.0.1:{server.server_port}", "m", [["a"]], want,
                            loadbench.LoadSettings(requests=4, clients=2), total=4)
    finally:
        server.shutdown()
    assert seen == [19, 19] and os.getpriority(os.PRIO_PROCESS, 0) == mine
    with pytest.raises(ToolchainError, match="--client-nice"):
        loadbench.LoadSettings(client_nice=20)


class Recorder:
    """A model stub: records the texts of each embed() call."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return np.zeros((len(texts), 3), np.float32)


def test_replay_calls_the_runtime_with_the_batch_sizes_the_service_formed():
    model, requests = Recorder(), loadbench.make_requests(7, 2)
    out = loadbench.replay(model, requests, Counter({1: 3, 4: 2, 9: 1}), per_request=2)
    assert sorted(len(c) for c in model.calls) == [1, 1, 1, 4, 4, 9]
    texts = [t for r in requests for t in r]
    sent = [t for c in model.calls for t in c]
    assert sent == [texts[i % len(texts)] for i in range(20)]  # the requests' texts in turn, cycled
    assert out["calls"] == 6 and out["mean_batch"] == pytest.approx(20 / 6, abs=0.01) and out["rps"] > 0
    assert loadbench.replay(Recorder(), requests, Counter(), per_request=1)["rps"] == 0.0  # nothing formed


def test_a_text_classifier_is_refused_in_one_sentence(tiny_artifact, capsys):
    assert loadbench.main([str(tiny_artifact("bert", "text-classification")), "--requests", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "give an encoder" in err


@pytest.mark.parametrize("encoding", ["base64"])
def test_smoke_load_counts_no_wrong_answers(local_ray, tiny_artifact, capsys, encoding):
    art = tiny_artifact("bert")
    serve = ServeSettings(port=free_port(), cpus_per_replica=0.5)
    load = loadbench.LoadSettings(requests=50, clients=4, inputs_per_request=2, encoding=encoding, warmup=8)
    out = loadbench.run(art, serve, load)
    served = out["serve"]
    assert served["wrong"] == 0 and served["failed"] == 0
    assert served["rps"] > 0 and 0 < served["p50_ms"] <= served["p99_ms"]
    # the service's processes (this one's descendants) and the clients (this process) apart: above the runtime's
    assert served["server_cpu_ms_per_request"] > out["baseline"]["cpu_ms_per_request"] > 0
    assert served["client_cpu_ms_per_request"] > 0
    assert served["server_cpu_ms_per_request"] + served["client_cpu_ms_per_request"] == pytest.approx(
        served["cpu_ms_per_request"], abs=0.02)
    # the batch sizes the replica formed during the timed load: every text of every request, once (not the warmup's)
    assert sum(size * n for size, n in out["batches"].items()) == 50 * 2
    same = out["baseline_same_batches"]
    assert same["calls"] == sum(out["batches"].values()) and same["rps"] > 0
    assert out["ratio"] == pytest.approx(served["rps"] / same["rps"], abs=1e-3)  # rounded to 3 decimals
    base = (out["baseline"]["rps"] + out["baseline_after"]["rps"]) / 2
    assert out["ratio_per_request"] == pytest.approx(served["rps"] / base, abs=1e-3)
    json.dumps(out)  # one JSON line
