#!/usr/bin/env bash
# One device call for the small-T decode work (bench/NOTES.md "small T"). Nothing is built here: carry
# build/gpu_smallt (this checkout, full build) and build/gpu_sbase (the baseline, e.g. `git archive HEAD`),
# both from bench/gpu_harness/smallt_build.sh.
#   bash bench/gpu_harness/smallt_device.sh probe   correctness of the new paths (tests, memcheck) alongside,
#                                                  then baseline vs this on small/medium/large T, the
#                                                  warps x splits sweep, one ncu profile (B=1 T=1K)
#   bash bench/gpu_harness/smallt_device.sh final   kernel + quantize tests, memcheck + racecheck (project
#                                                  cases and the small-T cases), the full 24-row table of the
#                                                  baseline (no SDPA) and of this build (with SDPA), this build
#                                                  with 4 warps forced where it takes 8, and ncu warp-stall
#                                                  ratios of both builds at B=1 T=1K
#   bash bench/gpu_harness/smallt_device.sh hadamard   (bench/NOTES.md "Hadamard un-rotation") this build =
#                                                  $TQ_NEW (default build/gpu_fwht), baseline $TQ_BASE (default
#                                                  build/gpu_sbase, HEAD): kernel + quantize tests, memcheck +
#                                                  racecheck, then A/B/A/B of the small/medium-T rows with a
#                                                  Hadamard R (attention_gpu.py --rotation hadamard), the 24-row tables of both
#                                                  builds with the bench's dense R and with a Hadamard R;
#                                                  TQ_EXTRA=gpu_NAME adds a third build to the A/B rows
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
mode=${1:-probe}
new=build/${TQ_NEW:-gpu_smallt}/libtq_kernels_harness.so
base=build/${TQ_BASE:-gpu_sbase}/libtq_kernels_harness.so
[[ $mode == hadamard ]] && new=build/${TQ_NEW:-gpu_fwht}/libtq_kernels_harness.so
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
export TQ_KERNELS_LIB=$new
san() {  # tool, script, log name
  timeout 200 compute-sanitizer --tool "$1" --print-limit 20 python3 "$2" >"$out/$3.log" 2>&1
  echo "compute-sanitizer $1 $2: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$3.log" | tail -1)"
}
if [[ $mode == hadamard ]]; then
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py tests/gpu/test_quantize_gpu.py \
    --maxfail=20 --tb=short -rf >"$out/pytest.log" 2>&1 &
  p1=$!
  (san memcheck tests/gpu/sanitize_cases.py memcheck && san racecheck tests/gpu/sanitize_cases.py racecheck) &
  p2=$!
  (san memcheck bench/gpu_harness/smallt_sanitize.py memcheck_smallt &&
    san racecheck bench/gpu_harness/smallt_sanitize.py racecheck_smallt) &
  p3=$!
  wait $p1; echo "pytest rc=$?"; tail -8 "$out/pytest.log"
  wait $p2 $p3
  had="bench/attention_gpu.py --rotation hadamard"
  cases=4:1:1024,4:8:1024,4:32:1024,3:1:1024,3:8:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096,3:1:4096,3:8:4096
  cases+=,3:32:4096,4:1:32768,4:32:32768,3:8:131072
  libs=("$base" "$new")
  [[ -n ${TQ_EXTRA:-} ]] && libs+=("build/$TQ_EXTRA/libtq_kernels_harness.so")  # another variant (timing only)
  for rep in 1 2; do
    for lib in "${libs[@]}"; do
      echo "== Hadamard R, $lib, run $rep"
      TQ_KERNELS_LIB=$lib timeout 120 python3 $had --cases "$cases" --skip-sdpa 2>&1 \
        | tee "$out/had_${rep}_$(basename "$(dirname "$lib")").log" | grep ours
    done
  done
  echo "== dense R (bench/attention_gpu.py), baseline ($base), no SDPA"
  TQ_KERNELS_LIB=$base timeout 150 python3 bench/attention_gpu.py --rotation dense --skip-sdpa 2>&1 | tee "$out/dense_base.log" \
    | grep ours
  echo "== dense R, this build, with SDPA"
  timeout 240 python3 bench/attention_gpu.py --rotation dense 2>&1 | tee "$out/dense_new.log" | tail -27
  echo "== Hadamard R, this build, with SDPA (24 rows)"
  timeout 240 python3 $had 2>&1 | tee "$out/had_full_new.log" | tail -27
