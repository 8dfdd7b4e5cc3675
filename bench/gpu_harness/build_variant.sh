#!/usr/bin/env bash
# A timing variant of the harness library: attention.cu recompiled with extra nvcc flags, linked with the other
# objects of build/gpu (run plugins/kernels/build_standalone.sh first). Only the fp32-mask, no-softcap decode
# instances are built (TQ_EXP_MINIMAL), so a variant takes a fraction of the full build.
#   bash bench/gpu_harness/build_variant.sh NAME [nvcc flags...]   -> build/gpu_NAME/libtq_kernels_harness.so
# e.g. NAME=skip1 -DTQ_EXP_SKIP=1 (see attention_decode.cuh: the skip bits make results wrong; timing only).
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1
shift
out=build/gpu_$name
mkdir -p "$out/obj"
flags=(-std=c++17 -O3 -Iplugins --expt-relaxed-constexpr -lineinfo -Xcompiler -fPIC,-fvisibility=hidden
  -gencode arch=compute_90a,code=sm_90a -DTQ_EXP_MINIMAL=1 "$@")
nvcc "${flags[@]}" -c plugins/kernels/attention.cu -o "$out/obj/attention.cu.o"
others=()
for o in build/gpu/obj/*.o; do [[ $(basename "$o") == attention.cu.o ]] || others+=("$o"); done
nvcc -shared -gencode arch=compute_90a,code=sm_90a -o "$out/libtq_kernels_harness.so" "$out/obj/attention.cu.o" \
  "${others[@]}" -lcudart_static
echo "built $out/libtq_kernels_harness.so ($*)"
