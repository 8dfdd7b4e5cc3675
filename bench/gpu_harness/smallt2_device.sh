#!/usr/bin/env bash
# One device call for the second small-T pass (bench/NOTES.md "Small T, second pass"). Nothing is built here:
# carry the libraries named below (bench/gpu_harness/smallt_build.sh).
#   bash bench/gpu_harness/smallt2_device.sh measure   baseline $TQ_BASE only (default build/gpu_sbase2, HEAD):
#       warps x splits sweep with the default Hadamard R at T = 1K / 4K, then ncu kernel durations and warp-stall
#       ratios per issue of the launcher's own plan (B = 1, 8, 32, T = 1K, 4-bit, Hadamard R)
#   ... ab      tests + sanitizers of $TQ_NEW, A/B/A/B of $TQ_BASE vs $TQ_NEWT (TQ_DECODE_PDL=0/1), sweep
#   ... sweep   split-chooser data of $TQ_NEWT (every split count, B 1..32, T 1K..128K) + ncu of B=32 T=1K
#   ... final   tests + sanitizers of $TQ_FULL, A/B/A/B of $TQ_BASE vs $TQ_VARIANTS, dense-R rows, SDPA rows
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
mode=${1:-measure}
base=build/${TQ_BASE:-gpu_sbase2}/libtq_kernels_harness.so
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
if [[ $mode == measure ]]; then
  export TQ_KERNELS_LIB=$base
  echo "== sweep, Hadamard R ($base)"
  timeout 300 python3 bench/gpu_harness/smallt_sweep.py --splits 0,1,2,4,8 \
    --cases 4:1:1024,3:1:1024,4:8:1024,3:8:1024,4:32:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096 2>&1 \
    | tee "$out/sweep.log"
  for c in 4:1:1024 4:8:1024 4:32:1024; do
    tag=${c//:/_}
    timeout 90 ncu --clock-control none --cache-control none -k regex:tq_ --launch-skip 2 \
      --metrics gpu__time_duration.sum,smsp__warps_active.avg.per_cycle_active,launch__grid_size,launch__block_size,"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
      python3 bench/attention_gpu.py --profile "$c" >"$out/ncu_$tag.log" 2>&1
    echo "== ncu $c (Hadamard R, auto plan): rc=$?"
    grep -E "tq_|duration|warps_active|grid_size|block_size|stalled" "$out/ncu_$tag.log" \
      | awk '$NF+0 >= 0.1 || /tq_|duration|active|size/' | sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' \
      | awk '{$1=$1; print}' | head -60
  done
fi
if [[ $mode == ab ]]; then
  # $TQ_NEW (full build: tests, sanitizers) and $TQ_NEWT (minimal build of the same source: timing) against
  # $TQ_BASE (minimal build of HEAD); TQ_DECODE_PDL = 0 / 1 (plain / dependent reduce launch) in the same runs.
  new=build/${TQ_NEW:-gpu_pdl}/libtq_kernels_harness.so
  newt=build/${TQ_NEWT:-gpu_pdlmin}/libtq_kernels_harness.so
  san() {  # tool, script, log name
    TQ_KERNELS_LIB=$new timeout 240 compute-sanitizer --tool "$1" --print-limit 20 python3 "$2" >"$out/$3.log" 2>&1
    echo "compute-sanitizer $1 $2: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$3.log" | tail -1)"
  }
  TQ_KERNELS_LIB=$new timeout 400 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py \
    tests/gpu/test_quantize_gpu.py --maxfail=20 --tb=short -rf >"$out/pytest.log" 2>&1 &
  p1=$!
  (san memcheck tests/gpu/sanitize_cases.py memcheck && san racecheck tests/gpu/sanitize_cases.py racecheck) &
  p2=$!
  wait $p1; echo "pytest rc=$?"; tail -6 "$out/pytest.log"
  wait $p2
  cases=4:1:1024,4:8:1024,4:32:1024,3:1:1024,3:8:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096,3:1:4096,3:8:4096
  cases+=,3:32:4096,4:32:32768,3:8:131072
  for rep in 1 2; do
    for v in base new0 new1; do
      lib=$newt; pdl=${v#new}
      [[ $v == base ]] && lib=$base && pdl=3
      echo "== $v (lib $lib, TQ_DECODE_PDL=$pdl) run $rep"
      TQ_DECODE_PDL=$pdl TQ_KERNELS_LIB=$lib timeout 120 python3 bench/attention_gpu.py --cases "$cases" --skip-sdpa \
        2>&1 | tee "$out/ab_${v}_$rep.log" | grep -c ours
    done
  done
  python3 - "$out" <<'PY'
import re, sys, glob, collections
rows = collections.defaultdict(dict)
for f in sorted(glob.glob(sys.argv[1] + "/ab_*.log")):
    v, rep = re.match(r".*/ab_(\w+?)_(\d)\.log", f).groups()
    for line in open(f):
        m = re.match(r"bits=(\d) B=\s*(\d+) T=\s*(\d+): ours\s+([\d.]+)", line)
        if m:
            rows[m.group(1, 2, 3)].setdefault(v, []).append(float(m.group(4)))
vs = ["base", "new0", "new1"]
print("bits B T | " + " | ".join(vs) + "   (us, run1/run2)")
for k, r in rows.items():
    print(" ".join(k), "|", " | ".join("/".join(f"{x:.1f}" for x in r.get(v, [])) for v in vs))
PY
  echo "== sweep, new build (PDL on), Hadamard R"
  TQ_KERNELS_LIB=$newt timeout 200 python3 bench/gpu_harness/smallt_sweep.py --splits 0,1,2,4,8 \
    --cases 4:1:1024,4:8:1024,3:8:1024,4:1:4096,4:8:4096,4:32:4096 2>&1 | tee "$out/sweep_new.log"
fi
if [[ $mode == sweep ]]; then
  # Split-chooser data for $TQ_NEWT (PDL reduce on): time per forced split count, 4 warps, B x T grid; 8 warps
  # where choose_eight_warps may take them; then one ncu profile of B=32 T=1K (4-bit, auto plan).
  newt=build/${TQ_NEWT:-gpu_dmin}/libtq_kernels_harness.so
  export TQ_KERNELS_LIB=$newt
  c4=""
  for b in 1 2 4 8 16 32; do for t in 1024 2048 4096 8192 16384 32768; do c4+="4:$b:$t,"; done; done
  c4+="4:1:131072,4:4:131072,4:8:131072,3:8:1024,3:8:4096,3:8:32768,3:32:1024,3:32:4096,3:32:32768"
  timeout 400 python3 bench/gpu_harness/smallt_sweep.py --warps 4 --splits 0,1,2,3,4,6,8,12,16,24,32,48,64 \
    --cases "$c4" 2>&1 | tee "$out/sweep4.log"
  timeout 120 python3 bench/gpu_harness/smallt_sweep.py --warps 8 --splits 1,2,3,4 \
    --cases 4:16:1024,4:16:2048,4:16:4096,4:16:8192,4:32:1024,4:32:2048,4:32:4096,4:32:8192,3:32:4096 2>&1 \
    | tee "$out/sweep8.log"
  timeout 90 ncu --clock-control none -k regex:tq_attention_decode --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section SchedulerStats --section Occupancy \
    --section LaunchStats python3 bench/attention_gpu.py --profile 4:32:1024 >"$out/ncu_4_32_1024.txt" 2>&1
  echo "ncu rc=$?"
  grep -E "Duration|Throughput|Busy|Hit Rate|Eligible|Issued Warp|No Eligible|Active Warps|Occupancy|Block Limit|Registers|Bandwidth" \
    "$out/ncu_4_32_1024.txt" | awk '{$1=$1; print}' | head -40
fi
if [[ $mode == final ]]; then
  # Correctness of the full builds $TQ_FULL (space-separated names, default gpu_dfull), then A/B/A/B of the
  # minimal builds $TQ_BASE and $TQ_VARIANTS (space-separated, default gpu_dmin) with a Hadamard R (small, medium and
  # large T) and a dense R (T = 1K / 4K), then SDPA in the same call for the ratio table of the first variant.
  variants=${TQ_VARIANTS:-gpu_dmin}
  for full in ${TQ_FULL:-gpu_dfull}; do
    lib=build/$full/libtq_kernels_harness.so
    TQ_KERNELS_LIB=$lib timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py \
      tests/gpu/test_quantize_gpu.py --maxfail=20 --tb=short -rf >"$out/pytest_$full.log" 2>&1 &
    p1=$!
    for tool in memcheck racecheck; do
      TQ_KERNELS_LIB=$lib timeout 240 compute-sanitizer --tool $tool --print-limit 20 python3 tests/gpu/sanitize_cases.py \
        >"$out/${tool}_$full.log" 2>&1
      echo "$full compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/${tool}_$full.log" | tail -1)"
    done
    wait $p1; echo "$full pytest rc=$? $(tail -1 "$out/pytest_$full.log")"
  done
  small=4:1:1024,4:8:1024,4:32:1024,3:1:1024,3:8:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096,3:1:4096,3:8:4096,3:32:4096
  cases=$small,4:1:32768,4:1:131072,4:8:32768,4:32:32768,3:32:32768,3:8:131072
  for rot in hadamard dense; do
    rc=$cases
    [[ $rot == dense ]] && rc=$small
    for rep in 1 2; do
      for v in base $variants; do
        lib=build/$v/libtq_kernels_harness.so
        [[ $v == base ]] && lib=$base
        TQ_KERNELS_LIB=$lib timeout 150 python3 bench/attention_gpu.py --rotation $rot --cases "$rc" --skip-sdpa \
          >"$out/fin_${rot}_${v}_$rep.log" 2>&1
        echo "$rot $v run $rep: rc=$? rows $(grep -c ours "$out/fin_${rot}_${v}_$rep.log")"
      done
    done
    python3 - "$out" $rot base $variants <<'PY'
import re, sys, collections
out, rot, vs = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = collections.OrderedDict()
for v in vs:
    for rep in (1, 2):
        for line in open(f"{out}/fin_{rot}_{v}_{rep}.log"):
            m = re.match(r"bits=(\d) B=\s*(\d+) T=\s*(\d+): ours\s+([\d.]+)", line)
            if m:
                rows.setdefault(m.group(1, 2, 3), {}).setdefault(v, []).append(float(m.group(4)))
print(f"{rot} R: bits B T | " + " | ".join(vs) + "   (us, run1/run2)")
for k, r in rows.items():
    print(" ".join(k), "|", " | ".join("/".join(f"{x:.1f}" for x in r.get(v, [])) for v in vs))
PY
  done
  echo "== Hadamard R with SDPA, ${variants%% *}"
  TQ_KERNELS_LIB=build/${variants%% *}/libtq_kernels_harness.so timeout 200 python3 bench/attention_gpu.py \
    --cases "$small,4:32:32768" 2>&1 | tee "$out/sdpa.log" | tail -15
fi
