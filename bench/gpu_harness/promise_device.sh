#!/usr/bin/env bash
# A promised Hadamard R_k (bench/NOTES.md "Promised Hadamard R_k"): the device calls of that change.
#   bash bench/gpu_harness/promise_device.sh probe BASE_LIB NEW_LIB
#       the promise and q rotation tests on NEW_LIB (a minimal build runs them: fp32 masks, no soft-cap), then
#       small-T timing of BASE_LIB, NEW_LIB (the bench promises the Hadamard R_k it builds) and NEW_LIB with the
#       promise ignored (TQ_Q_HADAMARD=0), two interleaved rounds (ab_shapes.sh).
#   bash bench/gpu_harness/promise_device.sh check FULL_LIB BASE_LIB NEW_LIB
#       decode_check.sh: tests and sanitizers on FULL_LIB; decode outputs of BASE_LIB and NEW_LIB without a
#       promise (bit-identical: the promise is the only new path); the table of NEW_LIB (promised).
#   bash bench/gpu_harness/promise_device.sh ab BASE_LIB NEW_LIB...
#       prerotate_device.sh's shapes: small and long T at issue 4's shape, D = 64, SmolLM2's, D = 256.
#   bash bench/gpu_harness/promise_device.sh vprobe BASE_LIB NEW_LIB      (bench/NOTES.md "Promised R_v and
#       quantize R") every promise test on NEW_LIB (R_k, R_v, quantize), bench/quantize_gpu.py on NEW_LIB (checked
#       vs promised columns), then decode timing of BASE_LIB, NEW_LIB (R_k and R_v promised) and NEW_LIB with the
#       R_v promise ignored (TQ_V_HADAMARD=0), two interleaved rounds (ab_shapes.sh).
# Libraries: smallt_build.sh NAME SRC full|minimal. Logs under $OUT.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
mode=$1
shift
case $mode in
  probe)
    TQ_KERNELS_LIB="$2" timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py \
      -k "promised_hadamard or prerotated" --tb=short -rf 2>&1 | tee "$out/pytest_probe.log" | tail -6
    small="4:1:1024,4:8:1024,4:32:1024,3:1:1024,3:8:1024,3:32:1024,4:1:4096,4:8:4096,4:1:32768,4:8:32768"
    bash bench/gpu_harness/ab_shapes.sh "--cases $small;--shape 9,3,64 --cases 4:1:1024,4:8:1024,4:32:1024;\
--shape 16,8,256 --cases 4:1:1024,4:8:1024,4:1:32768" "$1" "$2" "$2@TQ_Q_HADAMARD=0"
    ;;
  vprobe)
    TQ_KERNELS_LIB="$2" timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py \
      -k "promised_hadamard" --tb=short -rf 2>&1 | tee "$out/pytest_probe.log" | tail -6
    TQ_KERNELS_LIB="$2" timeout 200 python3 bench/quantize_gpu.py 2>&1 | tee "$out/quantize.log" | tail -14
    small="4:1:1024,4:8:1024,4:32:1024,3:1:1024,3:8:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096,4:1:32768,4:8:32768"
    bash bench/gpu_harness/ab_shapes.sh "--cases $small;--shape 9,3,64 --cases 4:1:1024,4:8:1024,4:32:1024;\
--shape 16,8,256 --cases 4:1:1024,4:8:1024,4:32:1024" "$1" "$2" "$2@TQ_V_HADAMARD=0"
    ;;
  check) bash bench/gpu_harness/decode_check.sh "$@" - ;;
  ab) bash bench/gpu_harness/prerotate_device.sh ab "$@" ;;
  *)
    echo "usage: promise_device.sh probe BASE NEW | vprobe BASE NEW | check FULL BASE NEW | ab BASE NEW..." >&2
    exit 2
    ;;
esac
