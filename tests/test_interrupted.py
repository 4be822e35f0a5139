"""Interrupted runs and failed writes never cost the previous artifact.

`toolchain export`, `quantize` and `train` run as real processes and are killed (SIGKILL) or interrupted
(SIGINT, as Ctrl-C) at several points: when their temp dir appears, or when a progress line says they
reached a stage. After each kill the previous artifact at OUT is byte-for-byte unchanged and loads and
runs; a temp dir a killed process left is swept by the next run; training resumes from its last complete
checkpoint. Disk full, quota, file-size limit, read-only and permission failures are simulated (and one
file-size limit is real, with RLIMIT_FSIZE): each is one ArtifactError sentence (exit 2 from the command
line), the previous artifact is intact and no temp dir is left behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import classifier_recipe

from toolchain.artifact import atomic as art_mod
from toolchain.cli import commands as cli
from toolchain.artifact.atomic import atomic_dir, sweep_stale, write_json
from toolchain.artifact.manifest_writes import update_manifest
from toolchain.runtime import ArtifactError, load
from toolchain.runtime.manifest import sha256_file

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}


# -- helpers --------------------------------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file of the artifact under ROOT, by relative path (the lock file and the temp
    files or dirs of runs in progress or killed, ``.NAME.tmp-*``, aside: they are not part of it)."""
    def ours(p: Path) -> bool:
        rel = p.relative_to(root).parts
        return p.is_file() and rel != (".lock",) and not (rel[0].startswith(".") and ".tmp-" in rel[0])

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if ours(p)}


def _temps(parent: Path, name: str = "*") -> list[Path]:
    return sorted(parent.glob(f".{name}.tmp-*"))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# The `toolchain` program, which can hold still for a minute right after printing a progress line that
# contains $PAUSE_AT: a signal sent on seeing that line then lands at that point, however slow the machine.
PROGRAM = """
import os, signal, sys, time
import toolchain.cli.commands as cli
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C's handler even where a background job ignores it
mark, say = os.environ.get("PAUSE_AT"), cli._say
def pausing(msg):
    say(msg)
    if mark and mark in msg:
        time.sleep(60)
cli._say = pausing
sys.exit(cli.main(sys.argv[1:]))
"""