elif [[ $mode == probe ]]; then
  # Correctness, concurrently (no timing runs meanwhile).
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py -k "attention" --maxfail=20 \
    --tb=line -rf >"$out/pytest.log" 2>&1 &
  p1=$!
  san memcheck bench/gpu_harness/smallt_sanitize.py memcheck_smallt &
  p2=$!
  wait $p1; echo "pytest rc=$?"; tail -25 "$out/pytest.log"
  wait $p2
  cases=4:1:1024,3:1:1024,4:8:1024,3:8:1024,4:32:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096,3:32:4096
  cases+=,4:1:32768,4:32:32768,3:8:131072
  echo "== baseline ($base)"
  TQ_KERNELS_LIB=$base timeout 120 python3 bench/attention_gpu.py --rotation dense --cases "$cases" --skip-sdpa 2>&1 \
    | tee "$out/attention_base.log" | grep ours
  echo "== this build, with SDPA"
  timeout 200 python3 bench/attention_gpu.py --rotation dense --cases "$cases" 2>&1 | tee "$out/attention_new.log" | tail -15
  echo "== sweep"
  timeout 200 python3 bench/gpu_harness/smallt_sweep.py --splits 0,1,2,4,8 \
    --cases 4:1:1024,3:1:1024,4:8:1024,4:32:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096,4:32:32768,3:8:131072 2>&1 | tee "$out/sweep.log"
  echo "== ncu B=1 T=1K (auto plan)"
  timeout 120 ncu --clock-control none -k regex:tq_ --section SpeedOfLight --section WarpStateStats \
    --section LaunchStats --section Occupancy --section SourceCounters --import-source yes -o "$out/ncu_4_1_1024" \
    python3 bench/attention_gpu.py --profile 4:1:1024 >"$out/ncu.log" 2>&1
  echo "ncu rc=$?"
  ncu --import "$out/ncu_4_1_1024.ncu-rep" --page source --csv --print-source cuda --launch-skip 2 --launch-count 1 \
    >"$out/ncu_4_1_1024_cuda.csv" 2>&1
  ncu --import "$out/ncu_4_1_1024.ncu-rep" --print-summary none 2>&1 \
    | grep -E "tq_|Duration|Registers Per|Block Size|Grid Size|No Eligible|Active Warps Per|Warp Cycles Per Issued|Dynamic Shared" \
    | tail -24
else
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py tests/gpu/test_quantize_gpu.py \
    --maxfail=20 --tb=short -rf >"$out/pytest.log" 2>&1 &
  p1=$!
  (san memcheck tests/gpu/sanitize_cases.py memcheck && san racecheck tests/gpu/sanitize_cases.py racecheck) &
  p2=$!
  (san memcheck bench/gpu_harness/smallt_sanitize.py memcheck_smallt &&
    san racecheck bench/gpu_harness/smallt_sanitize.py racecheck_smallt) &
  p3=$!
  wait $p1; echo "pytest rc=$?"; tail -8 "$out/pytest.log"
  wait $p2 $p3
  echo "== baseline ($base), no SDPA"
  TQ_KERNELS_LIB=$base timeout 150 python3 bench/attention_gpu.py --rotation dense --skip-sdpa 2>&1 | tee "$out/attention_base.log" \
    | grep ours
  echo "== this build, with SDPA"
  timeout 240 python3 bench/attention_gpu.py --rotation dense 2>&1 | tee "$out/attention_new.log" | tail -27
  echo "== this build, 4 warps forced (rows where the launcher takes 8)"
  TQ_DECODE_WARPS=4 timeout 60 python3 bench/attention_gpu.py --rotation dense --skip-sdpa \
    --cases 4:8:1024,3:8:1024,4:32:4096,3:32:4096 2>&1 | tee "$out/attention_new_w4.log" | grep ours
  echo "== ncu, warp stall reasons per issue (B=1 T=1K, 4-bit; third call, caches as the bench leaves them)"
  for lib in "$base" "$new"; do
    TQ_KERNELS_LIB=$lib timeout 90 ncu --clock-control none --cache-control none -k regex:tq_ --launch-skip 2 \
      --metrics gpu__time_duration.sum,smsp__warps_active.avg.per_cycle_active,"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
      python3 bench/attention_gpu.py --profile 4:1:1024 >"$out/ncu_$(basename "$(dirname "$lib")").log" 2>&1
    echo "ncu $lib: rc=$?"
    grep -E "tq_|duration|warps_active|stalled" "$out/ncu_$(basename "$(dirname "$lib")").log" \
      | awk '$NF+0 >= 0.05 || /tq_|duration|active/' | head -40
  done
fi
ls "$out"
