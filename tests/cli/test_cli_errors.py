"""Every subcommand's user errors: exit 2, one sentence on stderr, no traceback; --verbose shows it.

The table runs the real ``main()`` in-process (capfd sees ONNX Runtime's native log lines too); a few
cases run as a subprocess to prove the exit status and the stderr a shell user sees.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import classifier_recipe

from toolchain.cli.commands import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, main
from toolchain.runtime.errors import ToolchainError

RECIPE = classifier_recipe("{model}", text_column=False)


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_artifact, tiny_model) -> dict[str, str]:
    """Names the table's arguments use: good inputs and every kind of bad one."""
    root = tmp_path_factory.mktemp("cli-errors")
    art = root / "art"
    shutil.copytree(tiny_artifact("bert"), art)  # a copy: nothing in the table may touch the shared one
    model = tiny_model("bert", "text-classification")
    (root / "empty").mkdir()
    (root / "file").write_text("hello\n")
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{not json")
    (root / "badcfg").mkdir()
    (root / "badcfg" / "config.json").write_text("{")
    (root / "full").mkdir()
    (root / "full" / "notes.txt").write_text("mine")
    pickled = root / "pickled"
    pickled.mkdir()
    shutil.copy(model / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"pickle, never loaded")
    remote = root / "remote"
    shutil.copytree(model, remote)
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="tinycustom", auto_map={"AutoModel": "modeling_tiny.TinyModel"})
    (remote / "config.json").write_text(json.dumps(config))
    recipes = root / "recipes"
    recipes.mkdir()
    good = RECIPE.format(model=model)
    for name, text in {
        "nodata": good,
        "unknown_key": "flavour = 1\n" + good,
        "invalid": good + "[[[broken",
        "escape": good.replace('"train.tsv"', '"../../etc/passwd"'),
        "no_pretrained": good.replace(str(model), str(root / "nope")),
        "pickle_pretrained": good.replace(str(model), str(pickled)),
        "remote_pretrained": good.replace(str(model), str(remote)),
        "bad_task": good.replace('"text-classification"', '"summarization"'),
        "bad_arch": good.replace(f'pretrained = "{model}"', 'architecture = "lstm"'),
        "bad_value": good.replace("epochs = 1.0", "epochs = 1.0\nbatch_size = 0"),
        "bad_trust": good.replace(f'pretrained = "{model}"', f'pretrained = "{model}"\ntrust_remote_code = "yes"'),
    }.items():
        (recipes / f"{name}.toml").write_text(text)
    names = {"root": root, "art": art, "model": model, "missing": root / "nope", "out": root / "out",
             "recipes": recipes, **{p.name: p for p in root.iterdir()}}
    return {k: str(v) for k, v in names.items()}


