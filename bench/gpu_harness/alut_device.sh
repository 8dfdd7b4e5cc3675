#!/usr/bin/env bash
# Aligned pair tables (bench/NOTES.md "Aligned tables"): one device call that checks a full harness build and
# times the decode kernel of several minimal builds against a baseline in the same call.
#   bash bench/gpu_harness/alut_device.sh FULL_LIB BASE_LIB LIB... [-- attention_gpu.py args]
# FULL_LIB: smallt_build.sh NAME SRC full (kernel + quantize GPU tests, compute-sanitizer memcheck / racecheck);
# BASE_LIB and each LIB: minimal builds, timed interleaved (two rounds) with bench/attention_gpu.py --skip-sdpa;
# then the last LIB's table with SDPA. Logs under $OUT.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
full=$1
shift
libs=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do libs+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
extra=("$@")
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
rc=0
if [ -n "$full" ]; then
  bash bench/gpu_harness/kernel_checks.sh "$full" "$out" || rc=1
fi
for round in 1 2; do
  for lib in "${libs[@]}"; do
    name=$(basename "$(dirname "$lib")")
    echo "== round $round $name"
    TQ_KERNELS_LIB="$lib" timeout 200 python3 bench/attention_gpu.py --skip-sdpa "${extra[@]}" 2>&1 \
      | tee "$out/ab_${name}_$round.log" | grep -E "^ +[0-9]|rror" 
  done
done
last=${libs[${#libs[@]}-1]}
echo "== $(basename "$(dirname "$last")") with SDPA"
TQ_KERNELS_LIB="$last" timeout 200 python3 bench/attention_gpu.py "${extra[@]}" 2>&1 | tee "$out/table.log" | tail -30
echo "alut_device: tests and sanitizers rc=$rc"
exit "$rc"
