#!/usr/bin/env bash
# One short device call (v3): attention kernel tests, sanitizers (short), then a few decode rows of the current
# build (build/gpu, with SDPA) and of an A/B build (build/gpu_ab). Nothing is built here.
# Usage on the device: bash bench/gpu_harness/device_v3.sh [CASES]   (CASES as bench/attention_gpu.py --cases)
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
cases="${1:-4:1:1024,3:1:1024,4:32:1024,4:1:32768,4:32:32768,3:32:32768,4:8:131072,3:8:131072}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py --maxfail=10 --tb=line -rf 2>&1 \
  | tee "$out/pytest.log" | tail -8
for tool in memcheck racecheck; do
  timeout 45 compute-sanitizer --tool "$tool" --print-limit 20 python3 tests/gpu/sanitize_cases.py \
    >"$out/sanitize_$tool.log" 2>&1
  echo "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize_$tool.log" | tail -1)"
done
if [ -e build/gpu_ab/libtq_kernels_harness.so ]; then
  TQ_KERNELS_LIB=build/gpu_ab/libtq_kernels_harness.so timeout 60 python3 bench/attention_gpu.py --cases "$cases" \
    --skip-sdpa 2>&1 | tee "$out/attention_ab.log" | grep "ours"
fi
timeout 90 python3 bench/attention_gpu.py --cases "$cases" 2>&1 | tee "$out/attention_gpu.log" | tail -10
