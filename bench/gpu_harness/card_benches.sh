#!/usr/bin/env bash
# The issue-4 benchmarks on whatever card the device call got, for one timing build (smallt_build.sh NAME SRC
# minimal), and the prefill chunks of a second build beside it when one is given (an A/B in the same call).
# Tables print last; logs under $OUT.
#   bash bench/gpu_harness/card_benches.sh LIB [BASE_LIB]
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
lib=$1
base=${2:-}
out="${OUT:-/tmp/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
TQ_KERNELS_LIB="$lib" timeout 150 python3 bench/quantize_gpu.py >"$out/quantize_gpu.log" 2>&1
TQ_KERNELS_LIB="$lib" timeout 240 python3 bench/attention_gpu.py >"$out/attention_gpu.log" 2>&1
if [ -n "$base" ]; then
  for round in 1 2; do
    for name in base new; do
      l=$lib
      [ "$name" = base ] && l=$base
      TQ_KERNELS_LIB="$l" timeout 90 python3 bench/prefill_gpu.py >"$out/prefill_${name}_$round.log" 2>&1
    done
  done
else
  TQ_KERNELS_LIB="$lib" timeout 90 python3 bench/prefill_gpu.py >"$out/prefill_new_1.log" 2>&1
fi
tail -14 "$out/quantize_gpu.log"
tail -32 "$out/attention_gpu.log"
for f in "$out"/prefill_*.log; do
  echo "== $(basename "$f")"
  tail -14 "$f"
done
