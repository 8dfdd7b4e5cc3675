#!/usr/bin/env bash
# One device call: nothing is built here (carry build/gpu). Correctness first, then sanitizers, then timings;
# the short tables print last. Usage on the device: bash bench/gpu_harness/device_run.sh [quick]
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider tests/gpu --maxfail=25 --tb=line -rf 2>&1 | tee "$out/pytest.log" | tail -30
for tool in memcheck racecheck; do
  compute-sanitizer --tool "$tool" --print-limit 20 python3 tests/gpu/sanitize_cases.py >"$out/sanitize_$tool.log" 2>&1
  echo "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize_$tool.log" | tail -1)"
done
if [ "${1:-}" = quick ]; then
  ncu --kernel-name regex:split_kernel --launch-skip 1 --launch-count 1 --section SpeedOfLight \
    --section WarpStateStats --section Occupancy --section LaunchStats \
    python3 bench/attention_gpu.py --profile >"$out/ncu_split.txt" 2>&1
  grep -E "Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers|Stall|Warp Cycles|Block Limit" \
    "$out/ncu_split.txt" | head -30
else
  python3 bench/quantize_gpu.py 2>&1 | tee "$out/quantize_gpu.log" | tail -16
fi
python3 bench/attention_gpu.py ${1:+--quick} 2>&1 | tee "$out/attention_gpu.log" | tail -30
