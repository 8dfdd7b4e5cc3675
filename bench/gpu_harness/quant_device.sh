#!/usr/bin/env bash
# One device call for the quantize kernel (nothing is compiled here; carry build/gpu_q and build/gpu_qbase, or only
# their obj/ folders, which are then linked here against build/gpu_qbase/obj's other objects):
#   [EXTRA="build/gpu_qA ..."] [SAN_EXTRA=0|1] [BENCH_ROUNDS=1] [SAN_CASES="all"|"q"] [NCU_TAGS="new base dir"] \
#     bash bench/gpu_harness/quant_device.sh [full] [ncu]
# tests (quantize; with `full` also the kernel tests) and compute-sanitizer (memcheck, racecheck; SAN_CASES=q: only
# the quantize launches) on the new build, the quantize tests (SAN_EXTRA=1: and the sanitizers on the quantize
# launches) on each EXTRA build, the quantize bench of the
# baseline, the new and each EXTRA build in the same call (round 1 the full table, later rounds `--fast`,
# interleaved, to see the run-to-run spread), and with `ncu` an ncu profile of the fast-path kernel of each
# NCU_TAGS build (new, base or a build folder) at B=8 S=4096 4-bit float16 (per-SASS csv under $OUT, summarized by
# sass_stalls.py).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
final="${OUT:-/tmp/out}"
out=/tmp/qout
rm -rf "$out" && mkdir -p "$out" "$final"
new=build/gpu_q/libtq_kernels_harness.so
base=build/gpu_qbase/libtq_kernels_harness.so
link() {  # a build folder's quantize.cu.o plus build/gpu_qbase/obj's other objects (relinked: a warm machine may
  local dir=$1  # hold a library from an earlier call); a folder carried without obj/ keeps its library
  [[ -f $dir/obj/quantize.cu.o ]] || return 0
  local objs=("$dir/obj/quantize.cu.o")
  for o in build/gpu_qbase/obj/*.o; do [[ $(basename "$o") == quantize.cu.o ]] || objs+=("$o"); done
  nvcc -shared -gencode arch=compute_90a,code=sm_90a -o "$dir/libtq_kernels_harness.so" "${objs[@]}" -lcudart_static
}
for dir in build/gpu_qbase build/gpu_q ${EXTRA:-}; do link "$dir" || echo "link failed: $dir"; done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
tests=tests/gpu/test_quantize_gpu.py
[[ " $* " == *" full "* ]] && tests="tests/gpu/test_kernels_gpu.py tests/gpu/test_quantize_gpu.py"
TQ_KERNELS_LIB=$new timeout 200 python3 -m pytest -q -p no:cacheprovider $tests --maxfail=10 --tb=short -rf \
  ${PYTEST_K:+-k "$PYTEST_K"} \
  2>&1 | tee "$out/pytest.log" | tail -12
san_scripts=(tests/gpu/sanitize_cases.py tests/gpu/test_quantize_gpu.py)
[[ ${SAN_CASES:-all} == q ]] && san_scripts=(tests/gpu/test_quantize_gpu.py)
for tool in ${SAN_TOOLS:-memcheck racecheck}; do
  for script in "${san_scripts[@]}"; do
    log="$out/sanitize_${tool}_$(basename "$script" .py).log"
    TQ_KERNELS_LIB=$new timeout 90 compute-sanitizer --tool "$tool" --print-limit 20 python3 "$script" >"$log" 2>&1
    echo "compute-sanitizer $tool ($script): rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)"
  done
done
extra_libs=()
for dir in ${EXTRA:-}; do
  extra_libs+=("$dir/libtq_kernels_harness.so")
  echo "== quantize tests: $dir"
  TQ_KERNELS_LIB=$dir/libtq_kernels_harness.so timeout 120 python3 -m pytest -q -p no:cacheprovider \
    tests/gpu/test_quantize_gpu.py --maxfail=5 --tb=short 2>&1 | tee "$out/pytest_$(basename "$dir").log" | tail -3
  [[ ${SAN_EXTRA:-0} == 1 ]] || continue
  for tool in ${SAN_TOOLS:-memcheck racecheck}; do
    log="$out/sanitize_${tool}_$(basename "$dir").log"
    TQ_KERNELS_LIB=$dir/libtq_kernels_harness.so timeout 90 compute-sanitizer --tool "$tool" --print-limit 20 \
      python3 tests/gpu/test_quantize_gpu.py >"$log" 2>&1
    echo "compute-sanitizer $tool (quantize cases, $dir): rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)"
  done
done
for round in $(seq "${BENCH_ROUNDS:-1}"); do
  flag=""
  [[ $round -gt 1 ]] && flag=--fast
  for lib in "$base" "$new" "${extra_libs[@]}"; do
    echo "== bench (round $round): $lib"
    TQ_KERNELS_LIB=$lib timeout 120 python3 bench/quantize_gpu.py $flag 2>&1 | tee -a "$out/bench.log" | tail -12
  done
done
if [[ " $* " == *" ncu "* ]]; then
  sections=(--section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats
    --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats --section SourceCounters)
  for tag in ${NCU_TAGS:-new base}; do
    case $tag in
      new) lib=$new ;;
      base) lib=$base ;;
      *) lib=$tag/libtq_kernels_harness.so; tag=$(basename "$tag") ;;
    esac
    TQ_KERNELS_LIB=$lib timeout 120 ncu --clock-control none -k regex:wht --launch-skip 2 --launch-count 1 \
      "${sections[@]}" --import-source yes -o "$out/ncu_$tag" python3 bench/gpu_harness/quant_profile.py \
      >"$out/ncu_$tag.log" 2>&1
    echo "ncu $tag: rc=$?"
    ncu --import "$out/ncu_$tag.ncu-rep" --print-summary none >"$out/ncu_$tag.txt" 2>&1
    ncu --import "$out/ncu_$tag.ncu-rep" --page source --csv --print-source sass >"$out/ncu_${tag}_sass.csv" 2>&1
    grep -E "Duration|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|Executed Ipc A|Executed Instructions  " \
      "$out/ncu_$tag.txt" | head -16
    python3 bench/gpu_harness/sass_stalls.py "$out/ncu_${tag}_sass.csv" --top 8 2>&1 | head -40 > "$out/stalls_$tag.txt"
    head -24 "$out/stalls_$tag.txt"
  done
  rm -f "$out"/*.ncu-rep
fi
tar czf "$final/quant_out.tgz" -C "$out" . && echo "logs: quant_out.tgz"
