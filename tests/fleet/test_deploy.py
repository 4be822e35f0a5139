"""How a replica runs its model (fleet/deploy.py ModelHost), without a Ray cluster: Serve's request batching runs
in a plain event loop here, with the replica context it reads stubbed."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("ray.serve")

from ray import serve  # noqa: E402

from toolchain.fleet.deploy import ModelHost  # noqa: E402
from toolchain.runtime import load  # noqa: E402


class CountingExecutor(ThreadPoolExecutor):
    """A one-thread executor that records how many batches were handed to it and not yet finished."""

    def __init__(self):
        super().__init__(max_workers=1)
        self.in_flight, self.most, self.lock = 0, 0, threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future) -> None:
        with self.lock:
            self.in_flight -= 1


@pytest.fixture
def replica_context(monkeypatch):
    """@serve.batch reads its replica's max_ongoing_requests; outside a replica there is none."""
    stub = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=256))
    monkeypatch.setattr(serve, "get_replica_context", lambda: stub)


def test_batches_run_one_at_a_time_on_one_thread_with_the_next_already_queued(tiny_artifact, replica_context):
    path = tiny_artifact("bert")
    texts = [[f"text number {i}"] for i in range(24)]

    async def main():
        host = ModelHost(str(path), "auto", 1, 4, 0.001)
        host.batch_thread = CountingExecutor()
        threads, running, most = set(), [0], [0]
        real = host.model.embed

        def slow(texts):  # a runtime call that takes long enough for the next requests to arrive meanwhile
            running[0] += 1
            most[0] = max(most[0], running[0])
            threads.add(threading.get_ident())
            time.sleep(0.02)
            try:
                return real(texts)
            finally:
                running[0] -= 1

        host.model.embed = slow
        out = await asyncio.gather(*[host.encode(t) for t in texts])
        return host, out, threads, most[0]

    host, out, threads, most = asyncio.run(main())
    want = load(path, threads=1).embed([t[0] for t in texts])
    np.testing.assert_allclose(np.concatenate(out), want, atol=1e-5)
    assert len(threads) == 1 and most == 1  # one batch at a time, always on the same thread
    assert host.batch_thread.most == 2  # the next batch waited in the thread's queue, not in the event loop
    assert sum(size * calls for size, calls in host.batches.items()) == 24 and max(host.batches) <= 4
