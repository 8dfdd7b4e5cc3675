#!/usr/bin/env bash
# One device call for a kernel version: tests, sanitizers, then the decode bench of the default build
# (build/gpu) against torch SDPA and of an A/B build (build/gpu_ab, TQ kernels only). Nothing is built here.
# Usage on the device: bash bench/gpu_harness/device_ab.sh [full]   (full: every bench row, else --quick)
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu --maxfail=25 --tb=line -rf -x 2>&1 \
  | tee "$out/pytest.log" | tail -15
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool "$tool" --print-limit 20 python3 tests/gpu/sanitize_cases.py \
    >"$out/sanitize_$tool.log" 2>&1
  echo "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize_$tool.log" | tail -1)"
done
if [ -e build/gpu_ab/libtq_kernels_harness.so ]; then
  TQ_KERNELS_LIB=build/gpu_ab/libtq_kernels_harness.so timeout 120 python3 bench/attention_gpu.py --quick \
    --skip-sdpa 2>&1 | tee "$out/attention_ab.log" | tail -14
fi
timeout 300 python3 bench/attention_gpu.py $([ "${1:-}" = full ] || echo --quick) 2>&1 \
  | tee "$out/attention_gpu.log" | tail -28
