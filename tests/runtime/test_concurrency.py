"""One loaded Model shared by many threads gives exactly what one thread gives, call for call.

test_generate.py checks 16 single-prompt greedy generate() calls from 8 threads; these cover embed, scores,
classify, encode, batched and streamed generate, seeded sampling, refused input, and all of them mixed over
three models at once.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from toolchain.runtime import InputError, load

pytestmark = pytest.mark.filterwarnings("ignore:.*were truncated:UserWarning")

THREADS = 12
JOIN_TIMEOUT_S = 120.0
WORDS = ["the", "film", "was", "dull", "a", "delight", "rain", "plot", "🙂", "naïve", "\x00", "", "actors", "shine"]


@pytest.fixture(scope="module")
def models(tiny_artifact, classifier_artifact, tiny_decoder):
    return {
        "embed": load(tiny_artifact("bert"), provider="cpu", batch_size=4),  # small batches: calls split, interleave
        "classify": load(classifier_artifact, provider="cpu", batch_size=4),
        "generate": load(tiny_decoder("llama")[1], provider="cpu", batch_size=2),
    }


def sentence(rng: random.Random, min_words: int = 0) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, 24))) or ("x" if min_words else "")


def workload(n: int, kinds: tuple[str, ...], seed: int = 0) -> list[tuple[str, tuple, dict]]:
    """N calls (model, method, args, kwargs) of the given kinds, with uneven batches and prompts."""
    rng = random.Random(seed)
    calls = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        batch = [sentence(rng) for _ in range(rng.randint(1, 9))]
        prompt = sentence(rng, min_words=1)
        calls.append({
            "embed": ("embed", "embed", (batch,), {}),
            "scores": ("classify", "scores", (batch,), {}),
            "classify": ("classify", "classify", (batch,), {}),
            "encode": ("embed", "encode", (batch,), {}),
            "generate": ("generate", "generate", (prompt,), {"max_new_tokens": rng.randint(1, 8)}),
            "generate batch": ("generate", "generate", ([prompt, sentence(rng, 1), sentence(rng, 1)],),
                               {"max_new_tokens": 6}),
            "stream": ("generate", "generate", (prompt,), {"max_new_tokens": 6, "stream": True}),
            "sample": ("generate", "generate", (prompt,), {"max_new_tokens": 6, "temperature": 0.9, "top_p": 0.9,
                                                           "seed": i}),
            "refused": ("embed", "embed", (["ok", None],), {}),
        }[kind])
    return calls


def perform(models, call):
    """One call's outcome as comparable plain data: arrays stay arrays, a stream becomes its pieces,
    a refused call becomes its error type and message."""
    model, method, args, kwargs = call
    try:
        out = getattr(models[model], method)(*args, **kwargs)
    except InputError as exc:
        return ("error", type(exc).__name__, str(exc))
    if kwargs.get("stream"):
        return ("stream", list(out))
    if method == "encode":
        feeds, mask = out
        return ("encode", {k: v.copy() for k, v in feeds.items()}, mask.copy())
    return out


def same(a, b) -> bool:
    """Exact equality, arrays bit for bit."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def run_threaded(models, calls, threads: int = THREADS, seed: int = 1) -> list:
    """Perform CALLS from THREADS threads at once (each thread a shuffled share, all released together)."""
    order = list(range(len(calls)))
    random.Random(seed).shuffle(order)
    shares = [order[t::threads] for t in range(threads)]
    results: list = [None] * len(calls)
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(share):
        try:
            start.wait()
            for i in share:
                results[i] = perform(models, calls[i])
        except BaseException as exc:  # noqa: BLE001 - reported below, with the thread's failure
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(share,), daemon=True) for share in shares]
    for t in pool:
        t.start()
    for t in pool:
        t.join(JOIN_TIMEOUT_S)
    assert not any(t.is_alive() for t in pool), f"threads still running after {JOIN_TIMEOUT_S:.0f} s (a deadlock?)"
    assert not errors, f"{len(errors)} calls raised in threads, the first: {errors[0]!r}"
    return results


def check_against_sequential(models, calls, rounds: int = 1) -> None:
    expected = [perform(models, c) for c in calls]
    for r in range(rounds):
        got = run_threaded(models, calls, seed=r)
        wrong = [i for i, (e, g) in enumerate(zip(expected, got)) if not same(e, g)]
        assert not wrong, (f"{len(wrong)} of {len(calls)} calls differ from one thread's results, "
                           f"e.g. {calls[wrong[0]]!r:.200}")


def test_embed_from_many_threads_equals_one_thread(models):
    check_against_sequential(models, workload(240, ("embed",)), rounds=2)


def test_scores_and_classify_from_many_threads_equal_one_thread(models):
    check_against_sequential(models, workload(240, ("scores", "classify")), rounds=2)


def test_generate_batches_streams_and_seeded_sampling_from_many_threads(models):
    check_against_sequential(models, workload(96, ("generate batch", "stream", "sample")))


def test_mixed_calls_over_three_models_equal_one_thread(models):
    kinds = ("embed", "scores", "classify", "encode", "generate", "generate batch", "stream", "sample", "refused")
    check_against_sequential(models, workload(360, kinds, seed=7), rounds=2)


def test_call_counter_counts_every_call(models):
    calls = workload(200, ("embed", "scores", "classify", "generate"), seed=3)
    before = {name: m.info()["calls"] for name, m in models.items()}
    run_threaded(models, calls)
    counted = {name: m.info()["calls"] - before[name] for name, m in models.items()}
    assert counted == {name: sum(1 for c in calls if c[0] == name) for name in models}
