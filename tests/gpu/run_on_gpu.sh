#!/usr/bin/env bash
# The CUDA provider's checks on a machine with an NVIDIA GPU (see tests/gpu/test_gpu.py and bench_gpu.py).
#
#   tests/gpu/run_on_gpu.sh [--wheel FILE | --parts DIR] [--wheelhouse DIR] [--python PY] [--venv DIR]
#                           [--work DIR] [--out DIR] [--offline] [--skip-tests] [--skip-bench] [--dry-run]
#
# 1. Python: --venv DIR (made with --system-site-packages, so a CUDA torch already there is reused); else PY's
#    own environment when PY runs in a virtual environment already; else a venv in WORK/venv; where a venv
#    cannot be made, PY with pip --user.
# 2. onnxruntime-gpu (1.31 unless ORT_VERSION says otherwise): from --wheel FILE, else from --parts DIR, else
#    from pip's index. --parts DIR holds wheels cut to fit a transfer (FILE.part*, joined with cat in version
#    order and checked against FILE.sha256 or a SHA256SUMS line; make them with
#    `split -b 60M -d FILE FILE.part && sha256sum FILE > FILE.sha256`); every wheel joined is offered to pip.
#    The CPU-only `onnxruntime` is never installed and is uninstalled when present: it shadows onnxruntime-gpu.
# 3. The project's other dependencies (pyproject: runtime + export, and pytest), only those missing; offline
#    from --wheelhouse DIR (pip --no-index --find-links DIR) when given. --offline (a GPU box with no index):
#    pip never reaches an index, every wheel in --wheelhouse is installed as it is (pinned versions that
#    replace the box's own), and a requirement still unmet is reported, not fatal: the tests then use the
#    artifacts already built in WORK (build them where the exporters are installed and bring WORK along).
# 4. pytest -m gpu tests/gpu, then the GPU bench (MiniLM 32x128 fp16 vs PyTorch CUDA fp16 eager; the tiny
#    decoder's tokens/s vs transformers' generate() on CUDA), then a markdown summary in
#    OUT/gpu-summary.md (OUT: --out, else $OUT, else .), with the bench JSON and the pytest log beside it.
#
# Exit status: 0 all passed, 1 a GPU test failed, 2 bad arguments or setup failed, 3 no usable NVIDIA GPU.
# --dry-run checks the arguments, joins and checks --parts, and prints what would be done; it installs nothing
# and needs no GPU.
set -euo pipefail

ORT_VERSION=${ORT_VERSION:-1.31}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

say() { echo "[run_on_gpu] $*" >&2; }
die() { echo "run_on_gpu: $1" >&2; exit "${2:-2}"; }

usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# -- split wheels ------------------------------------------------------------------------------------------
expected_sha256() {  # DIR NAME: the sha256 recorded for NAME in DIR/NAME.sha256, DIR/SHA256SUMS or DIR/*.sha256
  local dir=$1 base=$2 f hash name
  for f in "$dir/$base.sha256" "$dir/SHA256SUMS" "$dir"/*.sha256 "$dir"/*.sha256sum; do
    [[ -f "$f" ]] || continue
    while read -r hash name _ || [[ -n "${hash:-}" ]]; do
      name=${name#\*}
      name=${name##*/}
      [[ "$hash" =~ ^[0-9a-fA-F]{64}$ ]] || continue
      if [[ "$name" == "$base" || ( -z "$name" && "${f##*/}" == "$base.sha256" ) ]]; then
        echo "${hash,,}"
        return 0
      fi
    done <"$f"
  done
  echo "$base: no sha256 for it in $dir; add one made with: sha256sum $base > $base.sha256" >&2
  return 1
}

