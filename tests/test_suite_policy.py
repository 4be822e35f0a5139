"""The suite's own policy (tests/suite_policy.py): under CI=true a skip for a missing tool fails the run;
GPU and root skips stay skips and are listed with their reasons; the random-order seed is printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

INNER = '''
import os
import pytest

def test_chromium():
    if not os.path.exists("/nonexistent/chromium"):
        pytest.skip("/nonexistent/chromium is missing (apt-get install chromium)")

def test_promised_package():
    pytest.importorskip("no_such_package_for_the_policy_test")

def test_no_gpu():
    pytest.skip("no NVIDIA GPU on this machine (no nvidia-smi, no /dev/nvidia*)")

@pytest.mark.skipif(True, reason="root writes into read-only dirs")
def test_as_root():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfail():
    assert False

def test_ok():
    pass
'''
MODULE_SKIP = '''
import pytest
pytest.skip("/nonexistent/chromium is missing (apt-get install chromium)", allow_module_level=True)
def test_never():
    pass
'''


def _run(tmp_path: Path, ci: str | None, files: dict[str, str]) -> subprocess.CompletedProcess:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "suite_policy", "-p", "no:cacheprovider",
                           "-p", "randomly", "-ra", "-q", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_locally_skips_stay_skips(tmp_path):
    proc = _run(tmp_path, None, {"test_inner.py": INNER})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 4 skipped, 1 xfailed" in proc.stdout
    assert "chromium is missing" in proc.stdout and "no_such_package_for_the_policy_test" in proc.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_on_ci_a_missing_tool_fails_and_machine_skips_are_listed(tmp_path, ci):
    proc = _run(tmp_path, ci, {"test_inner.py": INNER})
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "2 failed, 1 passed, 2 skipped, 1 xfailed" in out
    assert "FAILED" in out and "test_chromium" in out and "test_promised_package" in out
    assert "skipped under CI=true" in out and "chromium is missing" in out
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]  # the -ra list, with reasons
    assert len(skipped) == 2
    assert any("no NVIDIA GPU" in s for s in skipped) and any("root writes into read-only dirs" in s for s in skipped)


def test_on_ci_a_module_level_skip_is_an_error(tmp_path):
    proc = _run(tmp_path, "true", {"test_browser.py": MODULE_SKIP})
    assert proc.returncode != 0
    assert "skipped under CI=true" in proc.stdout and "chromium is missing" in proc.stdout
    local = _run(tmp_path, "false", {})
    assert local.returncode in (0, 5) and "1 skipped" in local.stdout  # off CI: a skip (5: no test ran)


def test_the_random_order_seed_is_printed(tmp_path):
    proc = _run(tmp_path, None, {"test_inner.py": INNER})
    assert "random test order, seed " in proc.stdout and "--randomly-seed=" in proc.stdout