class Run:
    """`toolchain ARGS` in a child process whose output is collected line by line in a thread."""

    def __init__(self, *args: str, pause_at: str | None = None):
        env = {**ENV, "PAUSE_AT": pause_at or ""}
        self.proc = subprocess.Popen([sys.executable, "-c", PROGRAM, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def kill_when(self, sig: int, marker: str | None = None, path_glob: tuple[Path, str] | None = None,
                  timeout: float = 120) -> int:
        """Send SIG as soon as MARKER is printed or a path matching PATH_GLOB exists (a .json one: and parses);
        return the exit code. Fails if the process ended before the point was reached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reached = (marker is not None and marker in self.output) or \
                      (path_glob is not None and any(_ready(p) for p in path_glob[0].glob(path_glob[1])))
            if reached:
                self.proc.send_signal(sig)
                break
            if self.proc.poll() is not None:
                pytest.fail(f"the process ended before {marker or path_glob[1]!r}: {self.output[-2000:]}")
            time.sleep(0.01)
        else:
            self.proc.kill()
            pytest.fail(f"{marker or path_glob[1]!r} not reached in {timeout} s: {self.output[-2000:]}")
        code = self.proc.wait(timeout=120)
        self._reader.join(timeout=10)
        return code


def _ready(path: Path) -> bool:
    if path.suffix != ".json":
        return True
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def _assert_interrupted(code: int, sig: int, run: Run) -> None:
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL, run.output[-2000:]
    else:  # Ctrl-C: the command says so in one line and exits 130
        assert code == cli.EXIT_INTERRUPTED, run.output[-2000:]
        assert "Traceback" not in run.output and "interrupted; nothing was left half-written." in run.output


def _assert_artifact_unchanged(out: Path, before: dict[str, str]) -> None:
    assert _snapshot(out) == before
    data = json.loads((out / "manifest.json").read_text())
    for name, v in data["variants"].items():
        assert sha256_file(out / v["components"]["model"]["file"]) == v["components"]["model"]["sha256"], name
        result = load(out, variant=name, provider="cpu").classify(["a moving, witty film"])
        assert result[0]["label"] in ("negative", "positive")


def _fake_variant(out: Path) -> None:
    """An int8 variant that is a copy of fp32: a second listed file, without running the quantizer."""
    shutil.copy(out / "model.onnx", out / "model.int8.onnx")
    data = json.loads((out / "manifest.json").read_text())
    fp32 = data["variants"]["fp32"]
    data["variants"]["int8"] = {**fp32, "precision": "int8",
                                "components": {"model": {**fp32["components"]["model"], "file": "model.int8.onnx"}}}
    write_json(out / "manifest.json", data)


@pytest.fixture
def artifact(classifier_artifact, tmp_path) -> Path:
    """A previous, good artifact at OUT (fp32 + int8) that the interrupted runs try to replace or extend."""
    out = tmp_path / "dist" / "art"
    shutil.copytree(classifier_artifact, out)
    _fake_variant(out)
    return out


# -- SIGKILL / SIGINT at several points -------------------------------------------------------------------------
EXPORT_POINTS = [  # (signal, progress line to stop at)
    (signal.SIGKILL, "exporting"),  # the temp dir exists, the exporter is about to write into it
    (signal.SIGINT, "checking parity"),  # the temp dir holds a complete-looking artifact
    (signal.SIGKILL, "checking parity"),
]


def test_killed_export_keeps_the_previous_artifact(artifact, tiny_model):
    from toolchain.export.core import export

    src = tiny_model("bert", "text-classification")
    before = _snapshot(artifact)
    for sig, marker in EXPORT_POINTS:
        run = Run("export", str(src), "--task", "text-classification", "--out", str(artifact), pause_at=marker)
        code = run.kill_when(sig, marker)
        _assert_interrupted(code, sig, run)
        _assert_artifact_unchanged(artifact, before)
        if sig == signal.SIGINT:
            assert _temps(artifact.parent) == []  # Ctrl-C cleans up after itself
        else:
            assert _temps(artifact.parent)  # a killed process cannot; the next run sweeps it
    export(src, artifact, task="text-classification")
    assert _temps(artifact.parent) == [] and [p.name for p in artifact.parent.iterdir()] == ["art"]
    assert load(artifact, provider="cpu").classify(["fine"])[0]["label"] in ("negative", "positive")


QUANTIZE_POINTS = [  # (signal, progress line to stop at)
    (signal.SIGKILL, "building int8"),
    (signal.SIGINT, "building int8: u8s8-7bit"),  # avx2's second weight format: the first was built and gated
    (signal.SIGKILL, "timing"),  # every candidate built and gated
]


def test_killed_quantize_keeps_the_previous_artifact(artifact):
    from toolchain.variants.quantize import quantize

    before = _snapshot(artifact)
    for sig, marker in QUANTIZE_POINTS:
        run = Run("quantize", str(artifact), "--mode", "int8-dynamic", "--limit", "16", "--target", "avx2",
                  pause_at=marker)
        code = run.kill_when(sig, marker)
        _assert_interrupted(code, sig, run)
        _assert_artifact_unchanged(artifact, before)
        if sig == signal.SIGINT:
            assert _temps(artifact) == []
    assert _temps(artifact, "int8")  # the SIGKILLed runs' work dirs, until the next run sweeps them
    report = quantize(artifact, "int8-dynamic", limit=16, target="avx2")
    assert _temps(artifact) == []
    data = json.loads((artifact / "manifest.json").read_text())
    listed = {v["components"]["model"]["file"] for v in data["variants"].values()}
    assert {p.name for p in artifact.glob("*.onnx")} == listed  # the replaced int8 file is gone, nothing unlisted
    int8 = data["variants"]["int8"]["components"]["model"]
    assert int8["sha256"] == sha256_file(artifact / int8["file"])
    load(artifact, variant="int8", provider="cpu").classify(["fine"])
    assert report.variant == "int8"


TRAIN_RECIPE = classifier_recipe("{model}", max_steps=60, save_steps=4, logging_steps=1, batch_size=4, max_length=16)


def _previous_model(src: Path, out: Path) -> dict[str, str]:
    shutil.copytree(src, out)
    (out / "training.json").write_text('{"previous": true}\n')
    return _snapshot(out)


def _unchanged_or_complete(out: Path, before: dict[str, str]) -> bool:
    """OUT is the previous model, byte for byte, or the complete new one; never anything in between.
    Returns True when it is the new one."""
    import transformers

    if _snapshot(out) == before:
        return False
    assert json.loads((out / "training.json").read_text())["step"] == 60
    transformers.AutoModelForSequenceClassification.from_pretrained(str(out))
    return True


def test_killed_training_keeps_the_previous_model_and_resumes(tiny_model, tmp_path):
    import transformers

    from toolchain.train.trainer import train

    src = tiny_model("bert", "text-classification")
    (tmp_path / "train.tsv").write_text("label\tsentence\n" + "".join(f"{i % 2}\tsentence number {i}\n" for i in range(40)))
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE.format(model=src))
    out = tmp_path / "model"
    ckpt = tmp_path / "model.checkpoints"
    before = _previous_model(src, out)

    # 1. Ctrl-C once a checkpoint is complete (Trainer writes trainer_state.json last)
    run = Run("train", str(recipe), "--out", str(out))
    _assert_interrupted(run.kill_when(signal.SIGINT, path_glob=(ckpt, "checkpoint-*/trainer_state.json")),
                        signal.SIGINT, run)
    assert _snapshot(out) == before and _temps(tmp_path, "model") == []
    transformers.AutoModelForSequenceClassification.from_pretrained(str(out))  # the previous model still loads
    assert any(ckpt.glob("checkpoint-*/trainer_state.json"))

    # 2. The next run resumes; SIGKILL while it writes the trained model (its temp dir beside OUT appeared)
    run = Run("train", str(recipe), "--out", str(out))
    _assert_interrupted(run.kill_when(signal.SIGKILL, path_glob=(tmp_path, ".model.tmp-*")), signal.SIGKILL, run)
    assert "resuming from the last checkpoint" in run.output
    _unchanged_or_complete(out, before)

    # 3. The next run: a checkpoint that a kill cut short (no trainer_state.json) is dropped, not resumed from;
    # the killed save's temp dir is swept. (Had the kill in 2 come after the swap, this run retrains from scratch.)
    resumable = ckpt.exists()
    broken = ckpt / "checkpoint-999"
    broken.mkdir(parents=True)
    (broken / "model.safetensors").write_bytes(b"cut short")
    said: list[str] = []
    result = train(recipe, out=out, progress=said.append)
    if resumable:
        assert any("resuming from the last checkpoint" in s and "checkpoint-999" not in s for s in said), said
    assert result.metrics["finetune"]["step"] == 60
    assert _unchanged_or_complete(out, before)
    assert not ckpt.exists()  # removed once the model is written
    assert _temps(tmp_path, "model") == []


# -- the swap itself ---------------------------------------------------------------------------------------------
def _write_artifact(tmp: Path, tag: str) -> None:
    (tmp / "manifest.json").write_text(json.dumps({"tag": tag}))
    (tmp / "model.onnx").write_bytes(tag.encode() * 100)


def test_swap_without_renameat2(tmp_path, monkeypatch):
    out = tmp_path / "art"
    with atomic_dir(out) as tmp:
        _write_artifact(tmp, "one")
    monkeypatch.setattr(art_mod, "_exchange", lambda a, b: False)
    with atomic_dir(out) as tmp:
        _write_artifact(tmp, "two")
    assert json.loads((out / "manifest.json").read_text())["tag"] == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_second_rename_failing_puts_the_old_artifact_back(tmp_path, monkeypatch):
    out = tmp_path / "art"
    with atomic_dir(out) as tmp:
        _write_artifact(tmp, "one")
    before = _snapshot(out)
    monkeypatch.setattr(art_mod, "_exchange", lambda a, b: False)
    real, failed = os.rename, []

    def rename(src, dst):
        if ".tmp-" in str(src) and Path(dst) == out and not failed:
            failed.append(src)
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        return real(src, dst)

    monkeypatch.setattr(art_mod.os, "rename", rename)
    with pytest.raises(ArtifactError, match=r"permission denied while writing .*art; choose a writable --out\.$"):
        with atomic_dir(out) as tmp:
            _write_artifact(tmp, "two")
    assert _snapshot(out) == before and _temps(tmp_path) == []


def test_kill_between_the_fallback_renames_is_repaired(tmp_path):
    """Killed after `out -> .out.tmp-PID-old` and before `tmp -> out`: the next run puts the old one back."""
    out = tmp_path / "art"
    with atomic_dir(out) as tmp:
        _write_artifact(tmp, "one")
    before = _snapshot(out)
    pid = _dead_pid()
    os.rename(out, tmp_path / f".art.tmp-{pid}-old")
    (tmp_path / f".art.tmp-{pid}-x1y2").mkdir()  # the new one, half-written
    with pytest.raises(RuntimeError):
        with atomic_dir(out):
            assert _snapshot(out) == before  # restored before the new run even starts writing
            raise RuntimeError("this run fails too")
    assert _snapshot(out) == before and _temps(tmp_path) == []


def test_stale_temp_files_inside_an_artifact_are_swept(artifact):
    pid = _dead_pid()
    (artifact / f".manifest.json.tmp-{pid}").write_text('{"half": ')
    (artifact / f".int8.tmp-{pid}-abc").mkdir()
    (artifact / f".int8.tmp-{pid}-abc" / "0.onnx").write_bytes(b"x")
    mine = artifact / f".int8.tmp-{os.getpid()}-live"  # a live process's work dir is left alone
    mine.mkdir()
    update_manifest(artifact, lambda d: d.update(note="x"))
    assert _temps(artifact) == [mine]
    sweep_stale(artifact)
    assert mine.is_dir()
    mine.rmdir()


# -- disk full, quota, file-size limit, read-only, permissions ---------------------------------------------------
WRITE_FAULTS = [  # (errno, what the sentence says, the fix for --out)
    (errno.ENOSPC, r"no space left on device while writing \S+; free space or choose another --out\.$"),
    (errno.EDQUOT, r"disk quota exceeded while writing \S+; free space or choose another --out\.$"),
    (errno.EFBIG, r"file-size limit \(ulimit -f\) while writing \S+; raise the limit or choose another --out\.$"),
    (errno.EROFS, r"\S+ is on a read-only file system; choose a writable --out\.$"),
    (errno.EACCES, r"permission denied while writing \S+; choose a writable --out\.$"),
]


def _assert_one_error_line(stderr: str, message: str) -> None:
    """Progress lines, then exactly one 'error: ' line saying MESSAGE; no traceback."""
    errors = [line for line in stderr.splitlines() if not line.startswith("[toolchain] ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr
    assert re.search(message, errors[0][len("error: "):]) and "Traceback" not in stderr, stderr


def _oserror(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


@pytest.mark.parametrize("code, message", WRITE_FAULTS, ids=[errno.errorcode[c] for c, _ in WRITE_FAULTS])
def test_export_write_failure_is_one_sentence(artifact, tiny_model, monkeypatch, capfd, code, message):
    """The exporter's write fails (optimum wraps the OSError): one sentence, old artifact intact, no temp dir."""
    import optimum.exporters.onnx as onnx_exporter

    def failing_export(*args, output, **kwargs):
        raise _oserror(code, Path(output) / "model.onnx")

    monkeypatch.setattr(onnx_exporter, "main_export", failing_export)
    before = _snapshot(artifact)
    src = tiny_model("bert", "text-classification")
    with pytest.raises(ArtifactError, match=message) as err:
        from toolchain.export.core import export

        export(src, artifact, task="text-classification")
    assert str(artifact) in str(err.value)
    assert _snapshot(artifact) == before and _temps(artifact.parent) == []

    capfd.readouterr()
    argv = ["export", str(src), "--task", "text-classification", "--out", str(artifact)]
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    errs = capfd.readouterr().err
    _assert_one_error_line(errs, message)
    assert _snapshot(artifact) == before and _temps(artifact.parent) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES], ids=["ENOSPC", "EROFS", "EACCES"])
