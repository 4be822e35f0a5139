"""Writing artifacts atomically: build beside the target, then swap it into place in one step.

A failed or killed run leaves the previous artifact untouched and no half-written one at its path;
the temp files a killed run leaves behind are swept by the next run (their process is gone). A write
that fails for a reason the user can fix (disk full, quota, file-size limit, read-only file system,
permissions) is reported as one ArtifactError sentence that says what to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import glob
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from toolchain.runtime.errors import ArtifactError, ToolchainError
from toolchain.runtime.manifest import MANIFEST

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


# Write failures the user can fix, with the sentence that says how. {target}: what was being written;
# {free} / {limit} / {writable}: the fix, worded for a command that writes to --out or into an existing artifact.
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device while writing {target}; {free}.",
    errno.EDQUOT: "disk quota exceeded while writing {target}; {free}.",
    errno.EFBIG: "a file grew past the file-size limit (ulimit -f) while writing {target}; {limit}.",
    errno.EROFS: "{target} is on a read-only file system; {writable}.",
    errno.EACCES: "permission denied while writing {target}; {writable}.",
    errno.EPERM: "operation not permitted while writing {target}; {writable}.",
}
_FIXES = {
    False: {"free": "free space or choose another --out", "limit": "raise the limit or choose another --out",
            "writable": "choose a writable --out"},
    True: {"free": "free space and run it again", "limit": "raise the limit and run it again",
           "writable": "make the artifact directory writable"},
}
# Libraries that wrap an OSError in their own exception usually keep its strerror in the message.
_STRERRORS = {os.strerror(code): code for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)}


def _fsync(path: str | Path) -> None:
    """Flush a file, or a directory's renames, to disk (best effort: not every file system lets a
    directory be opened or synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` to disk before it is renamed into place (a crash then never
    leaves a complete-looking artifact with empty files)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(dirpath, name))
        _fsync(dirpath)


def write_error(exc: BaseException, target: Path, own: tuple[Path, ...] = (), in_place: bool = False,
                written: Path | None = None, needed: int = 0) -> ArtifactError | None:
    """The one-sentence ArtifactError for a failed write (disk full, quota, file-size limit, read-only,
    permissions) found in ``exc`` or the exceptions it wraps; None when it is not one of those.

    Permission errors count only where they name no file, or a file under, or a parent of, one of
    ``own`` (the paths being written), so an unreadable *source* is not reported as an unwritable output.
    Some writers (onnx's and protobuf's C++) ignore a short write and the failure shows up later as a
    corrupt file; for a failure from a library, the file system and the file-size limit are checked too
    (see _limit_hit: ``written`` is the dir being filled, ``needed`` the size of the largest file to write).
    """
    fixes = _FIXES[in_place]
    seen: set[int] = set()
    foreign = False
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        foreign = foreign or not isinstance(cur, ToolchainError)
        code = None
        if isinstance(cur, OSError) and cur.errno in _WRITE_ERRORS:
            code = cur.errno
            if code in (errno.EACCES, errno.EPERM) and cur.filename is not None:
                name = Path(os.fsdecode(cur.filename)).absolute()
                if not any(name == p or p in name.parents or name in p.parents for p in own):
                    code = None
        elif not isinstance(cur, OSError):
            code = next((c for s, c in _STRERRORS.items() if s in str(cur)), None)
        if code is not None:
            return ArtifactError(_WRITE_ERRORS[code].format(target=target, **fixes))
        cur = cur.__cause__ or cur.__context__
    code = _limit_hit(target, written, needed) if foreign else None
    return ArtifactError(_WRITE_ERRORS[code].format(target=target, **fixes)) if code else None


FULL_BYTES = 1 << 20  # a file system with less free space than this counts as full


def _limit_hit(target: Path, written: Path | None, needed: int) -> int | None:
    """ENOSPC when ``target``'s file system is full; EFBIG when the file-size limit (RLIMIT_FSIZE) is below
    ``needed`` or a file under ``written`` stopped exactly at it; else None."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY and soft >= 0:
            if needed > soft:
                return errno.EFBIG
            if written is not None and any(f.is_file() and f.stat().st_size == soft for f in written.rglob("*")):
                return errno.EFBIG
    except (ImportError, OSError, ValueError):
        pass
    probe = Path(target)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except (OSError, AttributeError):
        return None
    free = (st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    return errno.ENOSPC if free < FULL_BYTES else None


@contextmanager
def writing(target: str | Path, in_place: bool = True, also: tuple[str | Path, ...] = (),
            needed: int = 0) -> Iterator[None]:
    """Turn a failed write to ``target`` (or to the paths in ``also``) into one ArtifactError sentence:
    disk full, quota, file-size limit, read-only file system, no permission. ``needed``: the size of the
    largest file the work writes, when known (a file-size limit below it is reported as the cause)."""
    target = Path(target).absolute()
    try:
        yield
    except Exception as exc:
        err = write_error(exc, target, (target, *(Path(p).absolute() for p in also)), in_place, needed=needed)
        if err is None:
            raise
        raise err from exc


def writes_into(fn):
    """Decorate a stage that adds to the artifact named by its first argument (quantize, optimize):
    sweep the temp files of killed runs first, and report failed writes as one ArtifactError sentence."""
    @functools.wraps(fn)
    def wrapper(artifact, *args, **kwargs):
        root = Path(artifact)
        needed = 0
        if root.is_dir():
            sweep_stale(root)
            needed = max((p.stat().st_size for p in root.glob("*.onnx") if p.is_file()), default=0)
        with writing(root, needed=needed):
            return fn(artifact, *args, **kwargs)

    return wrapper


def link_into(path: Path, folder: Path) -> Path:
    """``path`` (and its external-data files) symlinked into ``folder``; return the link. Tools that write
    beside their input (onnxruntime's quantizer writes NAME-inferred.onnx) then write into ``folder``, a
    temp dir that is removed or swept, instead of leaving files in the artifact."""
    path = Path(path)
    for p in [path, *path.parent.glob(glob.escape(path.name) + "_data*")]:
        try:
            (folder / p.name).symlink_to(p.resolve())
        except OSError:  # no symlinks here (some file systems): a copy does the same job
            shutil.copy2(p, folder / p.name)
    return folder / path.name


def write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write DATA through a temp file and os.replace, so readers never see half a file; DURABLE also fsyncs
    the file and its folder (a cache that can be drawn again, such as the shapes PNGs, need not)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync(path.parent)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically and durably (write_bytes)."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))


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


def _stale_pid(p: Path) -> int | None:
    """The pid in a temp name ``.NAME.tmp-PID[-...]`` when that process is gone, else None."""
    try:
        pid = int(p.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None
    return None if pid == os.getpid() or _pid_alive(pid) else pid


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except OSError:
            pass


def _sweep_stale(parent: Path, name: str, marker: str = MANIFEST) -> None:
    """Remove the temp dirs that killed runs left beside ``name`` (their process is gone).

    A run killed between the two renames of the fallback swap (no renameat2) leaves the previous
    artifact as ``.NAME.tmp-PID-old`` and nothing at NAME: that copy is put back, not removed.
    """
    out = parent / name
    for p in sorted(parent.glob(f".{glob.escape(name)}.tmp-*")):
        if _stale_pid(p) is None:
            continue
        if p.name.endswith("-old") and not out.exists() and (p / marker).is_file():
            try:
                os.rename(p, out)
                continue
            except OSError:
                pass
        _remove(p)


def sweep_stale(root: str | Path) -> None:
    """Remove every temp file or dir (``.*.tmp-PID*``) that a killed run left inside ``root``."""
    for p in Path(root).glob(".*.tmp-*"):
        if _stale_pid(p) is not None:
            _remove(p)


def check_target(out: Path, marker: str = MANIFEST) -> None:
    """Refuse to replace a path that we did not write (it lacks ``marker``), so user files are never lost."""
    if out.exists() and not out.is_dir():
        raise ToolchainError(f"{out} exists and is a file; choose another --out.")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        kind = "an artifact" if marker == MANIFEST else f"one of ours (no {marker})"
        raise ToolchainError(f"{out} is a non-empty directory that is not {kind}; choose another --out or empty it.")


@contextmanager
def atomic_dir(out: str | Path, marker: str = MANIFEST) -> Iterator[Path]:
    """Yield a fresh temp dir beside ``out``; on success it replaces ``out`` in one step.

    On any failure (or Ctrl-C) the temp dir is removed and ``out`` is left as it was; a failed write
    (disk full, read-only, no permission, file-size limit) is raised as one ArtifactError sentence.
    A run killed outright leaves its temp dir behind; the next run beside ``out`` sweeps it.
    """
    out = Path(out).absolute()
    check_target(out, marker)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(parent, out.name, marker)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise write_error(exc, out, (out, parent)) or ToolchainError(
            f"cannot write in {parent} ({exc.strerror}); choose a writable --out.") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; an artifact is a normal directory
        yield tmp
        _fsync_tree(tmp)
        if out.exists() and _exchange(tmp, out):
            _fsync(parent)
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous artifact
            return
        if out.exists():  # no renameat2: two renames, the old copy kept until the new one is in place
            old = parent / f".{out.name}.tmp-{os.getpid()}-old"
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            _fsync(parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
            _fsync(parent)
    except BaseException as exc:
        own = (out, tmp, parent / f".{out.name}.tmp-{os.getpid()}-old")
        err = write_error(exc, out, own, written=tmp) if isinstance(exc, Exception) else None
        shutil.rmtree(tmp, ignore_errors=True)
        if err is None:
            raise
        raise err from exc
