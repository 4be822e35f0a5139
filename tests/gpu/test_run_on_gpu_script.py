"""run_on_gpu.sh and bench_gpu.py's summary, checked on CPU (no GPU needed): syntax, joining split wheels
against their sha256, the dry run, the argument errors, the offline install (with stand-in wheels) that
removes and blocks the CPU-only onnxruntime, and the markdown summary."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("run_on_gpu.sh")
WHEEL = "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_27_x86_64.whl"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None,
                                reason="needs bash and coreutils")


def sh(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "bash", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def split(tmp: Path, name: str = WHEEL, size: int = 25_000, parts: int = 11, sums: str = "SHA256SUMS") -> bytes:
    """NAME cut into PARTS pieces named NAME.part1 .. NAME.part11 (no zero padding: order must be by version)."""
    data = bytes(range(256)) * (size // 256) + b"end"
    step = -(-len(data) // parts)
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        (tmp / f"{name}.part{i + 1}").write_bytes(data[i * step:(i + 1) * step])
    digest = hashlib.sha256(data).hexdigest()
    if sums == "SHA256SUMS":
        (tmp / "SHA256SUMS").write_text(f"{'0' * 64}  other.whl\n{digest} *dist/{name}\n")
    elif sums == "own":
        (tmp / f"{name}.sha256").write_text(digest + "\n")
    return data


def test_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "--parts DIR" in r.stdout and "never installed" in r.stdout


@pytest.mark.parametrize("sums", ["SHA256SUMS", "own"])
def test_assemble_parts_in_version_order(tmp_path, sums):
    data = split(tmp_path / "parts", sums=sums)
    r = sh(f'source "{SCRIPT}"; assemble_parts "$1" "$2"', str(tmp_path / "parts"), str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "out" / WHEEL)
    assert (tmp_path / "out" / WHEEL).read_bytes() == data
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_assemble_parts_refuses_a_damaged_or_unchecked_part(tmp_path):
    split(tmp_path / "parts")
    (tmp_path / "parts" / f"{WHEEL}.part3").write_bytes(b"damaged")
    r = sh(f'source "{SCRIPT}"; assemble_parts "$1" "$2"', str(tmp_path / "parts"), str(tmp_path / "out"))
    assert r.returncode != 0 and "the sha256 of its 11 joined parts is" in r.stderr and "copy the parts again" in r.stderr
    assert not (tmp_path / "out" / WHEEL).exists() and not list((tmp_path / "out").glob("*.tmp"))
    split(tmp_path / "nosum", sums="none")
    r = sh(f'source "{SCRIPT}"; assemble_parts "$1" "$2"', str(tmp_path / "nosum"), str(tmp_path / "out2"))
    assert r.returncode != 0 and "no sha256 for it" in r.stderr and f"sha256sum {WHEEL} > {WHEEL}.sha256" in r.stderr


def test_dry_run_joins_parts_and_installs_nothing(tmp_path):
    split(tmp_path / "parts")
    work = tmp_path / "work"
    r = run("--dry-run", "--parts", str(tmp_path / "parts"), "--python", sys.executable, "--work", str(work),
            "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert f"would install {work}/wheels/{WHEEL}" in r.stdout
    assert "would run: pytest -m gpu tests/gpu" in r.stdout and f"would write {tmp_path}/out/gpu-summary.md" in r.stdout
    assert "never onnxruntime" in r.stdout and "dry run; GPU:" in r.stderr
    assert not (work / "venv").exists() and not (work / "constraints.txt").exists()


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option '--bogus'; see --help."),
    (["--wheel", "/nonexistent.whl"], "is not a file"),
    (["--parts", "/nonexistent"], "--parts /nonexistent is not a directory of *.part* files."),
    (["--wheelhouse", "/nonexistent"], "is not a directory of wheels"),
    (["--python", "/nonexistent/python", "--dry-run"], "python '/nonexistent/python' was not found"),
])
def test_argument_errors_are_one_line(args, message, tmp_path):
    r = run(*args, "--work", str(tmp_path / "w"))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_plain_onnxruntime_wheel_is_refused(tmp_path):
    plain = tmp_path / "onnxruntime-1.31.1-cp312-cp312-manylinux_2_27_x86_64.whl"
    plain.write_bytes(b"x")
    r = run("--wheel", str(plain), "--dry-run", "--work", str(tmp_path / "w"))
    assert r.returncode == 2 and "the CPU-only onnxruntime is never installed" in r.stderr
    split(tmp_path / "parts", name="torch-2.13.0-cp312-none-any.whl")  # other wheels: offered to pip, not as ORT
    r = run("--parts", str(tmp_path / "parts"), "--dry-run", "--work", str(tmp_path / "w"), "--python", sys.executable)
    assert r.returncode == 0 and "torch-2.13.0-cp312-none-any.whl" in r.stderr
    assert "would install onnxruntime-gpu==1.31.* from the package index unless installed" in r.stdout


def _wheel(folder: Path, dist: str, module: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    path = folder / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    info = f"{dist.replace('-', '_')}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}/__init__.py", f"__version__ = {version!r}\nDIST = {dist!r}\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_offline_install_removes_and_blocks_the_cpu_build(tmp_path):
    """Stand-in wheels in an offline wheelhouse and a fresh venv: the CPU-only onnxruntime that was there is
    removed, onnxruntime-gpu and the missing dependencies come from the wheelhouse, and nothing may pull the
    CPU build back in."""
    house = tmp_path / "house"
    house.mkdir()
    plain = _wheel(house, "onnxruntime", "onnxruntime", "1.30.0")
    gpu = _wheel(house, "onnxruntime-gpu", "onnxruntime", "1.31.1", ("fakedep",))
    for dist, module in (("fakedep", "fakedep"), ("pytest", "pytest_stand_in")):
        _wheel(house, dist, module, "8.0.0" if dist == "pytest" else "1.0")
    _wheel(house, "needs-cpu-ort", "needs_cpu_ort", "1.0", ("onnxruntime",))
    root = tmp_path / "root"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n'
                                         'dependencies = ["onnxruntime-gpu>=1.18", "fakedep"]\n'
                                         '[project.optional-dependencies]\nexport = []\n')
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"
    if subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True).returncode != 0:
        pytest.skip("python -m venv with pip does not work here")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", str(plain)], check=True)
    script = f'''source "{SCRIPT}"
ROOT="$1" WORK="$2" PY="$3" WHEELHOUSE="$4" WHEEL="$5" PIP_USER_FLAG=() ORT_VERSION=1.31
mkdir -p "$WORK"
install_packages
"$PY" -c "import onnxruntime as o; print('imported', o.DIST, o.__version__)"
"$PY" -m pip install -q --no-index --find-links "$WHEELHOUSE" -c "$WORK/constraints.txt" needs-cpu-ort && echo LEAKED
true'''
    r = sh(script, str(root), str(tmp_path / "work"), str(py), str(house), str(gpu))
    assert r.returncode == 0, r.stderr
    assert "uninstalling the CPU-only onnxruntime" in r.stderr
    assert "imported onnxruntime-gpu 1.31.1" in r.stdout and "LEAKED" not in r.stdout
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True).stdout
    names = {p["name"].lower(): p["version"] for p in json.loads(listed)}
    assert names.get("onnxruntime-gpu") == "1.31.1" and "onnxruntime" not in names and names.get("fakedep") == "1.0"


# -- the summary ---------------------------------------------------------------------------------------------
def _shape(batch, seq, p50, **extra):
    return {"batch": batch, "seq": seq, "p50_ms": p50, "p95_ms": p50 * 1.1, "items_per_s": batch * 1000 / p50, **extra}


def test_summary_markdown(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_gpu
    finally:
        sys.path.remove(str(SCRIPT.parent))
    work = tmp_path / "work"
    (work / "bench").mkdir(parents=True)
    (work / "gpu-junit.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="1">'
        '<testcase name="test_a"/><testcase name="test_b"><failure message="assert 0.99 &gt;= 0.999">x</failure>'
        '</testcase><testcase name="test_c"><skipped message="torch has no CUDA"/></testcase></testsuite></testsuites>')
    enc_rows = {
        "fp32": {"precision": "fp32", "shapes": [_shape(32, 128, 4.0, p50_vs_pytorch=0.8)], "real": {"sentences_per_s": 900.0}},
        "fp16": {"precision": "fp16", "shapes": [_shape(32, 128, 2.0, p50_vs_pytorch=0.4)], "real": None},
        "pytorch": {"precision": "fp32", "shapes": [_shape(32, 128, 5.0)], "real": {"sentences_per_s": 700.0}},
        "pytorch-fp16": {"precision": "fp16", "shapes": [_shape(32, 128, 2.5)], "real": None},
    }
    dec_rows = {n: {"precision": p, "shapes": [_shape(1, 32, 1.0, tokens_per_s=1000.0, ttft_ms=3.0)]}
                for n, p in (("fp32", "fp32"), ("pytorch", "fp32"), ("pytorch-fp16", "fp16"))}
    placement = {"fp32": {"heavy_cpu_fallback": False, "placement": "profiled warm-up run: 3 on cpu, 400 on cuda"}}
    (work / "bench" / "gpu-bench.json").write_text(json.dumps({
        "minilm": {"report": {"rows": enc_rows, "notes": []}, "placement": placement},
        "decoder": {"report": {"rows": dec_rows, "notes": ["optimum skipped"]}, "placement": placement}}))
    out = tmp_path / "out" / "gpu-summary.md"
    bench_gpu.write_summary(work, out, 1)
    text = out.read_text()
    assert "3 tests: 1 passed, 1 failed, 0 errors, 1 skipped (exit 1)" in text
    assert "failure: test_b: assert 0.99 >= 0.999" in text and "skipped: test_c: torch has no CUDA" in text
    assert "| fp16 | fp16 | 32 x 128 | 2.00 | 16000 | 0.40x | 0.80x |" in text
    assert "| pytorch-fp16 | fp16 | 1 | 1000 | 1.00 | 3.0 |" in text
    assert "fp32 900/s" in text and "minilm fp32: heavy CPU fallback False" in text
    assert "## Environment" in text


def test_offline_installs_the_wheelhouse_as_it_is_and_reports_what_is_unmet(tmp_path):
    """--offline (a GPU box with no package index): every wheel in the wheelhouse replaces the box's own version,
    even a newer one; an unmet requirement is reported in one line, not fatal; pip never reaches an index."""
    house, root, venv = tmp_path / "house", tmp_path / "root", tmp_path / "venv"
    house.mkdir()
    root.mkdir()
    newer = _wheel(tmp_path, "pinned-dep", "pinned_dep", "5.0")
    _wheel(house, "pinned-dep", "pinned_dep", "4.5")
    (root / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n'
                                         'dependencies = ["onnxruntime-gpu>=1.18", "pinned-dep<4.6"]\n'
                                         '[project.optional-dependencies]\nexport = ["not-on-this-box>=1"]\n')
    py = venv / "bin" / "python"
    if subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True).returncode != 0:
        pytest.skip("python -m venv with pip does not work here")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", str(newer),
                    *(str(w) for w in Path(sys.prefix).glob("nothing"))], check=True)
    script = f'''source "{SCRIPT}"
ROOT="$1" WORK="$2" PY="$3" WHEELHOUSE="$4" WHEEL="" PIP_USER_FLAG=() ORT_VERSION=1.31 OFFLINE=1
mkdir -p "$WORK"
pip_() {{ echo "pip $*" >>"$WORK/pip.log"; "$PY" -m pip --disable-pip-version-check "$@"; }}
pip_ show onnxruntime-gpu >/dev/null 2>&1 || pip_ install -q --no-index "$5"
install_packages'''
    gpu = _wheel(tmp_path, "onnxruntime-gpu", "onnxruntime", "1.31.1")
    r = sh(script, str(root), str(tmp_path / "work"), str(py), str(house), str(gpu))
    assert r.returncode == 0, r.stderr
    assert "offline: installing 1 wheel(s)" in r.stderr
    assert "not met (tests use the artifacts already in WORK): not-on-this-box>=1 (missing)" in r.stderr
    assert "pinned-dep" not in r.stderr.split("not met")[-1]
    for line in (tmp_path / "work" / "pip.log").read_text().splitlines():
        assert " install" not in line or "--no-index" in line, line
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True).stdout
    assert {p["name"].lower(): p["version"] for p in json.loads(listed)}["pinned-dep"] == "4.5"
