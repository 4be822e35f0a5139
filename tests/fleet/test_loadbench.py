"""The serve load benchmark (python -m toolchain.fleet.loadbench) at smoke size: a real HTTP load with every answer
checked against the runtime, the in-process baseline before and after, and one JSON line of figures."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fleet.conftest import free_port
from toolchain.fleet import ServeSettings
from toolchain.fleet import loadbench
from toolchain.runtime.errors import ToolchainError

pytest.importorskip("httpx")


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
    assert out["serve"]["wrong"] == 0 and out["serve"]["failed"] == 0
    assert out["serve"]["rps"] > 0 and 0 < out["serve"]["p50_ms"] <= out["serve"]["p99_ms"]
    # CPU per request of the whole local service (Ray's processes are this one's descendants) above the runtime's
    assert out["serve"]["cpu_ms_per_request"] > out["baseline"]["cpu_ms_per_request"] > 0
    base = (out["baseline"]["rps"] + out["baseline_after"]["rps"]) / 2
    assert out["ratio"] == pytest.approx(out["serve"]["rps"] / base, abs=1e-3)  # rounded to 3 decimals
    json.dumps(out)  # one JSON line
