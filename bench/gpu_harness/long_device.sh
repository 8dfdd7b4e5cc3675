#!/usr/bin/env bash
# Long-T helper's device call (bench/NOTES.md "Long T"): tests + sanitizers on build/gpu_long_f3 (final, full
# instances), A/B/A/B/A/B of HEAD fbf73a5 (build/gpu_lbase) vs step 2 (build/gpu_long_full: S^T + mma + mask
# probe, full instances) vs final (build/gpu_long: + full-tile copies + exp2), ncu instruction counts HEAD vs
# final, then the final build's 24-row table with SDPA. Nothing is built on the device; it ran as
# build/gpu_long_full/long_device.sh with that folder also holding this branch's tests/gpu/test_kernels_gpu.py
# and HEAD's bench/attention_gpu.py and tests/gpu/sanitize_cases.py (copied over the device's tree below).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
# This session's tests; HEAD fbf73a5's bench and sanitize cases (the device copies /work/main's working tree,
# which holds another helper's uncommitted edits of these files).
cp build/gpu_long_full/test_kernels_gpu.py tests/gpu/test_kernels_gpu.py
cp build/gpu_long_full/sanitize_cases.py tests/gpu/sanitize_cases.py
cp build/gpu_long_full/attention_gpu.py bench/attention_gpu.py
full=build/gpu_long_f3/libtq_kernels_harness.so
base=build/gpu_lbase/libtq_kernels_harness.so
step2=build/gpu_long_full/libtq_kernels_harness.so
new=build/gpu_long/libtq_kernels_harness.so
san() {
  TQ_KERNELS_LIB=$full timeout 200 compute-sanitizer --tool "$1" --print-limit 20 python3 "$2" >"$out/$3.log" 2>&1
  echo "compute-sanitizer $1 $2: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$3.log" | tail -1)"
}
TQ_KERNELS_LIB=$full timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py \
  tests/gpu/test_quantize_gpu.py --maxfail=30 --tb=short -rf >"$out/pytest.log" 2>&1 &
p1=$!
(san memcheck tests/gpu/sanitize_cases.py memcheck && san racecheck tests/gpu/sanitize_cases.py racecheck) &
p2=$!
wait $p1; echo "pytest rc=$?"; tail -12 "$out/pytest.log"
wait $p2
cases=4:32:32768,3:32:32768,4:8:32768,3:8:131072,4:1:131072,4:8:1024,4:32:4096
for rep in 1 2; do
  for lib in "$base" "$step2" "$new"; do
    echo "== $lib run $rep"
    TQ_KERNELS_LIB=$lib timeout 120 python3 bench/attention_gpu.py --cases "$cases" --skip-sdpa 2>&1 \
      | tee "$out/ab_${rep}_$(basename "$(dirname "$lib")").log" | grep -E "^ +[0-9]|copy|rror"
  done
done
m=smsp__inst_executed.sum,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
m+=,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active
for c in 3:32:32768 4:32:32768; do
  for lib in "$base" "$new"; do
    echo "== ncu $c $lib"
    TQ_KERNELS_LIB=$lib timeout 90 ncu --clock-control none -k regex:decode --launch-count 1 --metrics "$m" \
      python3 bench/attention_gpu.py --profile "$c" 2>&1 | tee "$out/ncu_${c//:/_}_$(basename "$(dirname "$lib")").log" \
      | grep -E "inst_executed|duration|dram__|issue_active|warps_active|decode_kernel"
  done
done
echo "== final build, 24-row table with SDPA"
TQ_KERNELS_LIB=$new timeout 240 python3 bench/attention_gpu.py 2>&1 | tee "$out/full_new.log" | tail -27
