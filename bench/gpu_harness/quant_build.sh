#!/usr/bin/env bash
# Harness library with a quantize.cu (default: the working tree's) and the other objects of an existing build
# (default build/gpu_qbase, e.g. HEAD's objects built from `git archive HEAD plugins`), so iterating on the
# quantize kernel does not rebuild attention.cu (~3.5 min on 2 cores).
#   bash bench/gpu_harness/quant_build.sh [OUT=build/gpu_q] [BASE=build/gpu_qbase] [SRC=. (a tree with plugins/)]
# SRC lets a variant (e.g. a sed-edited copy of plugins/ under /tmp) build next to the working tree's version.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-build/gpu_q}
base=${2:-build/gpu_qbase}
src=${3:-.}
mkdir -p "$out/obj"
flags=(-std=c++17 -O3 -I"$src/plugins" --expt-relaxed-constexpr -lineinfo -Xcompiler -fPIC,-fvisibility=hidden
  -gencode arch=compute_90a,code=sm_90a)
nvcc "${flags[@]}" -Xptxas -v -c "$src/plugins/kernels/quantize.cu" -o "$out/obj/quantize.cu.o" 2>"$out/ptxas.log"
grep -A2 "Function properties for.*wht" "$out/ptxas.log" | grep -E "stack|Used" || true
others=()
for o in "$base"/obj/*.o; do [[ $(basename "$o") == quantize.cu.o ]] || others+=("$o"); done
nvcc -shared -gencode arch=compute_90a,code=sm_90a -o "$out/libtq_kernels_harness.so" "$out/obj/quantize.cu.o" \
  "${others[@]}" -lcudart_static
echo "built $out/libtq_kernels_harness.so"
