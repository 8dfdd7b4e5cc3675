#!/usr/bin/env bash
# One device call: where the decode kernel's time goes. (1) A/B timing of leave-one-out variants built by
# build_variant.sh (x0 = full kernel, minimal instances; x1 no mask loads; x2 no P V; x4 no Q K; x6 neither:
# results wrong on purpose, timing only); (2) ncu of the real build (build/gpu) on a large and a small case,
# with a per-SASS-line stall table saved under $OUT. Nothing is built here.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
cases="${1:-3:32:32768,4:32:32768,3:1:1024,4:1:1024,3:8:131072}"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
for v in x0 x1 x2 x4 x6; do
  [ -e "build/gpu_$v/libtq_kernels_harness.so" ] || continue
  echo "== variant $v"
  TQ_KERNELS_LIB="build/gpu_$v/libtq_kernels_harness.so" timeout 60 python3 bench/attention_gpu.py --cases "$cases" \
    --skip-sdpa 2>&1 | grep -E "ours|rror" | tee "$out/variant_$v.log"
done
sections=(--section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats
  --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats --section SourceCounters)
for c in 3:32:32768 4:1:1024; do
  tag=${c//:/_}
  timeout 150 ncu --clock-control none -k regex:tq_ "${sections[@]}" --import-source yes -o "$out/ncu_$tag" \
    python3 bench/attention_gpu.py --profile "$c" >"$out/ncu_$tag.log" 2>&1
  echo "ncu $c: rc=$?"
  ncu --import "$out/ncu_$tag.ncu-rep" --print-summary none >"$out/ncu_$tag.txt" 2>&1
  ncu --import "$out/ncu_$tag.ncu-rep" --page source --csv --print-source sass --launch-skip 0 --launch-count 1 \
    >"$out/ncu_${tag}_sass.csv" 2>&1
  grep -E "tq_|Duration|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Active Warps Per|Eligible Warps|Theoretical Occ|Warp Cycles Per Issued|Block Limit" \
    "$out/ncu_$tag.txt" | head -60
done
ls -la "$out" | head -30
