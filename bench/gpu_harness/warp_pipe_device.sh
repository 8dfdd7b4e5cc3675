#!/usr/bin/env bash
# Warp-private stages (bench/NOTES.md "Warp-private stages"): the device calls of that change.
#   bash bench/gpu_harness/warp_pipe_device.sh check FULL_LIB BASE_LIB NEW_LIB
#       kernel + quantize GPU tests and compute-sanitizer on FULL_LIB (kernel_checks.sh); decode outputs of
#       BASE_LIB and NEW_LIB compared bit for bit (decode_outputs.py; launcher's warps and 8 warps forced); the
#       issue's table of NEW_LIB against SDPA.
#   bash bench/gpu_harness/warp_pipe_device.sh ab BASE_LIB NEW_LIB
#       two interleaved rounds per shape (ab_shapes.sh): issue 4's shape, D = 64, SmolLM2's, mixed widths, D = 256.
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
    for warps in auto 8; do
      env=()
      [ "$warps" = 8 ] && env=(TQ_DECODE_WARPS=8)
      env "${env[@]}" TQ_KERNELS_LIB="$base" python3 bench/gpu_harness/decode_outputs.py "$out/base_$warps.npz" >/dev/null
      env "${env[@]}" TQ_KERNELS_LIB="$new" python3 bench/gpu_harness/decode_outputs.py "$out/new_$warps.npz" >/dev/null
      echo "== decode outputs, base vs new, warps $warps"
      python3 bench/gpu_harness/decode_outputs.py --compare "$out/base_$warps.npz" "$out/new_$warps.npz"
    done
    rm -f "$out"/*.npz
    echo "== new with SDPA"
    TQ_KERNELS_LIB="$new" timeout 200 python3 bench/attention_gpu.py 2>&1 | tee "$out/table.log" | tail -27
    echo "warp_pipe_device check: tests and sanitizers rc=$rc"
    exit "$rc"
    ;;
  ab)
    bash bench/gpu_harness/ab_shapes.sh \
      ";--quick --shape 32,8,64;--quick --shape 9,3,64;--quick --widths 4/3,3/4;--quick --shape 16,8,256 --widths 4,3,3/4" \
      "$@"
    ;;
  *)
    echo "usage: warp_pipe_device.sh check FULL BASE NEW | ab BASE NEW" >&2
    exit 2
    ;;
esac
