#!/usr/bin/env bash
# The checks every kernel change runs on the device: the kernel + quantize GPU tests, then compute-sanitizer
# memcheck and racecheck on tests/gpu/sanitize_cases.py, for one harness library (a full build: smallt_build.sh
# NAME SRC full).   bash bench/gpu_harness/kernel_checks.sh LIB [OUT]   (logs under OUT, default $OUT or /tmp/out)
# Exits non-zero when any of them fails.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
lib=$1
out="${2:-${OUT:-/tmp/out}}"
mkdir -p "$out"
TQ_KERNELS_LIB="$lib" timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py \
  tests/gpu/test_quantize_gpu.py tests/gpu/test_quantize_step_gpu.py --tb=short -rf 2>&1 | tee "$out/pytest.log" | tail -8
rc=${PIPESTATUS[0]}
for tool in memcheck racecheck; do
  log="$out/sanitize_$tool.log"
  TQ_KERNELS_LIB="$lib" timeout 150 compute-sanitizer --tool "$tool" --print-limit 20 python3 \
    tests/gpu/sanitize_cases.py >"$log" 2>&1
  src=$?
  echo "compute-sanitizer $tool: rc=$src $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)"
  [ "$src" -eq 0 ] || rc=1
done
exit "$rc"
