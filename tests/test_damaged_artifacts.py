"""A table of damaged artifacts: each is refused at load() with one ArtifactError sentence that names the
damaged file and the fix, and by the command line with exit 2, one line on stderr and no traceback.

The faults: flipped and cut bytes in model.onnx and in a variant file, missing files, manifests that are
not JSON, not an object, from a newer schema, with keys missing or of the wrong type, a tokenizer that is
missing or corrupt, and ONNX files newer than the installed onnxruntime (opset, IR version).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from toolchain.cli import commands as cli
from toolchain.runtime import ArtifactError, ToolchainError, load
from toolchain.runtime.manifest import sha256_file

FIX = r"(re-export|re-run 'toolchain export'|upgrade (the toolchain|onnxruntime))"


# -- building the faults ------------------------------------------------------------------------------------
def _manifest(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def _write_manifest(art: Path, data: dict) -> None:
    (art / "manifest.json").write_text(json.dumps(data, indent=2))


def _edit(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(art: Path) -> None:
        data = _manifest(art)
        fn(data)
        _write_manifest(art, data)

    return apply


def _flip(name: str) -> Callable[[Path], None]:
    def apply(art: Path) -> None:
        raw = bytearray((art / name).read_bytes())
        for at in (len(raw) // 3, len(raw) // 2):
            raw[at] ^= 0xFF
        (art / name).write_bytes(bytes(raw))

    return apply


def _truncate(name: str, rehash: bool = False) -> Callable[[Path], None]:
    def apply(art: Path) -> None:
        path = art / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        if rehash:
            _rehash(art, name)

    return apply


def _rehash(art: Path, name: str) -> None:
    """Record ``name``'s current sha256 and size, so the fault gets past the integrity check."""
    data = _manifest(art)
    for v in data["variants"].values():
        for c in v["components"].values():
            if c["file"] == name:
                c["sha256"], c["bytes"] = sha256_file(art / name), (art / name).stat().st_size
    _write_manifest(art, data)


def _newer_onnx(opset: int | None = None, ir_version: int | None = None) -> Callable[[Path], None]:
    """Stamp model.onnx with an opset / IR version newer than onnxruntime runs, and re-hash it."""
    def apply(art: Path) -> None:
        onnx = pytest.importorskip("onnx")
        model = onnx.load(str(art / "model.onnx"))
        if opset is not None:
            for o in model.opset_import:
                if o.domain in ("", "ai.onnx"):
                    o.version = opset
        if ir_version is not None:
            model.ir_version = ir_version
        onnx.save(model, str(art / "model.onnx"))
        _rehash(art, "model.onnx")

    return apply


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda art: (art / name).write_bytes(content)


def _remove(name: str) -> Callable[[Path], None]:
    return lambda art: (art / name).unlink()