# (arguments, words the one line must contain, whether argparse rejects it: no traceback to show then)
CASES = {
    # export
    "export-missing-dir": ("export {missing} --out {out}", "is not a model directory", False),
    "export-not-a-model": ("export {empty} --out {out}", "has no config.json", False),
    "export-bad-config-json": ("export {badcfg} --out {out}", "cannot be read as JSON", False),
    "export-pickle-weights": ("export {pickled} --out {out}", "convert them to safetensors", False),
    "export-remote-code": ("export {remote} --out {out}", "pass --trust-remote-code", False),
    "export-opset-range": ("export {model} --opset 5 --out {out}", "opset 5 is outside", False),
    "export-negative-atol": ("export {model} --atol -1 --out {out}", "atol must be positive", False),
    "export-out-is-a-file": ("export {model} --out {file}", "exists and is a file", False),
    "export-out-not-ours": ("export {model} --out {full}", "non-empty directory that is not an artifact", False),
    "export-bad-task": ("export {model} --task summarize --out {out}", "invalid choice: 'summarize'", True),
    "export-opset-not-int": ("export {model} --opset seven --out {out}", "invalid int value: 'seven'", True),
    "export-no-out": ("export {model}", "required: --out", True),
    "export-max-length-zero": ("export {model} --max-length 0 --out {out}", "--max-length must be a whole number",
                               False),
    "export-max-length-not-int": ("export {model} --max-length ten --out {out}", "invalid int value: 'ten'", True),
    "export-unknown-exporter": ("export {model} --exporter nope --out {out}", "invalid choice: 'nope'", True),
    "export-exporter-cannot": ("export {model} --task text-classification --exporter ort-genai --out {out}",
                               "does not handle", False),
    # validate
    "validate-missing-dir": ("validate {missing}", "is not an artifact directory", False),
    "validate-not-an-artifact": ("validate {empty}", "manifest.json is missing", False),
    "validate-broken-manifest": ("validate {broken}", "cannot be read as JSON", False),
    "validate-unknown-variant": ("validate {art} --variant int4", "variant 'int4' is not in", False),
    # run
    "run-missing-dir": ("run {missing} hello", "is not an artifact directory", False),
    "run-not-an-artifact": ("run {empty} hello", "manifest.json is missing", False),
    "run-broken-manifest": ("run {broken} hello", "cannot be read as JSON", False),
    "run-unknown-variant": ("run {art} hello --variant int4", "variant 'int4' is not in", False),
    "run-unknown-provider": ("run {art} hello --provider tpu", "invalid choice: 'tpu'", True),
    "run-no-text": ("run {art}", "required: INPUT", True),
    "run-bad-max-new-tokens": ("run {art} hello --max-new-tokens ten", "invalid int value: 'ten'", True),
    "run-bad-gpu-mem-limit": ("run {art} hello --gpu-mem-limit lots", "is not a size", False),
    "run-device-id-not-int": ("run {art} hello --device-id x", "invalid int value: 'x'", True),
    # info
    "info-missing-dir": ("info {missing}", "is not an artifact directory", False),
    "info-a-file": ("info {file}", "is not an artifact directory", False),
    "info-broken-manifest": ("info {broken}", "cannot be read as JSON", False),
    # quantize
    "quantize-missing-dir": ("quantize {missing} --mode int8-dynamic", "is not an artifact directory", False),
    "quantize-missing-calib": ("quantize {art} --mode int8-dynamic --calib {missing}.txt", "does not exist", False),
    "quantize-zero-limit": ("quantize {art} --mode int8-dynamic --limit 0", "limit must be a positive number", False),
    "quantize-unknown-mode": ("quantize {art} --mode int9", "invalid choice: 'int9'", True),
    "quantize-bad-max-drop": ("quantize {art} --mode int8-dynamic --max-drop -1", "outside [0, 1)", True),
    "quantize-unknown-target": ("quantize {art} --mode int8-dynamic --target z80", "invalid choice: 'z80'", True),
    # optimize
    "optimize-missing-dir": ("optimize {missing}", "is not an artifact directory", False),
    "optimize-unknown-base": ("optimize {art} --base int4", "variant 'int4' is not in", False),
    "optimize-missing-calib": ("optimize {art} --calib {missing}.txt", "does not exist", False),
    "optimize-unknown-rewrite": ("optimize {art} --rewrite nope", "invalid choice: 'nope'", True),
    "optimize-bad-max-drop": ("optimize {art} --max-drop lots", "'lots' is not a number", True),
    # bench
    "bench-missing-dir": ("bench {missing}", "is not an artifact directory", False),
    "bench-unknown-variant": ("bench {art} --variants int4", "'int4' is not in", False),
    "bench-zero-runs": ("bench {art} --runs 0", "runs must be a positive integer", False),
    "bench-zero-batch": ("bench {art} --batch 0", "positive integers", False),
    "bench-zero-threads": ("bench {art} --threads 0", "threads must be a positive integer", False),
    "bench-bad-gpu-mem-limit": ("bench {art} --gpu-mem-limit -5", "is not a size", False),
    "bench-bad-batch": ("bench {art} --batch 1,x", "not a comma-separated list of integers", True),
    "bench-unknown-provider": ("bench {art} --provider tpu", "invalid choice: 'tpu'", True),
    # train
    "train-missing-recipe": ("train {missing}.toml", "does not exist", False),
    "train-nproc-zero": ("train {recipes}/nodata.toml --nproc 0 --out {out}", "at least 1", False),
    "serve-missing-dir": ("serve {missing}", "is not an artifact directory", False),
    "serve-haproxy-on-a-cluster": ("serve {art} --haproxy --address auto", "for every `ray start`", False),
    "map-missing-dir": ("map {missing} --input {file} --output {out}.parquet", "is not an artifact directory", False),
    "web-missing-dir": ("web {missing} --out {out}", "is not an artifact directory", False),
    "train-unknown-key": ("train {recipes}/unknown_key.toml", "unknown key 'flavour'", False),
    "train-invalid-toml": ("train {recipes}/invalid.toml", "is not valid TOML", False),
    "train-missing-data": ("train {recipes}/nodata.toml --out {out}", "train.tsv does not exist", False),
    "train-path-escapes": ("train {recipes}/escape.toml --out {out}", "escapes the recipe's folder", False),
    "train-missing-pretrained": ("train {recipes}/no_pretrained.toml --out {out}", "is not a model directory", False),
    "train-pickle-pretrained": ("train {recipes}/pickle_pretrained.toml --out {out}", "convert them to safetensors", False),
    "train-remote-code": ("train {recipes}/remote_pretrained.toml --out {out}", "trust_remote_code = true", False),
    "train-unknown-task": ("train {recipes}/bad_task.toml", "task 'summarization' is not supported", False),
    "train-bad-trust-value": ("train {recipes}/bad_trust.toml", "trust_remote_code must be true or false", False),
    # build
    "build-missing-recipe": ("build {missing}.toml", "does not exist", False),
    "build-unknown-architecture": ("build {recipes}/bad_arch.toml", "architecture 'lstm' is not known", False),
    "build-bad-value": ("build {recipes}/bad_value.toml", "batch_size must be positive", False),
    # sweep
    "sweep-missing-recipe": ("sweep {missing}.toml --sizes 64x1,128x1", "does not exist", False),
    "sweep-bad-sizes": ("sweep {recipes}/nodata.toml --sizes hidden=64,abc --out {out}", "'abc' is not a positive integer",
                        False),
    # demo (each fails before anything listens)
    "demo-missing-dir": ("demo {missing}", "is not an artifact directory", False),
    "demo-not-an-artifact": ("demo {empty}", "manifest.json is missing", False),
    "demo-broken-manifest": ("demo {broken}", "cannot be read as JSON", False),
    "demo-port-out-of-range": ("demo {art} --port 70000", "not a port number", True),
    "demo-port-not-a-number": ("demo {art} --port http", "'http' is not a port number", True),
    # the program itself
    "no-command": ("", "required: COMMAND", True),
    "unknown-command": ("frobnicate {art}", "invalid choice: 'frobnicate'", True),
    "unknown-flag": ("info {art} --colour", "unrecognized arguments: --colour", True),
}
# Only where CUDA cannot start (the usual test machine); on a GPU machine these succeed.
CUDA_CASES = {
    "run-cuda-unusable": ("run {art} hello --provider cuda", "provider 'cuda' was requested", False),
    "bench-cuda-unusable": ("bench {art} --provider cuda --runs 1", "CUDA provider did not initialise", False),
}


