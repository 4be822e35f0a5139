"""write_json: a crash between write and replace leaves the old file intact and no temp file behind."""

from __future__ import annotations

import json
import os

import pytest

from toolchain.artifact import write_json

OLD = {"schema_version": 1, "variants": {"fp32": {"file": "model.onnx"}}}
NEW = {"schema_version": 1, "variants": {"fp32": {"file": "model.onnx"}, "int8": {"file": "model.int8.onnx"}}}


@pytest.fixture
def existing(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(OLD))
    return path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")


def test_success_writes_and_leaves_nothing_else(existing):
    write_json(existing, NEW)
    assert json.loads(existing.read_text()) == NEW
    assert _leftovers(existing.parent) == []


def test_crash_at_replace_keeps_the_old_file(existing, monkeypatch):
    calls = []

    def crash(src, dst, *a, **kw):
        calls.append((str(src), str(dst)))
        raise OSError(5, "simulated crash between write and replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_json(existing, NEW)
    monkeypatch.undo()
    assert calls and calls[0][1] == str(existing) and calls[0][0] != str(existing)  # written elsewhere first
    assert json.loads(existing.read_text()) == OLD  # untouched, and whole
    assert _leftovers(existing.parent) == []  # the temp file is removed


def test_crash_before_replace_is_flushed_first(existing, monkeypatch):
    """The data is fsync'ed before the replace (else a power cut can leave an empty file in place)."""
    order = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b))[1])
    write_json(existing, NEW)
    assert "replace" in order and "fsync" in order[: order.index("replace")]
    assert json.loads(existing.read_text()) == NEW


def test_crash_at_fsync_keeps_the_old_file(existing, monkeypatch):
    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        write_json(existing, NEW)
    monkeypatch.undo()
    assert json.loads(existing.read_text()) == OLD
    assert _leftovers(existing.parent) == []


def test_unserialisable_data_keeps_the_old_file(existing):
    """A failure half-way through serialising (after some bytes were written) must not truncate the file."""
    with pytest.raises(TypeError):
        write_json(existing, {"ok": 1, "bad": object()})
    assert json.loads(existing.read_text()) == OLD
    assert _leftovers(existing.parent) == []
