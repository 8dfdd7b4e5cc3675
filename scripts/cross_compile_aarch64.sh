#!/usr/bin/env bash
# Cross-compile check of the host C++ code for aarch64 (Jetson Orin / Thor, issue 5): every host source that
# the CMake build compiles is compiled (-c, C++17, no link) with Debian's aarch64-linux-gnu-g++, one g++
# process per file, with the build's warning flags. Nothing is linked and nothing runs: this catches
# x86-only includes, intrinsics and type assumptions, not aarch64 runtime behaviour.
#
# Sources (the same globs as plugins/CMakeLists.txt):
#   plugins/cpu/*.cc      all of them: the build globs the folder, so attention_chunk_avx2.cc is compiled on
#                         aarch64 too and must reduce to an empty unit there
#   plugins/ort/*.cc      CPU ops always; cuda_ops.cc (and library.cc a second time) with the CUDA defines
#   plugins/kernels/*.cc  host-side C++ of the CUDA kernel library (needs CUDA headers)
#   plugins/trt/**.cpp    TensorRT plugin library (needs CUDA and TensorRT headers); harness/ is not built
# Headers: ORT from scripts/fetch_ort_headers.sh, TensorRT from scripts/fetch_trt_headers.sh (or
# ORT_INCLUDE_DIR / TRT_INCLUDE_DIR), CUDA from $CUDA_INCLUDE_DIR (default /usr/local/cuda/include, the x86
# toolkit's headers, which are architecture-neutral for host code). Files whose headers are missing are
# reported as "skipped" and do not fail the check.
#
# After compiling, the aarch64 objects of plugins/cpu must not reference any AVX2 symbol (the runtime
# dispatch in attention_cpu.cc is compiled out there).
#
# Usage: scripts/cross_compile_aarch64.sh [--no-install]
#   Installs g++-aarch64-linux-gnu with apt-get when missing (as root), unless --no-install.
# Env: TQ_CROSS_OPT (default -O2), TQ_CROSS_OUT (object folder, default a temporary one), CXX_AARCH64.
# Exit: 0 all compiled files ok, 1 some file failed, 77 no aarch64 compiler and none could be installed.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
plugins="$repo/plugins"
cxx="${CXX_AARCH64:-aarch64-linux-gnu-g++}"
nm_tool="${cxx%g++}nm"
opt="${TQ_CROSS_OPT:--O2}"
install=1
[[ "${1:-}" == "--no-install" ]] && install=0

