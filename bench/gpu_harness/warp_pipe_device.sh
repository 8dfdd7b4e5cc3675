#!/usr/bin/env bash
# Warp-private stages (bench/NOTES.md "Warp-private stages"): the device calls of that change.
#   bash bench/gpu_harness/warp_pipe_device.sh check FULL_LIB BASE_LIB NEW_LIB
#       decode_check.sh: tests and sanitizers on FULL_LIB; decode outputs of BASE_LIB and NEW_LIB compared bit for
#       bit with the launcher's warps and with 8 warps forced; the table of NEW_LIB against SDPA.
#   bash bench/gpu_harness/warp_pipe_device.sh ab BASE_LIB NEW_LIB
#       two interleaved rounds per shape (ab_shapes.sh): issue 4's shape, D = 64, SmolLM2's, mixed widths, D = 256.
# Libraries: smallt_build.sh NAME SRC full|minimal. Logs under $OUT.
set -uo pipefail
mode=$1
shift
case $mode in
  check) bash bench/gpu_harness/decode_check.sh "$@" - TQ_DECODE_WARPS=8 ;;
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
