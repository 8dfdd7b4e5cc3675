#!/usr/bin/env bash
# One device call: kernel tests, sanitizers on the test shapes, then decode rows of a baseline build
# (build/gpu_base, e.g. the previous HEAD; optional) and of the current build (build/gpu, with SDPA), same call,
# same card. (Replaces the earlier device_ab.sh / device_v3.sh.)
# Usage on the device: bash bench/gpu_harness/device_v4.sh [CASES]   (CASES as bench/attention_gpu.py --cases)
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
cases="${1:-4:1:1024,3:1:1024,4:8:1024,4:32:1024,4:1:4096,4:1:32768,4:8:32768,4:32:32768,3:32:32768,3:8:131072}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py tests/gpu/test_quantize_gpu.py \
  --maxfail=10 --tb=short -rf 2>&1 | tee "$out/pytest.log" | tail -15
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool "$tool" --print-limit 20 python3 tests/gpu/sanitize_cases.py \
    >"$out/sanitize_$tool.log" 2>&1
  echo "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize_$tool.log" | tail -1)"
done
if [ -e build/gpu_base/libtq_kernels_harness.so ]; then
  echo "== baseline build (build/gpu_base)"
  TQ_KERNELS_LIB=build/gpu_base/libtq_kernels_harness.so timeout 90 python3 bench/attention_gpu.py --cases "$cases" \
    --skip-sdpa 2>&1 | tee "$out/attention_base.log" | grep "ours"
fi
echo "== current build (build/gpu) with SDPA"
timeout 150 python3 bench/attention_gpu.py --cases "$cases" 2>&1 | tee "$out/attention_gpu.log" | tail -14
