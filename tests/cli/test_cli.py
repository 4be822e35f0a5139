"""The command line: results on stdout, one-sentence errors with exit 2 and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolchain.cli.commands import main


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolchain", *args], capture_output=True, text=True)


def test_run_classifier_json(classifier_artifact, capsys):
    assert main(["run", str(classifier_artifact), "good film", "bad film", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["info"]["variant"] == "fp32"
    assert [r["label"] in {"negative", "positive"} for r in out["classify"]] == [True, True]


def test_run_embed_prints_similarities(tiny_artifact, capsys):
    assert main(["run", str(tiny_artifact("bert")), "a", "b", "--provider", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "dim 32" in out and "cosine similarity" in out


def test_info(tiny_artifact, capsys):
    assert main(["info", str(tiny_artifact("bert", "text-classification"))]) == 0
    out = capsys.readouterr().out
    assert "text-classification" in out and "negative, positive" in out and "fp32" in out and "passed" in out
    assert main(["info", str(tiny_artifact("bert")), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variants"]["fp32"]["precision"] == "fp32"


def test_info_into_a_closed_pipe_is_quiet(tiny_artifact):
    """`toolchain info DIR | head -1`: the reader leaving is not an error (exit 0, nothing on stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "toolchain", "info", str(tiny_artifact("bert"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == "", err


def test_validate_passes_then_fails_on_changed_weights(tiny_model, tmp_path, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_model("distilbert"), src)
    art = tmp_path / "art"
    assert main(["export", str(src), "--out", str(art)]) == 0
    assert main(["validate", str(art)]) == 0
    assert "fp32: parity ok" in capsys.readouterr().out
    # Weights changed after export: validate must notice instead of comparing against other weights.
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert main(["validate", str(art)]) == 2
    assert "changed since" in capsys.readouterr().err


def test_validate_reports_parity_miss(tiny_artifact, monkeypatch, capsys):
    from toolchain.export.parity import Reference

    real = Reference.outputs
    monkeypatch.setattr(Reference, "outputs", lambda self, f, o: real(self, f, o) * 1.5)
    assert main(["validate", str(tiny_artifact("bert"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fp32 misses its parity check (max |onnx - torch| =" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "/nonexistent/art", "x"], "is not an artifact directory"),
        (["info", "/nonexistent/art"], "is not an artifact directory"),
        (["export", "/nonexistent/model", "--out", "/tmp/never"], "not a model directory"),
        (["export", "no-such-org/no-such-model", "--out", "/tmp/never"], "hub could not provide it"),
    ],
)
def test_user_errors_are_one_sentence(args, message):
    proc = cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


def test_verbose_shows_traceback():
    proc = cli("--verbose", "info", "/nonexistent/art")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_wrong_method_and_bad_variant(tiny_artifact):
    proc = cli("run", str(tiny_artifact("bert")), "x", "--variant", "int4")
    assert proc.returncode == 2 and "variant 'int4' is not in" in proc.stderr and "Traceback" not in proc.stderr


def test_help_has_examples():
    for command in ("export", "validate", "run", "info"):
        proc = cli(command, "--help")
        assert proc.returncode == 0 and "examples:" in proc.stdout