def _argv(template: str, paths: dict[str, str]) -> list[str]:
    return [part.format(**paths) for part in template.split()]


def _check_one_sentence(code: int, out: str, err: str, words: str) -> None:
    assert code == EXIT_USER_ERROR, (code, err)
    assert "Traceback" not in err and out == "", (out, err)
    assert err.endswith("\n") and err.count("\n") == 1, f"stderr is not one line:\n{err}"
    line = err.strip()
    assert line.startswith("error: ") and line.endswith("."), line
    assert not re.search(r"[.!?] [A-Z]", line), f"more than one sentence: {line}"
    assert words in line, line


@pytest.fixture(scope="module")
def cuda_unusable(paths) -> bool:
    from toolchain.runtime import load
    from toolchain.runtime.errors import ProviderError

    try:
        load(paths["art"], provider="cuda")
    except ProviderError:
        return True
    return False


def _table():
    return [pytest.param(*row, id=name) for name, row in {**CASES, **CUDA_CASES}.items()]


@pytest.mark.parametrize("args, words, argparse_error", _table())
def test_user_error_is_one_sentence_and_verbose_shows_the_traceback(paths, capfd, request, args, words, argparse_error):
    if request.node.callspec.id in CUDA_CASES and not request.getfixturevalue("cuda_unusable"):
        pytest.skip("CUDA works here, so this is not an error")
    argv = _argv(args, paths)
    code = main(argv)
    out, err = capfd.readouterr()
    _check_one_sentence(code, out, err, words)
    assert not Path(paths["out"]).exists()  # a failed command leaves nothing behind
    if argparse_error:  # nothing was raised, so there is no traceback to show; the line is the same
        assert main(["--verbose", *argv]) == EXIT_USER_ERROR
        assert capfd.readouterr().err == err
        return
    with pytest.raises(ToolchainError) as raised:  # escapes main(): Python prints the traceback
        main(["--verbose", *argv])
    capfd.readouterr()
    assert err.strip() == f"error: {raised.value}"


def test_the_table_covers_every_subcommand():
    from toolchain.cli.commands import COMMANDS

    covered = {row[0].split()[0] for row in CASES.values() if row[0]}
    assert set(COMMANDS) <= covered, set(COMMANDS) - covered
    assert len(CASES) >= 25


def test_an_unexpected_exception_is_one_line_too(monkeypatch, capfd, paths):
    import toolchain.cli.commands as cli

    def broken(args):
        raise ZeroDivisionError("division by zero in a stage")

    monkeypatch.setitem(cli.COMMANDS, "info", broken)
    assert main(["info", paths["art"]]) == EXIT_INTERNAL_ERROR
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unexpected ZeroDivisionError (division by zero in a stage)" in err and "--verbose" in err
    with pytest.raises(ZeroDivisionError):
        main(["info", paths["art"], "--verbose"])  # --verbose after the command works too


def test_help_still_exits_zero(capfd):
    assert main(["info", "--help"]) == 0
    assert "examples:" in capfd.readouterr().out


def _shell(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolchain", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["info-missing-dir", "run-unknown-variant", "export-bad-task", "train-unknown-key"])
def test_from_the_shell(paths, name):
    args, words, argparse_error = CASES[name]
    proc = _shell(*_argv(args, paths))
    _check_one_sentence(proc.returncode, proc.stdout, proc.stderr, words)
    verbose = _shell(*_argv(args, paths), "--verbose")
    assert verbose.returncode != 0
    if not argparse_error:
        assert "Traceback (most recent call last)" in verbose.stderr and words in verbose.stderr


def test_from_the_shell_cuda_unusable_shows_no_native_log_lines(paths, cuda_unusable):
    if not cuda_unusable:
        pytest.skip("CUDA works here")
    args, words, _ = CUDA_CASES["run-cuda-unusable"]
    proc = _shell(*_argv(args, paths))
    _check_one_sentence(proc.returncode, proc.stdout, proc.stderr, words)
