"""What the demo does before it serves: build the default artifact when none is given, and judge the host.

With no DIR the demo serves dist/minilm, building it from models/minilm.toml first when it is missing;
listening beyond this machine (not loopback) is allowed but warned about, since there is no login.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Callable

from toolchain.runtime import ToolchainError

HOST = "127.0.0.1"
DEFAULT_DIR = Path("dist/minilm")
DEFAULT_RECIPE = "models/minilm.toml"


Builder = Callable[..., object]  # build(recipe, out=..., progress=...): the pipeline's entry, passed in by the CLI


def default_artifact(progress: Callable[[str], None], build: Builder | None = None) -> Path:
    """DEFAULT_DIR, built first with BUILD (export, quantize, validate, bench) when it has no manifest.

    The demo never imports the pipeline itself (serve sits below it): the CLI passes ``toolchain.pipeline.build``."""
    if (DEFAULT_DIR / "manifest.json").is_file():
        return DEFAULT_DIR
    if build is None:
        raise ToolchainError(f"{DEFAULT_DIR} is missing; pass an artifact DIR, or run 'toolchain demo' with no DIR "
                             "to build it first.")
    recipe = Path(DEFAULT_RECIPE)
    if not recipe.is_file():  # outside a checkout: the copy shipped in the package
        from toolchain.data.bundled import MINILM_RECIPE as recipe
    progress(f"{DEFAULT_DIR} is missing: building it from {recipe} first (export, quantize, validate, bench; "
             "a few minutes)")
    build(recipe, out=DEFAULT_DIR, progress=progress)
    return DEFAULT_DIR


def loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """The line to show before listening on HOST, or None when only this machine can reach it."""
    if loopback(host):
        return None
    return (f"warning: listening on {host} makes the demo reachable from other machines, with no login; "
            f"leave out --host (default {HOST}) unless that is what you want")