assemble_parts() {  # DIR DEST: join DIR/NAME.part* into DEST/NAME and check its sha256; print each DEST/NAME
  local dir=$1 dest=$2 base expected actual
  local -a bases parts
  [[ -d "$dir" ]] || { echo "$dir is not a directory of *.part* files" >&2; return 1; }
  mapfile -t bases < <(find "$dir" -maxdepth 1 -type f -name '*.part*' -printf '%f\n' | sed -E 's/\.part[^.]*$//' | sort -u)
  [[ ${#bases[@]} -gt 0 ]] || { echo "no *.part* files in $dir" >&2; return 1; }
  mkdir -p "$dest"
  for base in "${bases[@]}"; do
    mapfile -t parts < <(find "$dir" -maxdepth 1 -type f -name "$base.part*" | sort -V)
    expected=$(expected_sha256 "$dir" "$base") || return 1
    cat "${parts[@]}" >"$dest/$base.tmp"
    actual=$(sha256sum "$dest/$base.tmp" | cut -d' ' -f1)
    if [[ "$actual" != "$expected" ]]; then
      rm -f "$dest/$base.tmp"
      echo "$base: the sha256 of its ${#parts[@]} joined parts is $actual, not $expected; a part is missing or damaged, copy the parts again" >&2
      return 1
    fi
    mv "$dest/$base.tmp" "$dest/$base"
    echo "$dest/$base"
  done
}

# -- Python and packages -----------------------------------------------------------------------------------
pip_() { "$PY" -m pip --disable-pip-version-check "$@"; }

in_venv() { "$1" -c 'import os, sys; sys.exit(0 if sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") else 1)'; }

choose_python() {  # sets PY and PIP_USER_FLAG; creates the venv unless DRY_RUN
  PIP_USER_FLAG=()
  command -v "$PYTHON" >/dev/null 2>&1 || die "python '$PYTHON' was not found; pass --python PATH."
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "$PYTHON is older than Python 3.11, which the toolchain needs; pass --python PATH of a newer one."
  if [[ -z "$VENV" ]] && in_venv "$PYTHON"; then
    PY=$(command -v "$PYTHON")
    PLAN+=("use $PY's own virtual environment")
    return
  fi
  VENV=${VENV:-$WORK/venv}
  PY=$VENV/bin/python
  if [[ -x "$PY" ]]; then
    PLAN+=("use the venv $VENV")
  elif [[ $DRY_RUN == 1 ]]; then
    PLAN+=("create the venv $VENV (--system-site-packages) from $PYTHON")
  elif "$PYTHON" -m venv --system-site-packages "$VENV" >/dev/null 2>&1; then
    say "created the venv $VENV (sharing $PYTHON's packages, a CUDA torch included)"
  else
    say "could not create a venv with $PYTHON (no ensurepip?); installing with pip --user instead"
    PY=$(command -v "$PYTHON")
    PIP_USER_FLAG=(--user)
  fi
}

index_flags() {  # sets IDX: pip's index options (offline with --wheelhouse; joined parts are found too)
  IDX=()
  [[ -z "$WHEELHOUSE" ]] || IDX+=(--no-index --find-links "$WHEELHOUSE")
  [[ ${OFFLINE:-0} == 0 || -n "$WHEELHOUSE" ]] || IDX+=(--no-index)
  [[ ! -d "$WORK/wheels" ]] || IDX+=(--find-links "$WORK/wheels")
}

install_packages() {
  local constraints=$WORK/constraints.txt plain_removed=0 req=$WORK/requirements.txt
  index_flags
  echo "onnxruntime==0.0.0.dev0  # never: the CPU-only build shadows onnxruntime-gpu" >"$constraints"
  if pip_ show onnxruntime >/dev/null 2>&1; then
    say "uninstalling the CPU-only onnxruntime (it shadows onnxruntime-gpu)"
    pip_ uninstall -y onnxruntime >&2
    plain_removed=1
  fi
  if [[ -n "$WHEEL" ]]; then
    say "installing $(basename "$WHEEL")"
    pip_ install -q "${PIP_USER_FLAG[@]}" --force-reinstall --no-deps "$WHEEL"
    pip_ install -q "${PIP_USER_FLAG[@]}" -c "$constraints" "${IDX[@]}" "$WHEEL"  # its dependencies, where missing
  elif [[ $plain_removed == 1 ]] || ! pip_ show onnxruntime-gpu >/dev/null 2>&1; then
    say "installing onnxruntime-gpu==$ORT_VERSION.* from ${WHEELHOUSE:-the package index}"
    pip_ install -q "${PIP_USER_FLAG[@]}" -c "$constraints" "${IDX[@]}" --force-reinstall --no-deps "onnxruntime-gpu==$ORT_VERSION.*" \
      || die "onnxruntime-gpu $ORT_VERSION could not be installed; pass --wheel FILE or --parts DIR."
    pip_ install -q "${PIP_USER_FLAG[@]}" -c "$constraints" "${IDX[@]}" "onnxruntime-gpu==$ORT_VERSION.*"
  fi
  (cd "$ROOT" && "$PY" - >"$req") <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + project["optional-dependencies"]["export"] + ["pytest>=8"]
print("\n".join(r for r in reqs if not r.lower().startswith("onnxruntime")))
EOF
  if [[ ${OFFLINE:-0} == 1 ]]; then
    install_offline "$req"
    return
  fi
  say "installing the missing dependencies of the toolchain (pyproject: runtime, export, pytest)"
  pip_ install -q "${PIP_USER_FLAG[@]}" -c "$constraints" "${IDX[@]}" -r "$req" \
    || die "pip could not install the toolchain's dependencies ($req); pass --wheelhouse DIR holding their wheels."
}

install_offline() {  # REQ: the wheelhouse's wheels as they are (never onnxruntime), then say what stays unmet
  local w
  local -a wheels=()
  for w in ${WHEELHOUSE:+"$WHEELHOUSE"/*.whl}; do
    [[ -f "$w" && "$(basename "$w")" != onnxruntime-[0-9]* ]] && wheels+=("$w")
  done
  if [[ ${#wheels[@]} -gt 0 ]]; then
    say "offline: installing ${#wheels[@]} wheel(s) from $WHEELHOUSE as they are"
    pip_ install -q "${PIP_USER_FLAG[@]}" --no-index --no-deps "${wheels[@]}" \
      || die "pip could not install the wheels in $WHEELHOUSE (see above)."
  fi
  "$PY" - "$1" >&2 <<'EOF'
import importlib.metadata as md, sys
try:
    from packaging.requirements import Requirement
except ImportError:  # a bare venv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
unmet = []
for line in filter(None, map(str.strip, open(sys.argv[1]).read().splitlines())):
    r = Requirement(line)
    try:
        if not r.specifier.contains(md.version(r.name), prereleases=True):
            unmet.append(f"{r} ({md.version(r.name)} installed)")
    except md.PackageNotFoundError:
        unmet.append(f"{r} (missing)")
print("[run_on_gpu] offline: " + ("every requirement is met" if not unmet else
      "not met (tests use the artifacts already in WORK): " + "; ".join(unmet)))
EOF
}

nvidia_library_path() {  # the lib folders of pip's nvidia-* packages (CUDA, cuBLAS, cuDNN) for ONNX Runtime
  "$PY" - <<'EOF'
import glob, os, site
roots = [*site.getsitepackages(), site.getusersitepackages()]
found = {os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(found)))
EOF
}

verify_ort() {  # onnxruntime-gpu imports, is not shadowed, and really starts CUDA
  (cd "$ROOT" && "$PY" - "$ORT_VERSION") <<'EOF'
import importlib.metadata as md, sys
import onnxruntime as ort
want = sys.argv[1]
try:
    md.version("onnxruntime")
    sys.exit("the CPU-only onnxruntime is still installed and shadows onnxruntime-gpu; uninstall it (pip uninstall onnxruntime).")
except md.PackageNotFoundError:
    pass
if "CUDAExecutionProvider" not in ort.get_available_providers():
    sys.exit(f"onnxruntime {ort.__version__} at {ort.__file__} has no CUDA provider; install onnxruntime-gpu.")
if not ort.__version__.startswith(want):
    print(f"[run_on_gpu] note: onnxruntime-gpu {ort.__version__} in use, not {want}", file=sys.stderr)
from toolchain.bench.cuda import cuda_unusable
reason = cuda_unusable()
if reason:
    sys.exit(f"ONNX Runtime cannot use CUDA here: {reason}.")
print(f"[run_on_gpu] onnxruntime-gpu {ort.__version__} starts CUDA", file=sys.stderr)
EOF
}

# -- main ---------------------------------------------------------------------------------------------------
main() {
  WHEEL="" PARTS="" WHEELHOUSE="" PYTHON=python3 VENV="" WORK="" OUT_DIR="" DRY_RUN=0 SKIP_TESTS=0 SKIP_BENCH=0
  OFFLINE=0
  PLAN=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      --wheel) WHEEL=${2:?--wheel needs a file}; shift 2 ;;
      --parts) PARTS=${2:?--parts needs a directory}; shift 2 ;;
      --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift 2 ;;
      --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
      --venv) VENV=${2:?--venv needs a directory}; shift 2 ;;
      --work) WORK=${2:?--work needs a directory}; shift 2 ;;
      --out) OUT_DIR=${2:?--out needs a directory}; shift 2 ;;
      --offline) OFFLINE=1; shift ;;
      --skip-tests) SKIP_TESTS=1; shift ;;
      --skip-bench) SKIP_BENCH=1; shift ;;
      --dry-run) DRY_RUN=1; shift ;;
      -h|--help) usage; return 0 ;;
      *) die "unknown option '$1'; see --help." ;;
    esac
  done
  [[ -z "$WHEEL" || -f "$WHEEL" ]] || die "--wheel $WHEEL is not a file; pass the onnxruntime-gpu wheel's path."
  [[ -z "$WHEELHOUSE" || -d "$WHEELHOUSE" ]] || die "--wheelhouse $WHEELHOUSE is not a directory of wheels."
  [[ -z "$PARTS" || -d "$PARTS" ]] || die "--parts $PARTS is not a directory of *.part* files."
  WORK=$(mkdir -p "${WORK:-${TMPDIR:-/tmp}/toolchain-gpu}" && cd "${WORK:-${TMPDIR:-/tmp}/toolchain-gpu}" && pwd)
  OUT_DIR=${OUT_DIR:-${OUT:-.}}
  mkdir -p "$OUT_DIR"
  if [[ -n "$PARTS" ]]; then
    local joined
    joined=$(assemble_parts "$PARTS" "$WORK/wheels") || die "could not join the parts in $PARTS (see above)."
    say "joined and checked $(wc -l <<<"$joined") file(s) from $PARTS: $(xargs -n1 basename <<<"$joined" | paste -sd' ')"
    [[ -n "$WHEEL" ]] || WHEEL=$(grep -m1 -E '/onnxruntime_gpu-[^/]*\.whl$' <<<"$joined" || true)
  fi
  [[ -z "$WHEEL" || "$(basename "$WHEEL")" == onnxruntime_gpu-* ]] \
    || die "$(basename "$WHEEL") is not an onnxruntime-gpu wheel (onnxruntime_gpu-*.whl); the CPU-only onnxruntime is never installed."

  local gpu=""
  if command -v nvidia-smi >/dev/null 2>&1; then
    gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1 || true)
  fi
  choose_python
  local probe=$PY
  [[ -x "$probe" ]] || probe=$PYTHON
  if "$probe" -m pip show onnxruntime >/dev/null 2>&1; then
    PLAN+=("uninstall the CPU-only onnxruntime found there (it shadows onnxruntime-gpu)")
  fi
  if [[ -n "$WHEEL" ]]; then
    PLAN+=("install $WHEEL")
  else
    PLAN+=("install onnxruntime-gpu==$ORT_VERSION.* from ${WHEELHOUSE:-the package index} unless installed")
  fi
  if [[ $OFFLINE == 1 ]]; then
    PLAN+=("offline: install the wheels in ${WHEELHOUSE:-(no wheelhouse)} as they are, report unmet requirements")
  else
    PLAN+=("install the toolchain's missing dependencies from ${WHEELHOUSE:-the package index} (never onnxruntime)")
  fi
  [[ $SKIP_TESTS == 1 ]] || PLAN+=("run: pytest -m gpu tests/gpu")
  [[ $SKIP_BENCH == 1 ]] || PLAN+=("run: python tests/gpu/bench_gpu.py bench --work $WORK")
  PLAN+=("write $OUT_DIR/gpu-summary.md")
  if [[ $DRY_RUN == 1 ]]; then
    say "dry run; GPU: ${gpu:-none found (a real run stops here with exit 3)}"
    printf '  would %s\n' "${PLAN[@]}"
    return 0
  fi
  [[ -n "$gpu" ]] || die "no NVIDIA GPU here (nvidia-smi missing or failing); run this on a machine with one." 3

  install_packages
  local libs
  libs=$(nvidia_library_path)
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  verify_ort || die "onnxruntime-gpu is not usable (see above)." 3

  export TOOLCHAIN_GPU_WORK=$WORK HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
  local tests_rc=0 bench_rc=0
  cd "$ROOT"
  if [[ $SKIP_TESTS == 0 ]]; then
    set +e
    "$PY" -m pytest -m gpu tests/gpu -q -rs -p no:cacheprovider --junitxml "$WORK/gpu-junit.xml" 2>&1 | tee "$OUT_DIR/gpu-pytest.log"
    tests_rc=${PIPESTATUS[0]}
    set -e
  fi
  if [[ $SKIP_BENCH == 0 ]]; then
    set +e
    "$PY" tests/gpu/bench_gpu.py bench --work "$WORK" 2>&1 | tee "$OUT_DIR/gpu-bench.log"
    bench_rc=${PIPESTATUS[0]}
    set -e
    [[ ! -f "$WORK/bench/gpu-bench.json" ]] || cp "$WORK/bench/gpu-bench.json" "$OUT_DIR/"
  fi
  "$PY" tests/gpu/bench_gpu.py summary --work "$WORK" --out "$OUT_DIR/gpu-summary.md" --tests-rc "$tests_rc"
  [[ $bench_rc == 0 ]] || say "the bench failed (exit $bench_rc); see $OUT_DIR/gpu-bench.log"
  if [[ $tests_rc != 0 ]]; then
    say "GPU tests failed (pytest exit $tests_rc); see $OUT_DIR/gpu-summary.md"
    return 1
  fi
  [[ $bench_rc == 0 ]] || return 1
  say "done: $OUT_DIR/gpu-summary.md"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
