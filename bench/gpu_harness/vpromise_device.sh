#!/usr/bin/env bash
# Promised Hadamard R_v and quantize rotation (bench/NOTES.md "Promised R_v and quantize R"): the device calls.
#   bash bench/gpu_harness/vpromise_device.sh probe BASE_LIB NEW_LIB
#       the promise tests on NEW_LIB (R_k, R_v, quantize; a minimal build runs them), bench/quantize_gpu.py on
#       NEW_LIB (checked vs promised columns in one run), then decode timing of BASE_LIB, NEW_LIB (the bench
#       promises the Hadamard R_k and R_v it builds) and NEW_LIB with the R_v promise ignored
#       (TQ_V_HADAMARD=0), two interleaved rounds (ab_shapes.sh).
#   bash bench/gpu_harness/vpromise_device.sh check FULL_LIB BASE_LIB NEW_LIB
#       decode_check.sh: tests and sanitizers on FULL_LIB; decode outputs of BASE_LIB and NEW_LIB without a
#       promise (bit-identical); the table of NEW_LIB (promised).
# Libraries: smallt_build.sh NAME SRC full|minimal. Logs under $OUT.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
mode=$1
shift
case $mode in
  probe)
    TQ_KERNELS_LIB="$2" timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_kernels_gpu.py \
      -k "promised_hadamard" --tb=short -rf 2>&1 | tee "$out/pytest_probe.log" | tail -6
    TQ_KERNELS_LIB="$2" timeout 200 python3 bench/quantize_gpu.py 2>&1 | tee "$out/quantize.log" | tail -14
    small="4:1:1024,4:8:1024,4:32:1024,3:1:1024,3:8:1024,3:32:1024,4:1:4096,4:8:4096,4:32:4096,4:1:32768,4:8:32768"
    bash bench/gpu_harness/ab_shapes.sh "--cases $small;--shape 9,3,64 --cases 4:1:1024,4:8:1024,4:32:1024;\
--shape 16,8,256 --cases 4:1:1024,4:8:1024,4:32:1024" "$1" "$2" "$2@TQ_V_HADAMARD=0"
    ;;
  check) bash bench/gpu_harness/decode_check.sh "$@" - ;;
  *)
    echo "usage: vpromise_device.sh probe BASE NEW | check FULL BASE NEW" >&2
    exit 2
    ;;
esac
