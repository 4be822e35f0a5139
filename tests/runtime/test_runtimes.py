"""One runtime class per task, registered by task name: load() returns the right one, and a method of
another task is refused with one sentence naming the right method."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.runtime import (RUNTIMES, Classifier, Embedder, Model, TextGenerator, ToolchainError, load,
                               register_runtime)
from toolchain.runtime.checks import check_int, finite, first_line, is_int, show, warn_once
from toolchain.runtime.errors import InputError
from toolchain.runtime.tasks import TASKS

OTHER_METHODS = {"embed": ("embed", ["a"]), "classify": ("classify", ["a"]), "scores": ("classify", ["a"]),
                 "generate": ("generate", "a")}


def test_every_task_has_a_registered_runtime_class():
    assert set(RUNTIMES) == set(TASKS)
    assert all(issubclass(cls, Model) for cls in RUNTIMES.values())
    assert RUNTIMES["feature-extraction"] is Embedder and RUNTIMES["text-classification"] is Classifier
    assert RUNTIMES["text-generation"] is TextGenerator


@pytest.mark.parametrize("task, cls", [("feature-extraction", Embedder), ("text-classification", Classifier)])
def test_load_returns_the_class_of_the_task(tiny_artifact, task, cls):
    model = load(tiny_artifact("bert", task))
    assert type(model) is cls and isinstance(model, Model)
    feeds, mask = model.encode(["one", "two words"])
    out = model.run_feeds(feeds)
    assert out.shape[0] == 2 and mask.shape == feeds["input_ids"].shape
    own = model.task.method
    for name, (method, arg) in OTHER_METHODS.items():
        if method == own:
            continue
        with pytest.raises(ToolchainError, match=rf"^{method}\(\) is not available for a {task} artifact; "
                                                 rf"use {own}\(\) instead\.$"):
            getattr(model, name)(arg)
    with pytest.raises(ToolchainError, match=rf"generate\(\) is not available .* use {own}\(\) instead"):
        model.generator


def test_decoder_is_a_text_generator(tiny_decoder):
    _, art = tiny_decoder("gpt2")
    model = load(art)
    assert type(model) is TextGenerator and model.generator.context == model.manifest.max_length
    assert model.info()["io_binding"] is True
    feeds, mask = model.encode(["To be"])
    assert model.run_feeds(feeds).shape[:2] == mask.shape
    for name in ("embed", "classify", "scores"):
        with pytest.raises(ToolchainError, match=r"is not available for a text-generation artifact; use generate"):
            getattr(model, name)(["a"])


def test_register_runtime_replaces_the_class_load_returns(tiny_artifact, monkeypatch):
    class Tagged(Embedder):
        pass

    monkeypatch.setitem(RUNTIMES, "feature-extraction", Embedder)
    register_runtime("feature-extraction", Tagged)
    assert type(load(tiny_artifact("bert"))) is Tagged


def test_small_helpers():
    assert show("x" * 100).endswith("...") and len(show("x" * 100)) == 60
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(3.0)
    assert check_int("n", np.int64(4), 1, "pass a count") == 4
    with pytest.raises(InputError, match=r"^n must be an int >= 1: pass a count, got 0\.$"):
        check_int("n", 0, 1, "pass a count")
    assert finite(1) == 1.0 and finite(float("nan")) is None and finite(True) is None
    assert first_line(RuntimeError("first\nsecond")) == "first" and first_line(KeyError()) == "KeyError"


def test_warn_once(caplog):
    import logging

    log, seen = logging.getLogger("toolchain.test"), set()
    with caplog.at_level(logging.WARNING, logger="toolchain.test"):
        for _ in range(3):
            warn_once(log, "only once", seen)
    assert [r.message for r in caplog.records] == ["only once"]
