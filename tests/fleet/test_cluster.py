"""fleet/cluster.py: joining Ray and starting the service. Fast: --haproxy's settings and an ingress that cannot
start, without a Ray cluster. Slow: `toolchain serve` on a simulated two-node Ray cluster
(ray.cluster_utils.Cluster): replicas land on both nodes, and a replica process killed mid-load is replaced while
the service keeps answering."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

from fleet.conftest import free_port

openai = pytest.importorskip("openai")

from toolchain.fleet import ServeSettings  # noqa: E402
from toolchain.runtime import load  # noqa: E402
from toolchain.runtime.errors import ToolchainError  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes(tiny_artifact):
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from toolchain.fleet.cluster import start_service

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cluster.wait_for_nodes()
    artifact = tiny_artifact("bert")
    url = start_service([artifact], ServeSettings(replicas=2, cpus_per_replica=1.0, port=free_port()))
    yield {"url": url, "artifact": artifact, "name": artifact.name}
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


def replicas(name: str, calls: int = 40) -> dict[int, str]:
    """pid -> node id of the replicas holding NAME that answered CALLS info() calls (Serve spreads them)."""
    from toolchain.fleet.cluster import replica_infos

    return {pid: info["node"] for pid, info in replica_infos(calls=calls).items() if name in info["models"]}


@pytest.mark.slow
def test_replicas_land_on_both_nodes(two_nodes):
    import ray

    seen = replicas(two_nodes["name"])
    assert len(seen) == 2 and set(seen.values()) == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    client = openai.OpenAI(base_url=f"{two_nodes['url']}/v1", api_key="-", max_retries=0)
    got = client.embeddings.create(model=two_nodes["name"], input=["a cat"]).data[0].embedding
    np.testing.assert_allclose(got, load(two_nodes["artifact"]).embed(["a cat"])[0], atol=1e-6)


@pytest.mark.slow
def test_killed_replica_is_replaced_and_service_answers(two_nodes):
    name, want = two_nodes["name"], load(two_nodes["artifact"]).embed(["a cat"])[0]
    client = openai.OpenAI(base_url=f"{two_nodes['url']}/v1", api_key="-", max_retries=0, timeout=10)
    log: list[tuple[float, bool]] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                ok = bool(np.allclose(client.embeddings.create(model=name, input=["a cat"]).data[0].embedding, want,
                                      atol=1e-5))
            except openai.APIError:
                ok = False
            log.append((time.monotonic(), ok))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(2)
    victim = next(iter(replicas(name)))
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)  # on this machine: both "nodes" are local processes
    deadline = killed + 60
    while time.monotonic() < deadline and (victim in (now := replicas(name, 20)) or len(now) < 2):
        time.sleep(1)
    replaced = time.monotonic() - killed
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    after = [ok for t, ok in log if t > killed]
    failed = sum(not ok for ok in after)
    first_ok = min((t for t, ok in log if t > killed and ok), default=None)
    print(f"\nreplica kill: {len(after)} requests after the kill, {failed} failed; replaced in {replaced:.1f} s; "
          f"first answer {None if first_ok is None else round(first_ok - killed, 2)} s after the kill")
    assert replaced < 30 and first_ok is not None and first_ok - killed < 30
    retrying = openai.OpenAI(base_url=f"{two_nodes['url']}/v1", api_key="-", max_retries=3)
    np.testing.assert_allclose(retrying.embeddings.create(model=name, input=["a cat"]).data[0].embedding, want, atol=1e-5)


def test_haproxy_mode_is_for_the_local_ray_only(monkeypatch):
    """--haproxy sets Ray Serve's high-throughput flags for the Ray this command starts; on a cluster they belong
    to `ray start`, so asking for both is one sentence (and the flags stay unset)."""
    from toolchain.fleet.cluster import HIGH_THROUGHPUT, connect

    for key in HIGH_THROUGHPUT:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ToolchainError, match="RAY_SERVE_ENABLE_HA_PROXY=1"):
        connect("auto", haproxy=True)
    assert not any(key in os.environ for key in HIGH_THROUGHPUT)


def test_haproxy_side_pages_get_free_ports_unless_set(monkeypatch):
    """HAProxy's stats and metrics pages take a free port each (Ray's fixed defaults would make a second
    `toolchain serve --haproxy` on the host fail to start); a port the user set is kept."""
    import ray

    from toolchain.fleet.cluster import HAPROXY_SIDE_PORTS, HIGH_THROUGHPUT, connect

    for key in (*HIGH_THROUGHPUT, *HAPROXY_SIDE_PORTS):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_PORT", "19101")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: None)
    connect(None, haproxy=True)
    stats = int(os.environ["RAY_SERVE_HAPROXY_STATS_PORT"])
    assert 20000 <= stats < 30000 and os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] == "19101"  # not Ray's ranges
    with socket.socket() as s:
        s.bind(("", stats))  # free


def test_an_ingress_that_cannot_start_is_one_sentence(tiny_artifact, monkeypatch):
    """HAProxy failing to bind (a port taken) reaches the user as one sentence naming the port, not Ray's traceback
    of the HAProxyManager actor."""
    from ray import serve

    from toolchain.fleet.cluster import start_service

    alert = ("HAProxy crashed during startup: [NOTICE]   (10288) : haproxy version is 2.8.25\n"
             "[ALERT]    (10288) : Binding [/tmp/haproxy-serve/x/haproxy.cfg:45] for frontend prometheus: cannot bind "
             "socket (Address already in use) for [0.0.0.0:44227]\n[ALERT]    (10288) : Some protocols failed.")

    def start(**kwargs):
        raise RuntimeError(alert)

    monkeypatch.setattr(serve, "start", start)
    with pytest.raises(ToolchainError) as info:
        start_service([tiny_artifact("bert")], ServeSettings())
    message = str(info.value)
    assert "cannot bind socket (Address already in use) for [0.0.0.0:44227]" in message
    assert "\n" not in message and "Traceback" not in message