# ------------------------------------------------------------------ compiler
if ! command -v "$cxx" >/dev/null; then
  if [[ $install -eq 1 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "cross: installing g++-aarch64-linux-gnu (apt-get)" >&2
    if ! { apt-get install -y -qq g++-aarch64-linux-gnu >&2 ||
           { apt-get update -qq >&2 && apt-get install -y -qq g++-aarch64-linux-gnu >&2; }; }; then
      echo "cross: apt-get install g++-aarch64-linux-gnu failed" >&2
      exit 77
    fi
  fi
fi
if ! command -v "$cxx" >/dev/null; then
  echo "cross: $cxx not found and not installable here (needs root and apt-get: apt-get install g++-aarch64-linux-gnu)" >&2
  exit 77
fi
echo "cross: $("$cxx" --version | head -n1), flags -std=c++17 $opt"

# ------------------------------------------------------------------ headers
last_line() { tail -n1; }
ort_inc="${ORT_INCLUDE_DIR:-}"
if [[ -z "$ort_inc" ]]; then
  ort_inc="$(bash "$repo/scripts/fetch_ort_headers.sh" 2>/tmp/cross_ort_fetch.$$ | last_line)" || ort_inc=""
  [[ -n "$ort_inc" ]] || echo "cross: ORT headers unavailable: $(tail -n1 /tmp/cross_ort_fetch.$$)" >&2
  rm -f /tmp/cross_ort_fetch.$$
fi
[[ -f "$ort_inc/onnxruntime_cxx_api.h" ]] || ort_inc=""
trt_inc="${TRT_INCLUDE_DIR:-}"
if [[ -z "$trt_inc" ]]; then
  trt_inc="$(bash "$repo/scripts/fetch_trt_headers.sh" 2>/tmp/cross_trt_fetch.$$ | last_line)" || trt_inc=""
  [[ -n "$trt_inc" ]] || echo "cross: TensorRT headers unavailable: $(tail -n1 /tmp/cross_trt_fetch.$$)" >&2
  rm -f /tmp/cross_trt_fetch.$$
fi
[[ -f "$trt_inc/NvInferRuntime.h" ]] || trt_inc=""
cuda_inc="${CUDA_INCLUDE_DIR:-/usr/local/cuda/include}"
[[ -f "$cuda_inc/cuda_runtime.h" ]] || cuda_inc=""
echo "cross: ORT headers ${ort_inc:-MISSING}; TensorRT headers ${trt_inc:-MISSING}; CUDA headers ${cuda_inc:-MISSING}"

out="${TQ_CROSS_OUT:-}"
if [[ -z "$out" ]]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

# Same warning set as TQ_CXX_FLAGS in plugins/CMakeLists.txt, plus what the targets add (PIC, hidden).
base=(-std=c++17 "$opt" -fPIC -fvisibility=hidden -fvisibility-inlines-hidden
      -Wall -Wextra -Wno-unused-parameter -ffp-contract=off -I "$plugins")
n_ok=0 n_failed=0 n_skipped=0

# compile <label> <source relative to plugins/> [extra flags...]
compile() {
  local label="$1" rel="$2"
  shift 2
  local obj="$out/${label//\//_}.o" log="$out/${label//\//_}.log"
  if "$cxx" "${base[@]}" "$@" -c "$plugins/$rel" -o "$obj" >"$log" 2>&1; then
    local warnings
    warnings="$(grep -c 'warning:' "$log")"
    if [[ "$warnings" -gt 0 ]]; then
      echo "ok       $label ($warnings warnings: $(grep -m1 'warning:' "$log"))"
    else
      echo "ok       $label"
    fi
    n_ok=$((n_ok + 1))
  else
    echo "FAILED   $label: $(grep -m1 -E 'error' "$log" || head -n1 "$log")"
    n_failed=$((n_failed + 1))
  fi
}
skip() {
  echo "skipped  $1: $2"
  n_skipped=$((n_skipped + 1))
}

cd "$plugins" || exit 1

# plugins/cpu: every .cc/.cpp, as tq_collect_sources globs them.
mapfile -t cpu_sources < <(find cpu -name '*.cc' -o -name '*.cpp' | sort)
for src in "${cpu_sources[@]}"; do
  compile "$src" "$src"
done

# plugins/kernels: host C++ of the CUDA kernel library.
mapfile -t kernel_sources < <(find kernels -name '*.cc' -o -name '*.cpp' | sort)
for src in "${kernel_sources[@]}"; do
  if [[ -n "$cuda_inc" ]]; then compile "$src" "$src" -isystem "$cuda_inc"; else skip "$src" "no CUDA headers"; fi
done

# plugins/ort: the CPU-only library (pip install default) and, with CUDA headers, the CUDA build's units.
mapfile -t ort_sources < <(find ort -name '*.cc' ! -name cuda_ops.cc | sort)
for src in "${ort_sources[@]}"; do
  if [[ -n "$ort_inc" ]]; then
    compile "$src" "$src" -isystem "$ort_inc" -DTQ_HAVE_CPU_OPS=1
  else
    skip "$src" "no ORT headers"
  fi
done
cuda_defs=(-DTQ_HAVE_CPU_OPS=1 -DTQ_HAVE_CUDA_OPS=1 -DTQ_HAVE_CUDA_KERNELS=1)
for src in ort/library.cc ort/cuda_ops.cc; do
  label="$src[cuda]"
  if [[ -z "$ort_inc" ]]; then
    skip "$label" "no ORT headers"
  elif [[ -z "$cuda_inc" ]]; then
    skip "$label" "no CUDA headers"
  else
    compile "$label" "$src" -isystem "$ort_inc" -isystem "$cuda_inc" "${cuda_defs[@]}"
  fi
done

# plugins/trt: the globs of the tqexport_trt target (*.cpp *.cc, recursive); the harness is not part of it.
mapfile -t trt_sources < <(find trt \( -name '*.cpp' -o -name '*.cc' \) ! -path 'trt/harness/*' | sort)
for src in "${trt_sources[@]}"; do
  if [[ -z "$trt_inc" ]]; then
    skip "$src" "no TensorRT headers"
  elif [[ -z "$cuda_inc" ]]; then
    skip "$src" "no CUDA headers"
  else
    compile "$src" "$src" -isystem "$trt_inc" -isystem "$cuda_inc"
  fi
done

# The aarch64 CPU objects must not reference the AVX2 kernel (the dispatch must be compiled out).
if command -v "$nm_tool" >/dev/null; then
  avx_refs=""
  for obj in "$out"/cpu_*.o; do
    [[ -f "$obj" ]] || continue
    refs="$("$nm_tool" -C "$obj" | grep -i -E 'avx2|f16c' || true)"
    [[ -n "$refs" ]] && avx_refs+="$(basename "$obj"): ${refs//$'\n'/; } "
  done
  if [[ -n "$avx_refs" ]]; then
    echo "FAILED   AVX2 symbols in aarch64 objects: $avx_refs"
    n_failed=$((n_failed + 1))
  else
    echo "ok       no AVX2 symbol defined or referenced by the aarch64 plugins/cpu objects"
  fi
else
  echo "skipped  AVX2 symbol check: $nm_tool not found"
fi

echo "cross: $n_ok ok, $n_failed failed, $n_skipped skipped"
[[ $n_failed -eq 0 ]]
