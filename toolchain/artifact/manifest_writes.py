"""Changing an artifact's manifest in place: one writer at a time (an advisory lock), the manifest swapped in
one step, and a variant's files moved in before the manifest lists them and removed only after it stops."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from toolchain.artifact.atomic import sweep_stale, write_error, write_json
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.manifest import MANIFEST


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Serialise writers of one artifact (quantize, optimize, bench) with an advisory file lock."""
    import fcntl

    try:
        fh = open(Path(root) / ".lock", "a")
    except OSError as exc:
        raise write_error(exc, Path(root), (Path(root).absolute(),), in_place=True) or ToolchainError(
            f"cannot write in {root} ({exc.strerror}); make the artifact writable.") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            sweep_stale(root)  # temp files of killed runs; under the lock, so no live writer's
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_manifest(root: str | Path, change) -> dict[str, Any]:
    """Apply ``change(data)`` to manifest.json under the artifact's lock and write it atomically."""
    from toolchain.runtime.manifest import read_manifest

    root = Path(root)
    with locked(root):
        data = read_manifest(root).to_dict()  # validates before we touch it
        change(data)
        write_json(root / MANIFEST, data)
    return data


def add_variant(root: str | Path, name: str, built: Path | dict[str, Path], entry: dict[str, Any]) -> dict[str, Any]:
    """Move the finished file ``built`` (or, for a variant of several graphs, component -> file) into the
    artifact as variant ``name`` and list it in the manifest; ``entry`` gives its precision, passed,
    metrics, tolerance and latency. A component file already in the artifact (an fp32 graph another
    variant also lists) is listed as it is, not moved.

    Each new file gets a name no current variant uses, the manifest is swapped in one step (always written
    as the current schema, so a v1 artifact is upgraded), and only then are a replaced variant's old files
    removed, so a kill at any point leaves a loadable artifact.
    """
    from toolchain.runtime.manifest import MODEL, REFERENCE_VARIANT, Component, Variant, read_manifest, sha256_file

    root = Path(root)
    if name == REFERENCE_VARIANT:
        raise ToolchainError(f"variant name {name!r} is reserved for the reference export; choose another.")
    built = dict(built) if isinstance(built, dict) else {MODEL: Path(built)}
    shas = {c: sha256_file(path) for c, path in built.items()}
    with locked(root):
        current = read_manifest(root)
        taken, components = _files(current.variants.values()), {}
        for c, path in built.items():
            if path.parent.resolve() == root.resolve():  # already the artifact's: shared, not moved
                components[c] = Component.of(root, path.name)
                continue
            file = f"{c}.{name}.onnx"
            if file in taken:
                file = f"{c}.{name}.{shas[c][:8]}.onnx"
            os.replace(path, root / file)
            components[c] = Component.of(root, file)
        old = current.variants.get(name)
        known = {k: entry[k] for k in ("precision", "passed", "metrics", "tolerance", "latency") if k in entry}
        current.variants[name] = Variant(name, components=components, **known)
        data = current.to_dict()
        write_json(root / MANIFEST, data)
        if old:
            for stale in _files([old]) - _files(current.variants.values()):
                (root / stale).unlink(missing_ok=True)
    return data


def _files(variants) -> set[str]:
    """Every file (graphs and external data) the given variants list."""
    return {f.file for v in variants for c in v.components.values() for f in c.files}
