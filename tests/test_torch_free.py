"""`import toolchain` and the runtime work with torch, transformers and optimum unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "transformers", "optimum", "sentence_transformers"}:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True)


def test_blocker_really_blocks():
    proc = _run("import torch")
    assert proc.returncode != 0 and "blocked in this test" in proc.stderr


def test_import_and_run_without_torch(minilm_artifact):
    proc = _run(
        f"""
        import toolchain, toolchain.runtime, toolchain.cli.commands
        from toolchain.runtime import load, ToolchainError
        m = load({str(minilm_artifact)!r})
        v = m.embed(["a sentence", "another, longer sentence than the first"])
        assert v.shape == (2, 384), v.shape
        heavy = sorted(n for n in sys.modules if n.split(".")[0] in {{"torch", "transformers", "optimum"}})
        assert not heavy, heavy
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_cli_run_and_info_without_torch(minilm_artifact):
    proc = _run(
        f"""
        from toolchain.cli.commands import main
        assert main(["info", {str(minilm_artifact)!r}]) == 0
        assert main(["run", {str(minilm_artifact)!r}, "hello", "world"]) == 0
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "cosine similarity" in proc.stdout


def test_export_without_torch_says_what_to_install(tiny_model, tmp_path):
    proc = _run(
        f"""
        from toolchain.cli.commands import main
        raise SystemExit(main(["export", "{tiny_model('bert')}", "--out", "{tmp_path}/x"]))
        """
    )
    assert proc.returncode == 2, proc.stderr
    assert "is not installed; install the 'export' extra" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()
