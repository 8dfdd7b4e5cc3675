#!/usr/bin/env bash
# The q rotation ahead of the decode kernel (bench/NOTES.md "q rotation ahead"): the device calls of that change.
#   bash bench/gpu_harness/prerotate_device.sh check FULL_LIB BASE_LIB NEW_LIB
#       decode_check.sh: tests and sanitizers on FULL_LIB; decode outputs of BASE_LIB and NEW_LIB with the rotation
#       inside the decode kernel (TQ_PREROTATE=0: must be bit-identical) and with the launcher's choice (the
#       rotation kernel sums in another order: differences in the last bits); the table of NEW_LIB.
#   bash bench/gpu_harness/prerotate_device.sh ab BASE_LIB NEW_LIB [NEW_LIB@TQ_PREROTATE=N ...]
#       two interleaved rounds per shape (ab_shapes.sh): small and long T at issue 4's shape, D = 64, SmolLM2's,
#       D = 256.
# Libraries: smallt_build.sh NAME SRC full|minimal. Logs under $OUT.
set -uo pipefail
mode=$1
shift
case $mode in
  check) bash bench/gpu_harness/decode_check.sh "$@" TQ_PREROTATE=0 - ;;
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