def _half_manifest(art: Path) -> None:
    text = (art / "manifest.json").read_text()
    (art / "manifest.json").write_text(text[: len(text) // 2])


def _set(*keys: str, value) -> Callable[[Path], None]:
    def fn(data: dict) -> None:
        for k in keys[:-1]:
            data = data[k]
        data[keys[-1]] = value

    return _edit(fn)


def _drop(*keys: str) -> Callable[[Path], None]:
    def fn(data: dict) -> None:
        for k in keys[:-1]:
            data = data[k]
        del data[keys[-1]]

    return _edit(fn)


# (id, fault, variant to load, regex the message must match (it names the file), manifest-level?)
# Manifest-level faults are also refused by `toolchain info`, which reads only the manifest.
FAULTS = [
    # the ONNX files
    ("flipped-bytes-model", _flip("model.onnx"), "fp32", r"model\.onnx does not match the sha256", False),
    ("flipped-bytes-variant", _flip("model.int8.onnx"), "int8", r"model\.int8\.onnx does not match the sha256", False),
    ("flipped-bytes-variant-auto", _flip("model.int8.onnx"), "auto", r"model\.int8\.onnx does not match the sha256", False),
    ("truncated-model", _truncate("model.onnx"), "fp32", r"model\.onnx does not match the sha256", False),
    ("truncated-variant", _truncate("model.int8.onnx"), "int8", r"model\.int8\.onnx does not match the sha256", False),
    ("truncated-model-rehashed", _truncate("model.onnx", rehash=True), "fp32",
     r"ONNX Runtime cannot load \S*model\.onnx \(.*[Pp]rotobuf", False),
    ("garbage-model-rehashed", lambda art: (_write("model.onnx", b"\x00garbage" * 99)(art), _rehash(art, "model.onnx")),
     "fp32", r"ONNX Runtime cannot load \S*model\.onnx", False),
    ("missing-model", _remove("model.onnx"), "fp32", r"model\.onnx is missing although manifest\.json lists it", False),
    ("missing-variant-file", _remove("model.int8.onnx"), "int8", r"model\.int8\.onnx is missing although", False),
    ("opset-too-new", _newer_onnx(opset=99), "fp32",
     (r"model\.onnx needs ONNX opset 99, newer than onnxruntime \d+\.\d+\S* runs \(up to opset \d+\); "
      r"re-export with --opset \d+ or lower, or upgrade onnxruntime\.$"), False),
    ("ir-version-too-new", _newer_onnx(ir_version=99), "fp32",
     r"model\.onnx has ONNX IR version 99, newer than onnxruntime \S+ reads \(up to \d+\); .*upgrade onnxruntime\.$",
     False),
    # the tokenizer
    ("missing-tokenizer", _remove("tokenizer.json"), "auto", r"tokenizer\.json is missing although manifest\.json names it",
     False),
    ("corrupt-tokenizer", _write("tokenizer.json", b"\x89PNG\r\n\x1a\n not a tokenizer"), "auto",
     r"tokenizer\.json cannot be loaded as a tokenizers file", False),
    ("truncated-tokenizer", _truncate("tokenizer.json"), "auto", r"tokenizer\.json cannot be loaded as a tokenizers file",
     False),
    ("tokenizer-outside", _set("tokenizer", "file", value="../../etc/passwd"), "auto",
     r"manifest\.json names a tokenizer outside the artifact", False),
    # the manifest: missing, not JSON, not an object
    ("missing-manifest", _remove("manifest.json"), "auto", r"manifest\.json is missing", True),
    ("manifest-bad-json", _write("manifest.json", b"{not json"), "auto", r"manifest\.json cannot be read as JSON", True),
    ("manifest-empty", _write("manifest.json", b""), "auto", r"manifest\.json cannot be read as JSON", True),
    ("manifest-binary", _write("manifest.json", b"\xff\xfe\x00\x81garbage"), "auto",
     r"manifest\.json cannot be read as JSON", True),
    ("manifest-truncated", _half_manifest, "auto", r"manifest\.json cannot be read as JSON", True),
    ("manifest-not-object", _write("manifest.json", b"[1, 2]"), "auto", r"manifest\.json is not a JSON object", True),
    # the manifest: schema
    ("schema-newer", _set("schema_version", value=3), "auto",
     r"manifest\.json has schema_version 3, newer than this toolchain's 2; upgrade the toolchain", True),
    ("schema-missing", _drop("schema_version"), "auto", r"manifest\.json has no integer schema_version", True),
    ("schema-string", _set("schema_version", value="1"), "auto", r"manifest\.json has no integer schema_version", True),
    # the manifest: missing keys
    *[(f"missing-key-{k}", _drop(k), "auto", rf"manifest\.json lacks the key '{k}'", True)
      for k in ("task", "variants", "max_length", "inputs", "outputs")],
    ("no-variants", _set("variants", value={}), "auto", r"manifest\.json lists no variants", True),
    *[(f"variant-lacks-{k}", _drop("variants", "fp32", "components", "model", k), "auto",
       rf"manifest\.json: variant 'fp32' \(component 'model'\) lacks {k}", True) for k in ("file", "bytes")],
    ("variant-lacks-precision", _drop("variants", "fp32", "precision"), "auto",
     r"manifest\.json: variant 'fp32' lacks precision", True),
    # the manifest: wrong types
    ("task-not-string", _set("task", value=5), "auto", r"manifest\.json: task should be a string, not 5", True),
    ("task-unknown", _set("task", value="summarization"), "auto",
     r"manifest\.json is for task 'summarization', which this toolchain cannot run", True),
    ("max-length-string", _set("max_length", value="128"), "auto",
     r"manifest\.json: max_length should be a positive integer, not \"128\"", True),
    ("max-length-negative", _set("max_length", value=-1), "auto",
     r"manifest\.json: max_length should be a positive integer, not -1", True),
    ("inputs-object", _set("inputs", value={"input_ids": "int64"}), "auto", r"manifest\.json: inputs should be a list", True),
    ("outputs-unnamed", _set("outputs", value=[{"dtype": "float32"}]), "auto",
     r"manifest\.json: every entry of inputs and outputs should be an object with a name", True),
    ("labels-string", _set("labels", value="negative,positive"), "auto", r"manifest\.json: labels should be a list", True),
    ("labels-numbers", _set("labels", value=[0, 1]), "auto", r"manifest\.json: labels should be a list of strings", True),
    ("tokenizer-string", _set("tokenizer", value="tokenizer.json"), "auto",
     r"manifest\.json: tokenizer should be an object", True),
    ("variants-list", _set("variants", value=[{"file": "model.onnx"}]), "auto", r"manifest\.json lists no variants", True),
    ("variant-not-object", _set("variants", "int8", value="model.int8.onnx"), "auto",
     r"manifest\.json: variant 'int8' is not an object", True),
    ("variant-file-number", _set("variants", "fp32", "components", "model", "file", value=5), "auto",
     r"manifest\.json: variants\.fp32\.components\.model\.file should be a string, not 5", True),
    ("variant-sha-null", _set("variants", "fp32", "components", "model", "sha256", value=None), "auto",
     r"manifest\.json: variants\.fp32\.components\.model\.sha256 should be a string, not null", True),
    ("variant-bytes-string", _set("variants", "int8", "components", "model", "bytes", value="1 MB"), "auto",
     r"manifest\.json: variants\.int8\.components\.model\.bytes should be a positive integer", True),
    ("variant-passed-string", _set("variants", "int8", "passed", value="yes"), "auto",
     r"manifest\.json: variants\.int8\.passed should be true or false, not \"yes\"", True),
    ("variant-latency-list", _set("variants", "int8", "latency", value=[1.0]), "auto",
     r"manifest\.json: variants\.int8\.latency should be an object", True),
    ("variant-outside", _set("variants", "int8", "components", "model", "file", value="../model.onnx"), "int8",
     r"manifest\.json: variant 'int8' points outside the artifact", False),
]


@pytest.fixture(scope="module")
def pristine(classifier_artifact, tmp_path_factory) -> Path:
    """A tiny classifier artifact with a second variant (int8: a copy of fp32, so it needs no quantizer)."""
    art = tmp_path_factory.mktemp("damaged") / "pristine"
    shutil.copytree(classifier_artifact, art)
    shutil.copy(art / "model.onnx", art / "model.int8.onnx")
    data = _manifest(art)
    data["variants"]["fp32"]["latency"] = {"cpu": {"p50_ms": 5.0}}
    data["variants"]["int8"] = {**data["variants"]["fp32"], "precision": "int8", "latency": {"cpu": {"p50_ms": 1.0}},
                                "components": {"model": {**data["variants"]["fp32"]["components"]["model"],
                                                         "file": "model.int8.onnx"}}}  # benched faster: auto picks it
    _write_manifest(art, data)
    assert load(art, provider="cpu").info()["variant"] == "int8"
    return art


@pytest.fixture
def damaged(pristine, tmp_path, request) -> tuple[Path, str, str, bool]:
    _, fault, variant, message, manifest_level = request.param
    art = tmp_path / "art"
    shutil.copytree(pristine, art)
    fault(art)
    return art, variant, message, manifest_level


def _one_sentence(text: str) -> None:
    assert "\n" not in text.strip(), text
    assert "Traceback" not in text and "ONNXRuntimeError" not in text and "onnxruntime_src" not in text, text
    assert len(text) < 500, text


@pytest.mark.parametrize("damaged", FAULTS, ids=[f[0] for f in FAULTS], indirect=True)
def test_damaged_artifact_is_refused(damaged, capfd):
    art, variant, message, manifest_level = damaged
    with pytest.raises(ArtifactError) as err:
        load(art, variant=variant, provider="cpu")
    text = str(err.value)
    assert isinstance(err.value, ToolchainError)
    assert re.search(message, text), text
    assert re.search(FIX, text), text
    _one_sentence(text)

    capfd.readouterr()
    assert cli.main(["run", str(art), "a fine film", "--variant", variant, "--provider", "cpu"]) == cli.EXIT_USER_ERROR
    out, errs = capfd.readouterr()
    assert out == "" and errs.startswith("error: ") and errs.endswith("\n"), (out, errs)
    _one_sentence(errs)  # nothing else on stderr either: no ONNX Runtime log lines
    # info checks every variant file's sha256 and the tokenizer's presence too; a file that only fails to
    # parse (rehashed garbage, too-new opset, corrupt tokenizer) is found by load/run alone
    if manifest_level or re.search(r"sha256|is missing|outside", message):
        assert cli.main(["info", str(art)]) == cli.EXIT_USER_ERROR
        out, errs = capfd.readouterr()
        assert out == "" and errs.startswith("error: "), (out, errs)
        _one_sentence(errs)


def test_fault_table_covers_the_brief():
    ids = {f[0] for f in FAULTS}
    for wanted in ("flipped-bytes-model", "flipped-bytes-variant", "truncated-model", "missing-manifest",
                   "manifest-bad-json", "missing-variant-file", "schema-newer", "missing-tokenizer",
                   "corrupt-tokenizer", "opset-too-new"):
        assert wanted in ids
    assert len(ids) == len(FAULTS)


@pytest.mark.parametrize("fault", ["flipped-bytes-variant-auto", "opset-too-new", "manifest-bad-json"])
def test_command_line_in_a_fresh_process(pristine, tmp_path, fault):
    """The real `toolchain` program: exit 2, one line on stderr, nothing from ONNX Runtime's own logger."""
    _, apply, variant, message, manifest_level = next(f for f in FAULTS if f[0] == fault)
    art = tmp_path / "art"
    shutil.copytree(pristine, art)
    apply(art)
    cmd = ["info", str(art)] if manifest_level else ["run", str(art), "a fine film", "--variant", variant,
                                                     "--provider", "cpu"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "toolchain", *cmd], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
