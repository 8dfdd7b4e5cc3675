#!/usr/bin/env bash
# One device call for the quantize kernel (nothing is built here; carry build/gpu_q and build/gpu_qbase):
#   bash bench/gpu_harness/quant_device.sh [full] [ncu]
# tests (quantize; with `full` also the kernel tests) and compute-sanitizer on the new build, the quantize bench of
# the baseline build and of the new build in the same call, and with `ncu` an ncu profile of the fast-path kernel
# of both builds at B=8 S=4096 4-bit float16 (per-SASS csv under $OUT, summarized by sass_stalls.py).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
final="${OUT:-/tmp/out}"
out=/tmp/qout
rm -rf "$out" && mkdir -p "$out" "$final"
new=build/gpu_q/libtq_kernels_harness.so
base=build/gpu_qbase/libtq_kernels_harness.so
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
tests=tests/gpu/test_quantize_gpu.py
[[ " $* " == *" full "* ]] && tests="tests/gpu/test_kernels_gpu.py tests/gpu/test_quantize_gpu.py"
TQ_KERNELS_LIB=$new timeout 200 python3 -m pytest -q -p no:cacheprovider $tests --maxfail=10 --tb=short -rf \
  ${PYTEST_K:+-k "$PYTEST_K"} \
  2>&1 | tee "$out/pytest.log" | tail -12
for tool in ${SAN_TOOLS:-memcheck racecheck}; do
  TQ_KERNELS_LIB=$new timeout 90 compute-sanitizer --tool "$tool" --print-limit 20 python3 tests/gpu/sanitize_cases.py \
    >"$out/sanitize_$tool.log" 2>&1
  echo "compute-sanitizer $tool (sanitize_cases): rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize_$tool.log" | tail -1)"
  TQ_KERNELS_LIB=$new timeout 90 compute-sanitizer --tool "$tool" --print-limit 20 python3 tests/gpu/test_quantize_gpu.py \
    >"$out/sanitize_q_$tool.log" 2>&1
  echo "compute-sanitizer $tool (quantize cases): rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize_q_$tool.log" | tail -1)"
done
for lib in "$base" "$new"; do
  echo "== bench: $lib"
  TQ_KERNELS_LIB=$lib timeout 120 python3 bench/quantize_gpu.py 2>&1 | tee -a "$out/bench.log" | tail -12
done
if [[ " $* " == *" ncu "* ]]; then
  sections=(--section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats
    --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats --section SourceCounters)
  for tag in ${NCU_TAGS:-new base}; do
    lib=$new; [ "$tag" = base ] && lib=$base
    TQ_KERNELS_LIB=$lib timeout 120 ncu --clock-control none -k regex:wht --launch-skip 2 --launch-count 1 \
      "${sections[@]}" --import-source yes -o "$out/ncu_$tag" python3 bench/gpu_harness/quant_profile.py \
      >"$out/ncu_$tag.log" 2>&1
    echo "ncu $tag: rc=$?"
    ncu --import "$out/ncu_$tag.ncu-rep" --print-summary none >"$out/ncu_$tag.txt" 2>&1
    ncu --import "$out/ncu_$tag.ncu-rep" --page source --csv --print-source sass >"$out/ncu_${tag}_sass.csv" 2>&1
    grep -E "Duration|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|Executed Ipc A" \
      "$out/ncu_$tag.txt" | head -16
    python3 bench/gpu_harness/sass_stalls.py "$out/ncu_${tag}_sass.csv" --top 8 2>&1 | head -40 > "$out/stalls_$tag.txt"
    head -24 "$out/stalls_$tag.txt"
  done
  rm -f "$out"/*.ncu-rep
fi
tar czf "$final/quant_out.tgz" -C "$out" . && echo "logs: quant_out.tgz"
