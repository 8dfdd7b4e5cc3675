#!/usr/bin/env bash
# The device checks of a decode-kernel change (warp_pipe_device.sh, prerotate_device.sh):
#   bash bench/gpu_harness/decode_check.sh FULL_LIB BASE_LIB NEW_LIB SETTING...
# kernel + quantize GPU tests and compute-sanitizer on FULL_LIB (kernel_checks.sh); for each SETTING ("-" = no
# environment, else VAR=VALUE[,VAR=VALUE], applied to both builds) the decode outputs of BASE_LIB and NEW_LIB
# compared case by case (decode_outputs.py); then the issue's table of NEW_LIB against SDPA. Logs under $OUT.
# Exits non-zero when a test or sanitizer fails.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
full=$1 base=$2 new=$3
shift 3
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
rc=0
bash bench/gpu_harness/kernel_checks.sh "$full" "$out" || rc=1
for setting in "$@"; do
  envs=()
  [ "$setting" != - ] && IFS=',' read -r -a envs <<<"$setting"
  for lib in "$base" "$new"; do
    tag=base
    [ "$lib" = "$new" ] && tag=new
    env "${envs[@]}" TQ_KERNELS_LIB="$lib" python3 bench/gpu_harness/decode_outputs.py "$out/$tag.npz" >/dev/null
  done
  echo "== decode outputs, base vs new, ${setting/#-/no setting}"
  python3 bench/gpu_harness/decode_outputs.py --compare "$out/base.npz" "$out/new.npz"
done
rm -f "$out"/*.npz
echo "== new with SDPA"
TQ_KERNELS_LIB="$new" timeout 200 python3 bench/attention_gpu.py 2>&1 | tee "$out/table.log" | tail -27
echo "decode_check: tests and sanitizers rc=$rc"
exit "$rc"
