#!/usr/bin/env bash
# One device call that verifies the kernels at HEAD and prints both issue-4 benches (nothing is built there):
# here `bash plugins/kernels/build_standalone.sh`, then on the device, carrying build/gpu:
#   bash bench/gpu_harness/device_head.sh [--quick]
# Runs: the kernel and quantize GPU tests, compute-sanitizer memcheck and racecheck on tests/gpu/sanitize_cases.py
# and on the quantize launches, bench/attention_gpu.py (all 24 rows, with a dense R and then with the converter's
# default Hadamard R; --quick: its quick subset) and bench/quantize_gpu.py. Logs under $OUT; the tables last.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
quick=()
[ "${1:-}" = --quick ] && quick=(--quick)
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py tests/gpu/test_quantize_gpu.py \
  --tb=short -rf 2>&1 | tee "$out/pytest.log" | tail -6
rc=${PIPESTATUS[0]}
for tool in memcheck racecheck; do
  for cases in tests/gpu/sanitize_cases.py tests/gpu/test_quantize_gpu.py; do
    log="$out/sanitize_${tool}_$(basename "$cases" .py).log"
    timeout 120 compute-sanitizer --tool "$tool" --print-limit 20 python3 "$cases" >"$log" 2>&1
    src=$?
    echo "compute-sanitizer $tool $cases: rc=$src $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)"
    [ "$src" -eq 0 ] || rc=1
  done
done
timeout 240 python3 bench/attention_gpu.py --rotation dense "${quick[@]}" 2>&1 | tee "$out/attention_dense.log" \
  | tail -27
timeout 240 python3 bench/attention_gpu.py "${quick[@]}" 2>&1 | tee "$out/attention_gpu.log" | tail -27
timeout 120 python3 bench/quantize_gpu.py 2>&1 | tee "$out/quantize_gpu.log" | tail -14
echo "device_head: tests and sanitizers rc=$rc"
exit "$rc"
