"""Joining a Ray cluster and starting the service on it: the functions `toolchain serve` calls.

``address=None`` starts a private Ray on this machine (what one laptop needs); ``"auto"`` joins the
cluster this machine belongs to (`ray start --head` / `ray start --address=HEAD:6379` ran here);
``"ray://HEAD:10001"`` connects through Ray Client from outside the cluster. Ray is an optional extra:
without it, one sentence says how to install it.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from toolchain.fleet.settings import ServeSettings
from toolchain.runtime.errors import ToolchainError


def require_ray(what: str) -> None:
    """Refuse in one sentence when Ray (the serve extra) is missing."""
    try:
        import ray  # noqa: F401
        from ray import data, serve  # noqa: F401
    except ImportError as exc:
        raise ToolchainError(f"{what} needs Ray ({exc.name} is not installed): pip install 'toolchain[serve]'.") from None


# Ray Serve's high-throughput mode (Ray >= 2.55, documented by Ray): HAProxy in place of the Python HTTP proxy,
# the gateway replica answering HTTP itself, gRPC between replicas. Measured here (loadbench, MiniLM int8, 32
# clients): the service's CPU per request fell from 12.4-12.8 ms to 5.1-5.3 ms. Not the default: HAProxy also opens
# a stats and a metrics page on all interfaces (Ray's template has no setting for their address), and this
# service listens on loopback only unless told otherwise.
HIGH_THROUGHPUT = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# HAProxy's stats page and Prometheus metrics (Ray's defaults 8404 and 9101, on all interfaces): a free port each
# unless set; Ray's log says where.
HAPROXY_SIDE_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


def _free_port(low: int = 20000, high: int = 30000) -> int:
    """A port free now, from a range none of Ray's processes take (its workers use 10002-19999, replicas' own HTTP
    30000-31000, the kernel's ephemeral ports start at 32768): an ephemeral one was taken by Ray's own sockets
    between this choice and HAProxy's bind (seen here)."""
    for port in random.sample(range(low, high), 64):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    raise ToolchainError(f"no free port between {low} and {high} for HAProxy's stats and metrics pages; set "
                         "RAY_SERVE_HAPROXY_STATS_PORT and RAY_SERVE_HAPROXY_METRICS_PORT.")


def _ingress_failure(exc: BaseException) -> str:
    """The line that says why Serve's HTTP ingress did not start (HAProxy's bind alert when there is one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "cannot bind socket" in line:
            return line.split(": ", 1)[-1]
    return lines[-1][:160] if lines else type(exc).__name__


def connect(address: str | None = None, num_cpus: int | None = None, haproxy: bool = False) -> None:
    """ray.init once: a local Ray (address None), the cluster this machine is in ("auto"), or ray://HOST:PORT.
    HAPROXY: start the local Ray in Ray Serve's high-throughput mode (a cluster gets it from `ray start`)."""
    import ray

    if haproxy and address is not None:
        raise ToolchainError("--haproxy configures the local Ray this command starts; on a cluster set "
                             "RAY_SERVE_ENABLE_HA_PROXY=1 and RAY_SERVE_THROUGHPUT_OPTIMIZED=1 for every `ray start`.")
    if ray.is_initialized():
        return
    if address not in (None, "auto") and not address.startswith("ray://") and ":" not in address:
        raise ToolchainError(f"--address {address!r} is not a Ray address; use auto, HOST:6379 or ray://HOST:10001.")
    if haproxy:  # read by Serve's controller, proxy and replicas: the local Ray's processes inherit it
        os.environ.update(HIGH_THROUGHPUT)
        for key in HAPROXY_SIDE_PORTS:  # free ones, so a second service on this host does not collide
            os.environ.setdefault(key, str(_free_port()))
    try:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise ToolchainError(f"no Ray cluster answered at {address!r} ({str(exc).splitlines()[0][:120]}); start one "
                             "with `ray start --head` or leave --address out for a local Ray.") from None


def start_service(dirs: list[str | Path], settings: ServeSettings, progress: Callable[[str], None] = lambda m: None,
                  timeout_s: float = 120.0) -> str:
    """Deploy the artifacts on the connected Ray and return the base URL once /health answers."""
    from ray import serve

    from toolchain.fleet.deploy import APP_NAME, build_app

    application = build_app(dirs, settings)  # reads every manifest first: a bad DIR fails before Ray works
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
    except Exception as exc:  # noqa: BLE001  Ray raises its own wrappers (RayTaskError of HAProxy's RuntimeError)
        raise ToolchainError(f"Ray Serve's HTTP ingress did not start ({_ingress_failure(exc)}); free the port or "
                             "choose another with --port.") from None
    progress(f"deploying {len(dirs)} artifact(s), {settings.replicas} replica(s) each")
    serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{settings.port}"
    wait_healthy(url, timeout_s)
    return url


def wait_healthy(url: str, timeout_s: float = 120.0) -> dict:
    """GET URL/health until it answers 200 (replicas loaded), or refuse after TIMEOUT_S."""
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)[:120]
        time.sleep(0.5)
    raise ToolchainError(f"the service at {url} did not become healthy within {timeout_s:.0f} s ({last}); "
                         "see the Ray logs under /tmp/ray/session_latest/logs.")


def replica_infos(expected: int = 1, calls: int | None = None) -> dict[int, dict]:
    """pid -> info() of the running service's replicas (process, node, each model's batch sizes so far), from
    CALLS concurrent calls through a deployment handle (default 20 per EXPECTED replica): Serve routes each call
    to a replica of its choosing, so many calls reach them all."""
    from ray import serve

    from toolchain.fleet.deploy import APP_NAME, DEPLOYMENT

    handle = serve.get_deployment_handle(DEPLOYMENT, app_name=APP_NAME)
    answers = [handle.info.remote() for _ in range(calls or 20 * expected)]
    return {info["pid"]: info for info in (a.result() for a in answers)}


def stop_service() -> None:
    from ray import serve

    serve.delete(_app_name())


def _app_name() -> str:
    from toolchain.fleet.deploy import APP_NAME

    return APP_NAME


def serve_forever(dirs: list[str | Path], settings: ServeSettings, progress: Callable[[str], None] = lambda m: None) -> None:
    """Deploy, say where the API is, and keep serving until Ctrl-C; then take the application down."""
    url = start_service(dirs, settings, progress)
    progress(f"serving {', '.join(Path(d).resolve().name for d in dirs)} at {url}/v1 (OpenAI-compatible); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop_service()
