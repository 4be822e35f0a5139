"""tests/gpu/pack.py and go_on_device.sh on CPU: the payload's layout, parts that fit a device call beside the
tree, and the join on the box (parts from earlier calls + the last one, checked, unpacked to absolute paths)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pack  # noqa: E402

GO = Path(__file__).with_name("go_on_device.sh")
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None,
                                reason="needs bash and coreutils")


def test_parts_leave_room_for_the_tree():
    assert pack.part_bytes(12.3) == int((64 - 2 - 12.3) * 2**20)
    with pytest.raises(SystemExit, match="leaves no room"):
        pack.part_bytes(60)
    assert 0 < pack.tree_mib() < 64


@pytest.fixture
def payload(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A payload built by build_payload with the heavy steps stood in: artifacts, a source model outside WORK,
    downloaded wheels."""
    work, src = tmp_path / "work", tmp_path / "elsewhere" / "model"
    src.mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"w" * 5000)
    art = work / "minilm"
    art.mkdir(parents=True)
    (art / "model.onnx").write_bytes(bytes(range(256)) * 40)
    (art / "manifest.json").write_text(json.dumps({"source": {"path": str(src)}}))
    stub = types.ModuleType("gpu.artifacts")
    stub.minilm = lambda w: art
    stub.decoder = lambda w, exporter="optimum": (src, art)
    stub.with_fp16 = lambda a: a
    monkeypatch.setitem(sys.modules, "gpu.artifacts", stub)
    monkeypatch.setattr(pack, "_download", lambda spec, dest, py: (Path(dest) / (
        "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl" if spec.startswith("onnxruntime-gpu")
        else spec.split("==")[0] + "-1-py3-none-any.whl")).write_bytes(spec.encode()))
    return pack.build_payload(work, tmp_path / "stage", "1.31.1", "3.12"), src


def test_payload_holds_the_snapshot_wheels_and_absolute_paths(payload):
    path, src = payload
    names = tarfile.open(path).getnames()
    assert "snap/tests/gpu/run_on_gpu.sh" in names and "snap/toolchain/__init__.py" in names
    assert "ort/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl" in names
    assert {f"wheels/{d}-1-py3-none-any.whl" for d in pack.PINNED} <= set(names)
    assert "abs/" + str(src / "weights.bin").lstrip("/") in names  # the source model, where the manifest says


def _go(last: Path, parts: Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PARTS": str(parts), "DEST": str(tmp / "dest"), "ABS_ROOT": str(tmp / "root"),
           "GO_JOIN_ONLY": "1"}
    (tmp / "root").mkdir(exist_ok=True)
    return subprocess.run(["bash", str(GO), str(last)], capture_output=True, text=True, env=env, timeout=120)


def test_parts_join_on_the_box(payload, tmp_path):
    path, src = payload
    dirs = pack.split(path, tmp_path / "out", 4096)
    assert len(dirs) >= 3 and all((d / f"part{i}").stat().st_size <= 4096 for i, d in enumerate(dirs))
    lines = pack.calls(dirs)
    assert len(lines) == len(dirs) and "go_on_device.sh" in lines[-1] and "go_on_device" not in lines[0]
    box = tmp_path / "box-parts"
    box.mkdir()
    for d in dirs[:-1]:  # what the earlier calls left on the box
        for f in d.iterdir():
            shutil.copy(f, box)
    r = _go(dirs[-1], box, tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "root" / str(src).lstrip("/") / "weights.bin").read_bytes() == b"w" * 5000
    assert (tmp_path / "dest" / "snap" / "tests" / "gpu" / "go_on_device.sh").is_file()


def test_a_missed_part_is_refused(payload, tmp_path):
    path, _ = payload
    dirs = pack.split(path, tmp_path / "out", 4096)
    box = tmp_path / "box-parts"
    box.mkdir()
    for d in dirs[:-1:2]:  # every other call missed
        for f in d.iterdir():
            shutil.copy(f, box)
    r = _go(dirs[-1], box, tmp_path)
    assert r.returncode == 5 and "send every part again" in r.stderr
    assert not (tmp_path / "dest").exists()
