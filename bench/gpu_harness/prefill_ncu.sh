#!/usr/bin/env bash
# One device call: prefill timing (bench/prefill_gpu.py) of one or more harness builds, then ncu of the first
# build's prefill split kernel on the given cases with a per-SASS-line stall table saved under $OUT.
#   bash bench/gpu_harness/prefill_ncu.sh "B,PAST,S ..." LIB [LIB...]
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
cases=$1
shift
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
for lib in "$@"; do
  echo "== $lib"
  TQ_KERNELS_LIB="$lib" timeout 120 python3 bench/prefill_gpu.py 2>&1 | tail -14
done
sections=(--section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats
  --section LaunchStats --section InstructionStats --section SourceCounters --section ComputeWorkloadAnalysis)
for c in $cases; do
  tag=${c//,/_}
  TQ_KERNELS_LIB="$1" timeout 200 ncu --clock-control none -k regex:tq_attention_split "${sections[@]}" \
    --import-source yes --launch-skip 2 --launch-count 1 -o "$out/ncu_$tag" \
    python3 bench/gpu_harness/prefill_profile.py --case "$c" --ncu >"$out/ncu_$tag.log" 2>&1
  echo "ncu $c: rc=$?"
  ncu --import "$out/ncu_$tag.ncu-rep" --print-summary none >"$out/ncu_$tag.txt" 2>&1
  ncu --import "$out/ncu_$tag.ncu-rep" --page source --csv --print-source sass >"$out/ncu_${tag}_sass.csv" 2>&1
  grep -E "tq_|Duration|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Eligible Warps|Theoretical Occ|Warp Cycles Per Issued|Block Limit|Pipe" \
    "$out/ncu_$tag.txt" | head -40
  python3 bench/gpu_harness/sass_stalls.py "$out/ncu_${tag}_sass.csv" --top 25 2>&1 | head -70
done
