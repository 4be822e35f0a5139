"""Pack everything a GPU box without a package index needs for tests/gpu/run_on_gpu.sh, in parts that each fit
one device call beside the working tree (the device tool sends at most 64 MiB a call, tree included).

    python tests/gpu/pack.py --out .gpu [--work DIR] [--ort 1.31.1] [--python-version 3.12]

Built here, on CPU, where the exporters are installed: the GPU checks' artifacts (tests/gpu/artifacts.py), with
the source models they were exported from at the same absolute paths (manifests record them); the
onnxruntime-gpu wheel for the box's Python; this environment's transformers, tokenizers and huggingface_hub
wheels (the box's own newer ones do not fit the toolchain); a snapshot of the working tree, so files edited
while the device runs cannot change what is tested. OUT/p0 .. OUT/pN each hold one part (p0 the SHA256SUMS,
the last one go.sh); the lines printed at the end are the device calls, one per part, back to back (a warm
machine keeps /tmp between calls and goes back after about 30 s idle).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MIB = 64  # what one device call may carry, the working tree included
MARGIN_MIB = 2
PINNED = ("transformers", "tokenizers", "huggingface_hub")  # the box's own versions break the toolchain's pins
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
GO = Path(__file__).with_name("go_on_device.sh")


def tree_files(root: Path = ROOT) -> list[str]:
    """What every device call sends anyway: tracked files and untracked ones git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                           check=True).stdout.decode().split("\0")
    return [n for n in names if n and (root / n).is_file()]


def tree_mib(root: Path = ROOT) -> float:
    return sum((root / n).stat().st_size for n in tree_files(root)) / 2**20


def part_bytes(tree: float) -> int:
    size = int((LIMIT_MIB - MARGIN_MIB - tree) * 2**20)
    if size < 8 * 2**20:
        sys.exit(f"pack: the working tree is {tree:.1f} MiB, which leaves no room for parts in a {LIMIT_MIB} MiB call.")
    return size


def split(payload: Path, out: Path, size: int) -> list[Path]:
    """PAYLOAD cut into OUT/p0/part0, OUT/p1/part1, ... of SIZE bytes; OUT/p0/SHA256SUMS holds the whole's hash."""
    digest, dirs = hashlib.sha256(), []
    with payload.open("rb") as src:
        while chunk := src.read(size):
            digest.update(chunk)
            d = out / f"p{len(dirs)}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"part{len(dirs)}").write_bytes(chunk)
            dirs.append(d)
    (out / "p0" / "SHA256SUMS").write_text(f"{digest.hexdigest()}  payload.tar\n")
    return dirs


def _download(spec: str, dest: Path, python_version: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--implementation",
           "cp", "--python-version", python_version, "-d", str(dest), spec]
    for p in PLATFORMS:
        cmd[cmd.index("-d"):cmd.index("-d")] = ["--platform", p]
    subprocess.run(cmd, check=True)


def _sources(work: Path) -> list[Path]:
    """Each artifact's source model directory (absolute in its manifest), outside WORK or not."""
    found = []
    for manifest in work.glob("*/manifest.json"):
        path = json.loads(manifest.read_text()).get("source", {}).get("path")
        if path and Path(path).is_dir() and work not in Path(path).parents:
            found.append(Path(path))
    return sorted(set(found))


def _tar_absolute(tar: tarfile.TarFile, path: Path) -> None:
    """Under abs/, to be copied to the same absolute path on the box (go_on_device.sh)."""
    tar.add(path, arcname="abs/" + str(path.resolve()).lstrip("/"))


def build_payload(work: Path, stage: Path, ort: str, python_version: str) -> Path:
    sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "tests")) if p not in sys.path]
    from gpu.artifacts import decoder, minilm, with_fp16

    with_fp16(minilm(work))
    with_fp16(decoder(work)[1])
    with_fp16(decoder(work, exporter="ort-genai")[1])
    wheels = stage / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _download(f"onnxruntime-gpu=={ort}", stage, python_version)
    for dist in PINNED:
        _download(f"{dist}=={md.version(dist)}", wheels, python_version)
    payload = stage / "payload.tar"
    with tarfile.open(payload, "w") as tar:
        for n in tree_files():
            tar.add(ROOT / n, arcname=f"snap/{n}")
        for wheel in stage.glob("onnxruntime_gpu-*.whl"):
            tar.add(wheel, arcname=f"ort/{wheel.name}")
        tar.add(wheels, arcname="wheels")
        for path in (work, *_sources(work)):
            _tar_absolute(tar, path)
    return payload


def calls(dirs: list[Path]) -> list[str]:
    rel = lambda d: os.path.relpath(d, ROOT)  # noqa: E731
    lines = [f'run carry=["{rel(d)}"]: mkdir -p /tmp/parts && cp {rel(d)}/* /tmp/parts/' for d in dirs[:-1]]
    lines.append(f'run carry=["{rel(dirs[-1])}"] timeout_s=540: bash {rel(dirs[-1])}/go_on_device.sh {rel(dirs[-1])}')
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a folder inside the repo that git ignores")
    parser.add_argument("--work", type=Path, default=Path("/tmp/toolchain-gpu/work"))
    parser.add_argument("--ort", default="1.31.1")
    parser.add_argument("--python-version", default="3.12")
    args = parser.parse_args(argv)
    out, work = args.out.resolve(), args.work.resolve()
    stage = work.parent / "stage"
    payload = build_payload(work, stage, args.ort, args.python_version)
    dirs = split(payload, out, part_bytes(tree_mib()))
    (dirs[-1] / GO.name).write_bytes(GO.read_bytes())
    (dirs[-1] / "WORK").write_text(f"{work}\n")
    print("\n".join(calls(dirs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
