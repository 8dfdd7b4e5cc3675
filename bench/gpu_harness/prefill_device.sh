#!/usr/bin/env bash
# Prefill chunks (bench/NOTES.md "Prefill v2"): one device call that checks a harness build and times
# bench/prefill_gpu.py for it and for a baseline build in the same call.
#   bash bench/gpu_harness/prefill_device.sh NEW_LIB [BASE_LIB] [--no-tests]
# NEW_LIB / BASE_LIB: harness libraries (smallt_build.sh NAME SRC full). Runs the kernel and quantize GPU tests
# and compute-sanitizer memcheck / racecheck on tests/gpu/sanitize_cases.py against NEW_LIB (unless
# --no-tests), then bench/prefill_gpu.py for BASE_LIB, NEW_LIB and NEW_LIB with TQ_KV16=0, then the per-kernel
# split of NEW_LIB's calls (prefill_profile.py). NCU=1: also ncu source counters of NEW_LIB's split kernel at
# B=1 S=2048 ($OUT/sass.csv, summarize with sass_stalls.py). Logs under $OUT.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
new=$1
base=${2:-}
tests=1
[ "${3:-}" = --no-tests ] && tests=0
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
rc=0
if [ "$tests" = 1 ]; then
  bash bench/gpu_harness/kernel_checks.sh "$new" "$out" || rc=1
fi
if [ -n "$base" ]; then
  echo "== base $base"
  TQ_KERNELS_LIB="$base" timeout 200 python3 bench/prefill_gpu.py 2>&1 | tail -12
fi
echo "== new $new"
TQ_KERNELS_LIB="$new" timeout 200 python3 bench/prefill_gpu.py 2>&1 | tail -12
echo "== new $new, TQ_KV16=0 (each block decodes its own tiles)"
TQ_KV16=0 TQ_KERNELS_LIB="$new" timeout 200 python3 bench/prefill_gpu.py 2>&1 | tail -12
TQ_KERNELS_LIB="$new" timeout 100 python3 bench/gpu_harness/prefill_profile.py 2>&1 | grep -v Warn | tail -14
if [ "${NCU:-0}" = 1 ]; then
  TQ_KERNELS_LIB="$new" timeout 300 ncu --clock-control none -k regex:split_kernel --launch-skip 2 --launch-count 1 \
    --section SourceCounters --section WarpStateStats --section LaunchStats --section Occupancy \
    -o "$out/split" python3 bench/gpu_harness/prefill_profile.py --case 1,0,2048 --ncu >"$out/ncu.log" 2>&1
  ncu --import "$out/split.ncu-rep" --page source --csv --print-source sass >"$out/sass.csv" 2>&1
  ncu --import "$out/split.ncu-rep" --print-summary none 2>&1 | grep -E "Registers Per|Achieved Occ|Duration|Executed Ipc A|Block Limit" \
    | head -12
  rm -f "$out/split.ncu-rep"
fi
echo "prefill_device: tests and sanitizers rc=$rc"
exit "$rc"
