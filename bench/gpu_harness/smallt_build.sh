#!/usr/bin/env bash
# Harness library for the small-T decode work (bench/NOTES.md "small T"), built into its own folder so it never
# touches build/gpu:   bash bench/gpu_harness/smallt_build.sh NAME [SRC] [minimal|full]
#   NAME: output build/gpu_NAME/libtq_kernels_harness.so (git-ignored: name it in the device call's carry)
#   SRC:  source root holding plugins/ and bench/gpu_harness/ (default: this checkout; e.g. a `git archive HEAD`
#         copy for a baseline timed in the same device call)
#   minimal: only the fp32-mask, no-softcap decode instances (TQ_EXP_MINIMAL; timing only, what the benches use)
#   full:    every instance (tests, sanitizers). sm_90a only.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
name=$1
src="$(cd "${2:-$repo}" && pwd)"
mode=${3:-minimal}
out="$repo/build/gpu_$name"
mkdir -p "$out/obj"
flags=(-std=c++17 -O3 -I"$src/plugins" --expt-relaxed-constexpr -lineinfo -Xcompiler -fPIC,-fvisibility=hidden
  -gencode arch=compute_90a,code=sm_90a)
[[ $mode == minimal ]] && flags+=(-DTQ_EXP_MINIMAL=1)
# Extra nvcc flags for attention.cu only (timing variants, e.g. TQ_EXTRA_FLAGS=-DTQ_EXP_SKIP=8).
read -r -a extra <<<"${TQ_EXTRA_FLAGS:-}"
pids=()
nvcc "${flags[@]}" "${extra[@]}" -Xptxas -v -c "$src/plugins/kernels/attention.cu" -o "$out/obj/attention.cu.o" \
  2>"$out/ptxas_attention.log" &
pids+=($!)
for s in "$src/plugins/kernels/quantize.cu" "$src"/plugins/kernels/*.cc "$src/bench/gpu_harness/tq_capi.cc"; do
  o="$out/obj/$(basename "$s").o"
  if [[ ! -e $o || $s -nt $o ]]; then
    if [[ $s == *.cc ]]; then nvcc "${flags[@]}" -x cu -c "$s" -o "$o" & else nvcc "${flags[@]}" -c "$s" -o "$o" & fi
    pids+=($!)
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
nvcc -shared -gencode arch=compute_90a,code=sm_90a -o "$out/libtq_kernels_harness.so" "$out"/obj/*.o -lcudart_static
echo "built $out/libtq_kernels_harness.so ($mode, from $src)"