def test_write_failures_at_each_step_of_atomic_dir(tmp_path, monkeypatch, code):
    """Creating the temp dir, writing into it, and the final swap: each failure is one sentence, old one kept."""
    out = tmp_path / "art"
    with atomic_dir(out) as tmp:
        _write_artifact(tmp, "one")
    before = _snapshot(out)
    message = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied while writing"}[code]

    with monkeypatch.context() as m:
        m.setattr(art_mod.tempfile, "mkdtemp", lambda **kw: (_ for _ in ()).throw(_oserror(code, tmp_path / ".x")))
        with pytest.raises(ArtifactError, match=message):
            with atomic_dir(out):
                pass
    with pytest.raises(ArtifactError, match=message):
        with atomic_dir(out) as tmp:
            raise _oserror(code, tmp / "model.onnx")
    with monkeypatch.context() as m:
        m.setattr(art_mod, "_exchange", lambda a, b: (_ for _ in ()).throw(_oserror(code, a)))
        with pytest.raises(ArtifactError, match=message):
            with atomic_dir(out) as tmp:
                _write_artifact(tmp, "two")
    assert _snapshot(out) == before and _temps(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only dirs")
def test_read_only_parent_for_real(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(ArtifactError, match=r"permission denied while writing \S+art; choose a writable --out\.$"):
            with atomic_dir(parent / "art"):
                pass
    finally:
        parent.chmod(0o755)
    assert list(parent.iterdir()) == []


def test_unreadable_source_is_not_reported_as_an_unwritable_output(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_dir(tmp_path / "art"):
            raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/else/model.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_quantize_disk_full_is_one_sentence(artifact, monkeypatch, capfd):
    """quantize writes into the artifact: the fix is worded for that, and nothing is left behind."""
    import toolchain.variants.quantize as qmod

    spec = qmod.MODES["int8-dynamic"]

    def full(src, dst, preset, plan):
        raise _oserror(errno.ENOSPC, dst)

    monkeypatch.setitem(qmod.MODES, "int8-dynamic", __import__("dataclasses").replace(spec, build=full))
    before = _snapshot(artifact)
    with pytest.raises(ArtifactError, match=r"^no space left on device while writing \S+art; free space and run it again\.$"):
        qmod.quantize(artifact, "int8-dynamic", limit=16)
    assert _snapshot(artifact) == before and _temps(artifact) == []
    capfd.readouterr()
    assert cli.main(["quantize", str(artifact), "--mode", "int8-dynamic", "--limit", "16"]) == cli.EXIT_USER_ERROR
    _assert_one_error_line(capfd.readouterr().err, r"^no space left on device")


def test_training_disk_full_is_one_sentence(tiny_model, tmp_path, monkeypatch):
    """safetensors reports a full disk as its own error type, with the OS's words in the message."""
    import transformers

    from toolchain.train.trainer import train

    src = tiny_model("bert", "text-classification")
    (tmp_path / "train.tsv").write_text("label\tsentence\n" + "".join(f"{i % 2}\tsentence {i}\n" for i in range(8)))
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE.format(model=src).replace("max_steps = 60", "max_steps = 2"))
    out = tmp_path / "model"
    before = _previous_model(src, out)

    def full(self, *args, **kwargs):
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                           'message: "No space left on device" })')

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full)
    with pytest.raises(ArtifactError, match=r"^no space left on device while writing \S+model; free space or choose "):
        train(recipe, out=out)
    assert _snapshot(out) == before and _temps(tmp_path, "model") == []


def test_real_file_size_limit(artifact):
    """A real EFBIG: quantize under RLIMIT_FSIZE smaller than the quantized model (SIGXFSZ ignored)."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    before = _snapshot(artifact)
    proc = subprocess.run([sys.executable, "-m", "toolchain", "quantize", str(artifact), "--mode", "int8-dynamic",
                           "--limit", "8"], capture_output=True, text=True, env=ENV, preexec_fn=limit, timeout=300)
    assert proc.returncode == cli.EXIT_USER_ERROR, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: a file grew past the file-size limit (ulimit -f) while writing"), proc.stderr[-2000:]
    assert last.endswith("; raise the limit and run it again."), last
    assert "Traceback" not in proc.stderr
    assert _snapshot(artifact) == before and _temps(artifact) == []
    load(artifact, variant="int8", provider="cpu").classify(["still fine"])
