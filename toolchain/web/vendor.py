"""The page's sources (demos/web) and the JavaScript it vendors from npm: onnxruntime-web and tokenizers.js.

Both are pinned in demos/web/package-lock.json and installed with `npm ci` into demos/web/node_modules the
first time a site is built (and again when the lockfile changes), so a fresh clone builds its sites from the
same bytes. Only the files the page loads are copied into the site: it fetches nothing from another origin.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from toolchain.artifact.manifest_writes import locked
from toolchain.runtime.errors import ToolchainError

DEMO_DIR = Path(__file__).resolve().parents[2] / "demos" / "web"
PAGE_FILES = ("index.html", "app.js", "toolchain-web.js", "sw.js")
# site path -> path under node_modules. ort.wasm.min.mjs is onnxruntime-web's WASM-only build (no WebGL or WebGPU
# code); it loads the SIMD + threads WASM binary and its Emscripten glue from the same vendor/ folder.
VENDOR = {
    "vendor/ort.wasm.min.mjs": "onnxruntime-web/dist/ort.wasm.min.mjs",
    "vendor/ort-wasm-simd-threaded.wasm": "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
    "vendor/ort-wasm-simd-threaded.mjs": "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "vendor/tokenizers.min.mjs": "@huggingface/tokenizers/dist/tokenizers.min.mjs",
}
PACKAGES = ("onnxruntime-web", "@huggingface/tokenizers")  # named, with version and licence, in vendor/NOTICE.txt
NPM_CI = ("ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")


def page_files(demo: Path = DEMO_DIR) -> dict[str, Path]:
    """Site path -> source of every page file, or ToolchainError when the checkout lacks them."""
    missing = [name for name in PAGE_FILES if not (demo / name).is_file()]
    if missing:
        raise ToolchainError(f"the web page's sources {missing} are missing from {demo}; run `toolchain web` "
                             "from a checkout of the toolchain repository.")
    return {name: demo / name for name in PAGE_FILES}


def vendor_files(demo: Path = DEMO_DIR, progress: Callable[[str], None] = lambda msg: None) -> dict[str, Path]:
    """Site path -> file under demos/web/node_modules for each vendored file, running `npm ci` first when the
    installed packages are missing or older than the lockfile (under a lock: parallel builds install once)."""
    modules = demo / "node_modules"
    with locked(demo):
        if not _installed(demo):
            _npm_ci(demo, progress)
    files = {site: modules / source for site, source in VENDOR.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ToolchainError(f"`npm ci` in {demo} did not install {missing[0]}; check package.json against "
                             "toolchain/web/vendor.py VENDOR.")
    return files


def notice(demo: Path = DEMO_DIR) -> str:
    """vendor/NOTICE.txt: each vendored package's name, version, licence and home, read from its package.json."""
    lines = ["Vendored from the npm registry by `toolchain web` (pinned in demos/web/package-lock.json):"]
    for name in PACKAGES:
        meta = json.loads((demo / "node_modules" / name / "package.json").read_text(encoding="utf-8"))
        repo = meta.get("repository")
        home = meta.get("homepage") or (repo.get("url") if isinstance(repo, dict) else repo) or ""
        lines.append(f"- {name} {meta.get('version')}, licence {meta.get('license')}, {home}")
    return "\n".join(lines) + "\n"


def _installed(demo: Path) -> bool:
    """node_modules was installed by npm from the current lockfile and holds every vendored file."""
    stamp, lock = demo / "node_modules" / ".package-lock.json", demo / "package-lock.json"
    return (stamp.is_file() and lock.is_file() and stamp.stat().st_mtime >= lock.stat().st_mtime
            and all((demo / "node_modules" / source).is_file() for source in VENDOR.values()))


def _npm_ci(demo: Path, progress: Callable[[str], None]) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ToolchainError("npm is not installed, and the site vendors onnxruntime-web and tokenizers.js from "
                             "the npm registry; install it (apt-get install npm) and run again.")
    progress(f"installing the page's JavaScript packages (npm ci in {demo})")
    try:
        done = subprocess.run([npm, *NPM_CI], cwd=demo, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"`npm ci` in {demo} took over 10 minutes; check the network to the npm registry "
                             "and run again.") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolchainError(f"`npm ci` in {demo} failed ({last}); fix that and run again.")
