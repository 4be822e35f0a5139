"""Installed, not only checked out: a wheel of this repo in a fresh venv outside it exports, quantizes and serves MiniLM.

The wheel is built from a copy of the package's files (pyproject.toml, README.md, toolchain/), so it holds
exactly what setuptools packs. The temporary venv sees this interpreter's installed dependencies through
a .pth file listing its site-packages folders: a .pth *line* adds a folder to sys.path but does not run the
.pth files inside it, so the editable install's finder for ``toolchain`` (and any other path hook into the
checkout) does not leak in. Every command runs from a temporary folder outside the repository, offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from toolchain.runtime.providers import has_nvidia_device

REPO = Path(__file__).resolve().parents[1]
PACKAGED = ("toolchain/data/bundled/sst2-dev.tsv", "toolchain/data/bundled/minilm.toml")
TIMINGS: dict[str, float] = {}  # step -> seconds, printed when the venv is torn down (pytest -s)


@dataclass
class Installed:
    venv: Path
    wheel: Path
    work: Path  # the current directory of every command: empty, outside the repository
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str, step: str, timeout: int = 600) -> subprocess.CompletedProcess:
        """Run a command of the venv (``toolchain ...`` or ``python ...``) and fail with its output if it fails."""
        exe = self.venv / "bin" / args[0]
        start = time.perf_counter()
        done = subprocess.run([str(exe), *args[1:]], cwd=self.work, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        TIMINGS[step] = round(time.perf_counter() - start, 1)
        assert done.returncode == 0, f"{step}: {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done


def _site_packages() -> list[str]:
    """This interpreter's installed-package folders (purelib and platlib), where the dependencies live."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(str(Path(paths[k]).resolve()) for k in ("purelib", "platlib")))


def _sh(*args: str | Path, cwd: Path | None = None) -> None:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    assert done.returncode == 0, f"{' '.join(map(str, args))} exited {done.returncode}\n{done.stdout}\n{done.stderr}"


def _build_wheel(base: Path) -> Path:
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "toolchain", src / "toolchain", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", base / "wheels", src)
    (wheel,) = (base / "wheels").glob("toolchain-*.whl")
    return wheel


def _make_venv(base: Path, wheel: Path) -> Path:
    venv = base / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # plain lines: each folder joins sys.path after the venv's own, and its .pth files are not run
    (Path(purelib) / "zz_toolchain_test_deps.pth").write_text("\n".join(_site_packages()) + "\n")
    _sh(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("install")
    assert REPO not in base.resolve().parents, f"{base} is inside the repository; set --basetemp elsewhere"
    start = time.perf_counter()
    wheel = _build_wheel(base)
    TIMINGS["wheel"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    venv = _make_venv(base, wheel)
    TIMINGS["venv + install"] = round(time.perf_counter() - start, 1)
    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", PYTHONDONTWRITEBYTECODE="1")
    yield Installed(venv, wheel, work, env)
    print(f"\ntest_install step times (s): {json.dumps(TIMINGS)}")  # shown with pytest -s


def test_packaged_copies_equal_the_checkout():
    """models/ is the recipes' home in a checkout; the package carries byte-identical copies."""
    from toolchain.data.bundled import CHECKOUT_COPIES

    assert {str(p.relative_to(REPO)) for p in CHECKOUT_COPIES} == set(PACKAGED)
    for packaged, original in CHECKOUT_COPIES.items():
        assert packaged.read_bytes() == (REPO / original).read_bytes(), (
            f"{packaged.relative_to(REPO)} differs from {original}; copy {original} over it")


def test_the_wheel_holds_the_package_data(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert set(PACKAGED) <= names
    assert "toolchain/runtime/__init__.py" in names and "toolchain/data/bundled/__init__.py" in names
    assert not any(n.startswith(("tests/", "models/", "demos/")) for n in names)


def test_toolchain_is_imported_from_the_venv(installed):
    probe = ("import json, toolchain, toolchain.data.texts as t; "
             "print(json.dumps({'toolchain': toolchain.__file__, 'eval': str(t.default_eval_path())}))")
    where = json.loads(installed.run("python", "-c", probe, step="import").stdout)
    for path in where.values():
        assert Path(path).resolve().is_relative_to(installed.venv.resolve()), where
        assert not Path(path).resolve().is_relative_to(REPO), where


@pytest.mark.slow  # about two minutes on two cores: export with parity, the int8 gate, a Gradio app
def test_export_quantize_run_and_serve(installed):
    installed.run("toolchain", "export", "sentence-transformers/all-MiniLM-L6-v2", "--out", "minilm", step="export")
    quantized = installed.run("toolchain", "quantize", "minilm", "--mode", "int8-dynamic", "--limit", "64",
                              step="quantize")
    assert "sst2-dev.tsv" in quantized.stderr + quantized.stdout  # the packaged sentences, no --calib needed
    ran = installed.run("toolchain", "run", "minilm", "A man is playing a guitar.", "Someone plays an instrument.",
                        "--json", step="run")
    payload = json.loads(ran.stdout)
    assert len(payload["embed"]) == 2 and len(payload["embed"][0]) == 384
    assert payload["info"]["provider"] in ("cpu", "cuda")
    assert "falling back to CPU" not in ran.stderr or has_nvidia_device()  # quiet on a machine with no GPU
    info = installed.run("toolchain", "info", "minilm", "--json", step="info")
    assert {"fp32", "int8"} <= set(json.loads(info.stdout)["variants"])
    installed.run("python", "-c", SERVE_PROBE, step="serve")


# In the venv, through the public entry point: `toolchain demo` with no DIR builds dist/minilm from the recipe
# shipped in the package (there is no models/ here) and serves it. The build itself is stubbed (it takes
# minutes): the artifact exported above stands in for its output.
SERVE_PROBE = """
import shutil, urllib.request
from pathlib import Path
import toolchain.pipeline.stages as stages
from toolchain.serve import demo
from toolchain.train.recipe import load_recipe

seen = []
def fake_build(recipe, out=None, progress=None, **kw):
    seen.append(Path(recipe))
    shutil.copytree("minilm", out)

stages.build = fake_build
from toolchain.cli.commands import default_build  # what `toolchain demo` passes to the demo
app = demo(block=False, progress=print, build=default_build)
try:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(app.local_url, timeout=60) as page:
        assert page.status == 200, page.status
finally:
    app.close()
(recipe,) = seen
assert recipe.is_file() and "site-packages" in str(recipe), recipe
assert load_recipe(recipe).name == "minilm"
"""
