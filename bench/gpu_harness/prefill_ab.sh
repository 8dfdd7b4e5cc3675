#!/usr/bin/env bash
# A/B of prefill-chunk builds in one device call (bench/NOTES.md "Prefill v2"): bench/prefill_gpu.py for BASE_LIB
# and NEW_LIB (and NEW_LIB with TQ_SPLIT_FUSE=0), interleaved twice, at Hq/Hkv/D 32/8/128 and 16/8/256.
#   bash bench/gpu_harness/prefill_ab.sh NEW_LIB BASE_LIB
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
new=$1
base=$2
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
for shape in 32,8,128 16,8,256; do
  for round in 1 2; do
    echo "== $shape round $round: base $base"
    TQ_KERNELS_LIB="$base" timeout 200 python3 bench/prefill_gpu.py --shape "$shape" 2>&1 | tail -7
    echo "== $shape round $round: new $new"
    TQ_KERNELS_LIB="$new" timeout 200 python3 bench/prefill_gpu.py --shape "$shape" 2>&1 | tail -7
    echo "== $shape round $round: new, TQ_SPLIT_FUSE=0"
    TQ_SPLIT_FUSE=0 TQ_KERNELS_LIB="$new" timeout 200 python3 bench/prefill_gpu.py --shape "$shape" 2>&1 | tail -7
  done
done
