"""build_site(): artifacts -> a static site whose page runs their models in the browser, offline after one visit.

SITE/
  index.html app.js toolchain-web.js sw.js   the page (demos/web), sw.js stamped with this build's id
  site.json                                  the models and every file (the service worker caches them all)
  vendor/                                    onnxruntime-web (WASM) and tokenizers.js, from npm (vendor.py)
  models/NAME/                               one variant's graph, manifest.json, the tokenizer, web.json

Every artifact is checked before anything is written (a task the page cannot run, a variant it cannot load,
a damaged file), and the site is written atomically: a failed build leaves the previous SITE as it was.
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from toolchain import __version__
from toolchain.artifact.atomic import atomic_dir
from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.manifest import MANIFEST, Manifest, read_manifest
from toolchain.runtime.model import choose_variant
from toolchain.runtime.tasks import task_spec
from toolchain.runtime.variants import MODEL
from toolchain.web.pages import PAGES, Page, runnable
from toolchain.web.vendor import DEMO_DIR, notice, page_files, vendor_files

SITE_JSON = "site.json"  # marks a directory as a site: atomic_dir replaces only such a directory
WEB_JSON = "web.json"  # per model: the variant the page loads and the graph output it reads


@dataclass(frozen=True)
class SiteSettings:
    """How a site is built: the variant per artifact (`auto`: what the runtime picks on CPU) and the page's sources."""

    variant: str = "auto"
    demo_dir: Path = DEMO_DIR

    def __post_init__(self) -> None:
        if not isinstance(self.variant, str) or not self.variant.strip():
            raise ToolchainError(f"variant {self.variant!r} is not a variant name; give one from the manifest, "
                                 "or auto.")


@dataclass(frozen=True)
class Planned:
    """One artifact as it goes into the site: where from, under which name, which variant."""

    name: str
    manifest: Manifest
    variant: str
    page: Page

    @property
    def tokenizer(self) -> Path:
        path = self.manifest.tokenizer_path()
        assert path is not None  # text tasks always have one (tokenizer_path raises when it is missing)
        return path


def plan(root: Path, variant: str, name: str) -> Planned:
    """Check that the page can run ROOT's model (its task, the variant's files and their sha256) before any write."""
    manifest = read_manifest(root)
    page = PAGES.get(manifest.task)
    if not isinstance(page, Page):
        why = f" ({page.reason})" if page is not None else ""
        raise ToolchainError(f"{root} is a {manifest.task} artifact, which the in-browser page cannot run{why}; "
                             f"`toolchain web` takes {' and '.join(runnable())} artifacts.")
    chosen = choose_variant(manifest, variant, "cpu")
    components = manifest.variant(chosen).components
    if set(components) != {MODEL} or components[MODEL].external_data:
        raise ToolchainError(f"variant {chosen!r} of {root} is not one self-contained graph (components "
                             f"{sorted(components)}, or weights in external data files), which the page cannot "
                             "load; choose another with --variant.")
    manifest.verify(chosen)
    manifest.tokenizer_path()
    return Planned(name, manifest, chosen, page)


def names(roots: Sequence[Path]) -> list[str]:
    """A folder name per artifact under models/: its directory's name, made unique with -2, -3..."""
    out: list[str] = []
    for root in roots:
        base = root.resolve().name or "model"
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}-{n}"
        out.append(name)
    return out


def build_site(artifacts: Sequence[str | Path], out: str | Path, variant: str = "auto",
               progress: Callable[[str], None] = lambda msg: None,
               settings: SiteSettings | None = None) -> dict[str, Any]:
    """Write the site for ARTIFACTS into OUT (replaced atomically); return its site.json."""
    settings = settings or SiteSettings(variant=variant)
    roots = [Path(a) for a in artifacts]
    if not roots:
        raise ToolchainError("no artifact given; pass one or more artifact directories to `toolchain web`.")
    planned = [plan(root, settings.variant, name) for root, name in zip(roots, names(roots))]
    page = page_files(settings.demo_dir)
    vendor = vendor_files(settings.demo_dir, progress)
    build = secrets.token_hex(8)
    with atomic_dir(out, marker=SITE_JSON) as tmp:
        for rel, src in {**page, **vendor}.items():
            _copy(src, tmp / rel)
        sw = tmp / "sw.js"
        sw.write_text(sw.read_text(encoding="utf-8").replace("__BUILD__", build), encoding="utf-8")
        (tmp / "vendor" / "NOTICE.txt").write_text(notice(settings.demo_dir), encoding="utf-8")
        models = [_write_model(p, tmp / "models" / p.name, progress) for p in planned]
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        built = datetime.now(timezone.utc).isoformat(timespec="seconds")
        site = {"toolchain": __version__, "build": build, "built": built,
                "models": models, "files": files, "bytes": sum((tmp / f).stat().st_size for f in files)}
        (tmp / SITE_JSON).write_text(json.dumps(site, indent=2) + "\n", encoding="utf-8")
    progress(f"wrote {out}: {len(models)} model(s), {site['bytes'] / 1e6:.1f} MB")
    return site


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _write_model(p: Planned, folder: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Copy the variant's graph, the manifest and the tokenizer into FOLDER, write web.json; return site.json's
    entry for the model."""
    v = p.manifest.variant(p.variant)
    progress(f"{p.name}: variant {p.variant} ({v.precision}, {v.bytes / 1e6:.1f} MB)")
    _copy(p.manifest.root / v.file, folder / v.file)
    _copy(p.manifest.root / MANIFEST, folder / MANIFEST)
    _copy(p.tokenizer, folder / p.tokenizer.name)
    web = {"task": p.manifest.task, "variant": p.variant, "precision": v.precision, "file": v.file,
           "sha256": v.sha256, "bytes": v.bytes, "tokenizer": p.tokenizer.name,
           "output": task_spec(p.manifest.task).output, "method": p.page.method}
    (folder / WEB_JSON).write_text(json.dumps(web, indent=2) + "\n", encoding="utf-8")
    return {"name": p.name, "task": p.manifest.task, "variant": p.variant, "precision": v.precision,
            "path": f"models/{p.name}/", "artifact": str(p.manifest.root.resolve()), "views": list(p.page.views)}
