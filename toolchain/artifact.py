"""Writing artifacts atomically: build beside the target, then swap it into place in one step.

A failed or killed run leaves the previous artifact untouched and no half-written one at its path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .runtime.errors import ToolchainError
from .runtime.manifest import MANIFEST

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temp file and os.replace, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale(parent: Path, name: str) -> None:
    """Remove temp dirs that killed runs left beside ``name`` (their process is gone)."""
    for p in parent.glob(f".{name}.tmp-*"):
        try:
            pid = int(p.name.split(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def check_target(out: Path, marker: str = MANIFEST) -> None:
    """Refuse to replace a path that we did not write (it lacks ``marker``), so user files are never lost."""
    if out.exists() and not out.is_dir():
        raise ToolchainError(f"{out} exists and is a file; choose another --out.")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        kind = "an artifact" if marker == MANIFEST else f"one of ours (no {marker})"
        raise ToolchainError(f"{out} is a non-empty directory that is not {kind}; choose another --out or empty it.")


@contextmanager
def atomic_dir(out: str | Path, marker: str = MANIFEST) -> Iterator[Path]:
    """Yield a fresh temp dir beside ``out``; on success it replaces ``out`` in one step."""
    out = Path(out).absolute()
    check_target(out, marker)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(parent, out.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; an artifact is a normal directory
    except OSError as exc:
        raise ToolchainError(f"cannot write in {parent} ({exc.strerror}); choose a writable --out.") from None
    try:
        yield tmp
        if out.exists() and _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous artifact
            return
        if out.exists():  # no renameat2: two renames, the old copy kept until the new one is in place
            old = parent / f".{out.name}.tmp-{os.getpid()}-old"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Serialise writers of one artifact (quantize, optimize, bench) with an advisory file lock."""
    import fcntl

    try:
        fh = open(Path(root) / ".lock", "a")
    except OSError as exc:
        raise ToolchainError(f"cannot write in {root} ({exc.strerror}); make the artifact writable.") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_manifest(root: str | Path, change) -> dict[str, Any]:
    """Apply ``change(data)`` to manifest.json under the artifact's lock and write it atomically."""
    from .runtime.manifest import read_manifest

    root = Path(root)
    with locked(root):
        data = read_manifest(root).to_dict()  # validates before we touch it
        change(data)
        write_json(root / MANIFEST, data)
    return data


def add_variant(root: str | Path, name: str, built: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Move the finished file ``built`` into the artifact as variant ``name`` and list it in the manifest.

    The file gets a name no current variant uses, the manifest is swapped in one step, and only
    then is a replaced variant's old file removed, so a kill at any point leaves a loadable artifact.
    """
    from .runtime.manifest import REFERENCE_VARIANT, read_manifest, sha256_file

    root = Path(root)
    if name == REFERENCE_VARIANT:
        raise ToolchainError(f"variant name {name!r} is reserved for the reference export; choose another.")
    sha = sha256_file(built)
    with locked(root):
        current = read_manifest(root)
        used = {v.file for v in current.variants.values()}
        file = f"model.{name}.onnx"
        if file in used:
            file = f"model.{name}.{sha[:8]}.onnx"
        os.replace(built, root / file)
        old = current.variants.get(name)
        data = current.to_dict()
        data["variants"][name] = {**entry, "file": file, "sha256": sha, "bytes": (root / file).stat().st_size}
        write_json(root / MANIFEST, data)
        if old and old.file != file and old.file not in {v["file"] for v in data["variants"].values()}:
            (root / old.file).unlink(missing_ok=True)
    return data
