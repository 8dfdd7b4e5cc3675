#!/usr/bin/env bash
# Head dimensions 64 and 256 on the decode kernel (bench/NOTES.md "D = 256 and 2/3-bit V at D = 64"): one device
# call times bench/attention_gpu.py at model shapes for this build (with SDPA) and, when BASE names another
# harness library (e.g. HEAD before the change, built with smallt_build.sh), for it too (--skip-sdpa), in the
# same call (base first, then this build, per shape).
#   bash bench/gpu_harness/dims_device.sh PART [BASE_LIB]
#   PART: d256 (Gemma-2-2B 8/4/256 at 4 and 3 bits, all rows; Gemma-2-9B 16/8/256, --quick rows)
#         d64  (SmolLM2 9/3/64 and Llama-3.2-1B 32/8/64 at 3-bit and K4/V3; all rows)
# This build's library: TQ_KERNELS_LIB or build/gpu/libtq_kernels_harness.so.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
part=$1
base=${2:-}
case $part in
  d256) shapes=("8,4,256:" "16,8,256:--quick"); widths="4,3" ;;
  d64) shapes=("9,3,64:" "32,8,64:"); widths="3,4/3" ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
for entry in "${shapes[@]}"; do
  shape=${entry%%:*}
  extra=()
  [ -n "${entry#*:}" ] && extra=("${entry#*:}")
  if [ -n "$base" ]; then
    echo "== base ($base), shape $shape"
    TQ_KERNELS_LIB="$base" timeout 280 python3 bench/attention_gpu.py --skip-sdpa --shape "$shape" \
      --widths "$widths" "${extra[@]}" 2>&1 | tail -26
  fi
  echo "== this build, shape $shape"
  timeout 280 python3 bench/attention_gpu.py --shape "$shape" --widths "$widths" "${extra[@]}" 2>&1 | tail -26
done
