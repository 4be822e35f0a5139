"""Suite-wide policy hooks (loaded by tests/conftest.py; a plain module so a test can load it alone with -p).

- No silent skips on CI: under CI=true a skip fails the run unless its reason is one of CI_ALLOWED_SKIPS
  (no GPU, running as root, ...). A missing chromium, a missing promised package (importorskip) or a
  missing bundled data file is a failure there, not a skip. The skips that remain are listed with their
  reasons at the end (-ra in pyproject's addopts).
- Random order: pytest-randomly shuffles the tests; the seed is repeated at the end of the run (the
  header that also shows it is hidden by -q), so a failing order can be replayed.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

# Skips that stay skips under CI=true, each with why it may: the machine, not the checkout, decides them.
CI_ALLOWED_SKIPS: tuple[re.Pattern[str], ...] = (
    re.compile(r"CUDA|GPU|NVIDIA", re.IGNORECASE),  # no usable GPU here (tests/gpu runs on GPU machines)
    re.compile(r"\broot\b"),  # root writes into read-only dirs: permission tests cannot run as root
    re.compile(r"no U\+FFFD to stop at"),  # the tiny random model's output has no such case (data, not a tool)
)


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def allowed_on_ci(reason: str) -> bool:
    return any(p.search(reason) for p in CI_ALLOWED_SKIPS)


def require_tool(name: str, path: str | None = None, install: str = "") -> str:
    """The path of tool NAME (PATH, or the given PATH), or skip saying how to install it (a failure under CI=true)."""
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if not found:
        pytest.skip(f"{path or name} is missing" + (f" ({install})" if install else ""))
    return found


def _fail_skip_on_ci(report) -> None:
    if not (report.skipped and on_ci()) or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report)
    if allowed_on_ci(reason):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, where every promised tool, package and data file must be present: "
                       f"{reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_on_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip_on_ci(outcome.get_result())  # a module-level skip (e.g. no chromium) is a collection error on CI


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.hasplugin("randomly") and isinstance(seed, int):
        terminalreporter.write_line(f"random test order, seed {seed}: replay it with --randomly-seed={seed}")
