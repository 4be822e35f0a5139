"""The mutation table (tests/mutation/run_mutations.py) does not rot: every snippet is still in exactly one
file, every mutation changes it, and every named test file exists. Cheap: nothing is run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("run_mutations", Path(__file__).with_name("run_mutations.py"))
run_mutations = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("run_mutations", run_mutations)  # dataclasses look their module up
_spec.loader.exec_module(run_mutations)
MUTATIONS = run_mutations.MUTATIONS


def test_ids_are_unique():
    ids = [m.id for m in MUTATIONS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("m", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_snippet_still_in_the_code(m):
    path, why = run_mutations.locate(m, ROOT)
    assert path is not None, f"{m.id}: {why}; the code moved or changed: update the mutation table"
    assert m.new != m.old
    mutated = path.read_text(encoding="utf-8").replace(m.old, m.new, 1)
    if path.suffix == ".py":  # the page's JavaScript (demos/web) is mutated too; its tests load it in Chromium
        compile(mutated, str(path), "exec")  # the mutation is valid Python (a test failure, not a syntax error)
    for target in m.tests:
        assert (ROOT / target.split("::")[0]).is_file(), f"{m.id}: {target} does not exist"


def test_the_critical_promises_are_covered():
    """The issue-13 list: gates, parity, artifact writes, KV cache, resume, sha256, learning."""
    ids = {m.id for m in MUTATIONS}
    assert {"gate-decoder-never-fails", "resume-ignored", "learning-rate-zero", "write-json-in-place",
            "validate-ignores-gate", "parity-ignores-token-ids", "sha256-not-checked", "kv-cache-not-swapped"} <= ids
