#!/usr/bin/env bash
# On the GPU box, in the last device call of a packed run (tests/gpu/pack.py): join the parts that earlier calls
# left in /tmp/parts with the last one in DIR, check the whole against SHA256SUMS, unpack it, copy the artifacts
# and their source models to their absolute paths, and run run_on_gpu.sh --offline from the packed snapshot.
#
#   bash go_on_device.sh DIR        (PARTS, DEST, ABS_ROOT override /tmp/parts, /tmp/gpu, /; GO_JOIN_ONLY=1 stops
#                                    after unpacking)
set -uo pipefail
DIR=${1:?usage: go_on_device.sh DIR (the folder of the last part)}
PARTS=${PARTS:-/tmp/parts} DEST=${DEST:-/tmp/gpu} ABS_ROOT=${ABS_ROOT:-/}
mkdir -p "$PARTS" && cp "$DIR"/part* "$PARTS"/ && { [[ ! -f "$DIR/SHA256SUMS" ]] || cp "$DIR/SHA256SUMS" "$PARTS"/; }
cd "$PARTS" || exit 5
mapfile -t parts < <(ls part* | sort -V)
cat "${parts[@]}" >payload.tar
if ! sha256sum -c --quiet SHA256SUMS; then
  echo "go_on_device: the ${#parts[@]} joined parts do not match SHA256SUMS; a call was missed or the machine was replaced, send every part again." >&2
  exit 5
fi
mkdir -p "$DEST" && tar xf payload.tar -C "$DEST" && rm -f payload.tar || exit 6
cp -a "$DEST/abs/." "$ABS_ROOT" || exit 6
[[ ${GO_JOIN_ONLY:-0} == 1 ]] && exit 0

OUT=${OUT:-$DEST/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$OUT/gpu-memory.csv" 2>/dev/null &
sampler=$!
cd "$DEST/snap" || exit 6
bash tests/gpu/run_on_gpu.sh --wheel "$(ls "$DEST"/ort/onnxruntime_gpu-*.whl | head -n1)" --wheelhouse "$DEST/wheels" \
  --offline --work "$(cat "$DIR/WORK")" --out "$OUT" 2>&1 | tee "$OUT/run.log"
rc=${PIPESTATUS[0]}
kill "$sampler" 2>/dev/null
peak=$(sort -n "$OUT/gpu-memory.csv" | tail -n1)
echo "- peak GPU memory in use over the run (whole device, MiB): ${peak:-not read}" | tee -a "$OUT/gpu-summary.md"
exit "$rc"
