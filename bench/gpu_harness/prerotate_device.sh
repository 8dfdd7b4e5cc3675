#!/usr/bin/env bash
# The q rotation ahead of the decode kernel (bench/NOTES.md "q rotation ahead"): the device calls of that change.
#   bash bench/gpu_harness/prerotate_device.sh check FULL_LIB BASE_LIB NEW_LIB
#       kernel + quantize GPU tests and compute-sanitizer on FULL_LIB (kernel_checks.sh); decode outputs of
#       BASE_LIB against NEW_LIB with the rotation inside the decode kernel (TQ_PREROTATE=0: must be bit-identical)
#       and with the launcher's choice (the rotation kernel sums in another order: differences in the last bits);
#       the table of NEW_LIB against SDPA.
#   bash bench/gpu_harness/prerotate_device.sh ab BASE_LIB NEW_LIB [NEW_LIB@TQ_PREROTATE=N ...]
#       two interleaved rounds per shape (ab_shapes.sh): small and long T at issue 4's shape, D = 64, SmolLM2's,
#       D = 256.
# Libraries: smallt_build.sh NAME SRC full|minimal. Logs under $OUT.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
mode=$1
shift
case $mode in
  check)
    full=$1 base=$2 new=$3
    nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
    rc=0
    bash bench/gpu_harness/kernel_checks.sh "$full" "$out" || rc=1
    TQ_KERNELS_LIB="$base" python3 bench/gpu_harness/decode_outputs.py "$out/base.npz" >/dev/null
    for knob in 0 auto; do
      env=()
      [ "$knob" = 0 ] && env=(TQ_PREROTATE=0)
      env "${env[@]}" TQ_KERNELS_LIB="$new" python3 bench/gpu_harness/decode_outputs.py "$out/new_$knob.npz" >/dev/null
      echo "== decode outputs, base vs new, TQ_PREROTATE=$knob"
      python3 bench/gpu_harness/decode_outputs.py --compare "$out/base.npz" "$out/new_$knob.npz"
    done
    rm -f "$out"/*.npz
    echo "== new with SDPA"
    TQ_KERNELS_LIB="$new" timeout 200 python3 bench/attention_gpu.py 2>&1 | tee "$out/table.log" | tail -27
    echo "prerotate_device check: tests and sanitizers rc=$rc"
    exit "$rc"
    ;;
  ab)
    small="4:1:1024,4:8:1024,4:32:1024,3:1:1024,3:8:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096,4:1:32768"
    small+=",4:1:131072,3:1:131072,3:1:32768"
    long="4:8:32768,4:32:32768,3:32:32768,4:8:131072,3:8:131072,4:32:131072"
    bash bench/gpu_harness/ab_shapes.sh "--cases $small;--cases $long;--shape 32,8,64 --cases \
4:1:1024,4:8:1024,4:32:1024,4:1:32768,4:32:32768;--shape 9,3,64 --cases 4:1:1024,4:8:1024,4:32:1024,4:32:32768;\
--shape 16,8,256 --cases 4:1:1024,4:8:1024,4:32:1024,4:1:32768,4:32:32768" "$@"
    ;;
  *)
    echo "usage: prerotate_device.sh check FULL BASE NEW | ab BASE NEW..." >&2
    exit 2
    ;;
esac
