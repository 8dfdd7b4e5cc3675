#!/usr/bin/env bash
# Where the prefill split kernel's time goes (bench/NOTES.md "Prefill v3"): timing variants of the harness library
# with parts of the split kernel's tile loop removed (TQ_EXP_SPLIT_SKIP in attention.cu: 1 = no mask loads,
# 2 = no P V products, 4 = no Q K^T products; results are wrong, timing only). Links each variant with the other
# objects of a full harness build (smallt_build.sh NAME . full) and only the minimal decode instances.
#   here:   bash bench/gpu_harness/split_skip.sh build BASE_NAME        -> build/gpu_skip{1,2,4}/
#   device: bash bench/gpu_harness/split_skip.sh run BASE_NAME          (carry build/gpu_BASE_NAME and the three)
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=$1
base=build/gpu_$2
variants=(1 2 4)
if [[ $mode == build ]]; then
  flags=(-std=c++17 -O3 -Iplugins --expt-relaxed-constexpr -lineinfo -Xcompiler -fPIC,-fvisibility=hidden
    -gencode arch=compute_90a,code=sm_90a -DTQ_EXP_MINIMAL=1)
  pids=()
  for v in "${variants[@]}"; do
    out=build/gpu_skip$v
    mkdir -p "$out/obj"
    nvcc "${flags[@]}" -DTQ_EXP_SPLIT_SKIP="$v" -c plugins/kernels/attention.cu -o "$out/obj/attention.cu.o" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  others=()
  for o in "$base"/obj/*.o; do [[ $(basename "$o") == attention.cu.o ]] || others+=("$o"); done
  for v in "${variants[@]}"; do
    nvcc -shared -gencode arch=compute_90a,code=sm_90a -o "build/gpu_skip$v/libtq_kernels_harness.so" \
      "build/gpu_skip$v/obj/attention.cu.o" "${others[@]}" -lcudart_static
  done
  echo "built build/gpu_skip{1,2,4} against $base"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  nvidia-smi --query-gpu=name --format=csv,noheader
  for round in 1 2; do
    for lib in "$base" build/gpu_skip1 build/gpu_skip2 build/gpu_skip4; do
      echo "== round $round $lib"
      TQ_KERNELS_LIB="$lib/libtq_kernels_harness.so" timeout 120 python3 bench/prefill_gpu.py 2>&1 | tail -10
    done
  done
fi
