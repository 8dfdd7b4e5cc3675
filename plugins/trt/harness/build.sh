#!/usr/bin/env bash
# Builds libtqexport_trt.so and the plugin harness tq_trt_harness (plugins/trt/harness/CMakeLists.txt).
#   plugins/trt/harness/build.sh [BUILD_DIR] [CUDA_ARCHS]     (defaults: build/trt-harness, 90a)
# Prints the build folder: BUILD_DIR/tq_trt_harness and BUILD_DIR/lib/libtqexport_trt.so.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../../.." && pwd)"
build="${1:-$repo/build/trt-harness}"
archs="${2:-90a}"
extra=()
[[ -n "${TRT_INCLUDE_DIR:-}" ]] && extra+=("-DTRT_INCLUDE_DIR=$TRT_INCLUDE_DIR")
cmake -S "$repo/plugins/trt/harness" -B "$build" -DCMAKE_CUDA_ARCHITECTURES="$archs" -DCMAKE_BUILD_TYPE=Release \
  "${extra[@]}" >"$build.cmake.log" 2>&1 || { cat "$build.cmake.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target tq_trt_harness tqexport_trt >&2
echo "$build"
