"""The bench harness's spawned children: a script that cannot be re-imported by a child gets one clear sentence
(seen on the GPU box: `python - <<EOF` and an unguarded script both ended in a bare BrokenProcessPool)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from toolchain.bench.harness import in_child

ROOT = Path(__file__).resolve().parents[2]
CALL = ("from toolchain.bench.harness import in_child\n"
        "try:\n    print(in_child(dict, {'x': 3}))\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")


def _run(args: list[str], **kwargs) -> str:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, **kwargs)
    return r.stdout + (r.stderr.strip().splitlines() or [""])[-1]


def test_a_guarded_call_returns_the_childs_answer():
    assert in_child(dict, {"x": 2}) == {"x": 2}


def test_a_script_read_from_stdin_is_refused_in_one_sentence():
    out = _run(["-"], input=CALL)
    assert out.startswith("ToolchainError") and "save the script to a file" in out


def test_an_unguarded_script_gets_the_fix_not_a_bare_broken_pool(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text("from toolchain.bench.harness import in_child\nprint(in_child(dict, {'x': 3}))\n")
    last = _run([str(script)]).splitlines()[-1]
    assert last.startswith("toolchain.runtime.errors.ToolchainError") and "if __name__ == '__main__':" in last, last
