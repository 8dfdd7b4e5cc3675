#!/usr/bin/env bash
# Standalone build of the CUDA kernels plus the ctypes harness library, for iterating without CMake:
#   bash plugins/kernels/build_standalone.sh [arch...]     (default: 90a; full build: 87 90a 110)
# Output: build/gpu/libtq_kernels_harness.so (git-ignored; carry it to the device machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
archs=("${@:-90a}")
gencode=()
for a in "${archs[@]}"; do gencode+=(-gencode "arch=compute_${a},code=sm_${a}"); done
out=build/gpu
mkdir -p "$out/obj"
flags=(-std=c++17 -O3 -Iplugins --expt-relaxed-constexpr -lineinfo -Xcompiler -fPIC,-fvisibility=hidden)
pids=()
for src in plugins/kernels/*.cu; do
  nvcc "${flags[@]}" "${gencode[@]}" -c "$src" -o "$out/obj/$(basename "$src").o" &
  pids+=($!)
done
for src in plugins/kernels/*.cc bench/gpu_harness/tq_capi.cc; do
  nvcc "${flags[@]}" -x cu -c "$src" -o "$out/obj/$(basename "$src").o" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
nvcc -shared "${gencode[@]}" -o "$out/libtq_kernels_harness.so" "$out"/obj/*.o -lcudart_static
echo "built $out/libtq_kernels_harness.so"
