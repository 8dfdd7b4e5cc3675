#!/usr/bin/env bash
# H100 / H200 (x86-64, SM 9.0): build the plugin library, build the engine, smoke-run it.
# UNVERIFIED end to end (no TensorRT in tqexport's CI); see deploy/README.md.
#   deploy/h100.sh model.onnx [model.plan] [max_batch] [max_context]
# Needs: CUDA 12.x/13.x with nvcc, CMake >= 3.24, TensorRT 10.x (TENSORRT_ROOT, default /usr: the tensorrt-dev
# packages), trtexec on PATH or in $TENSORRT_ROOT/bin, and `pip install -e .` for the tqexport CLI.
set -euo pipefail
model="${1:?usage: deploy/h100.sh model.onnx [model.plan] [max_batch] [max_context]}"
plan="${2:-${model%.onnx}.plan}"
max_batch="${3:-1}"
max_context="${4:-4096}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
trt_root="${TENSORRT_ROOT:-/usr}"
export PATH="$trt_root/bin:$PATH"

cmake -S "$repo/plugins" -B "$repo/build/trt-h100" -DTQ_WITH_TRT=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DTENSORRT_ROOT="$trt_root" -DCMAKE_BUILD_TYPE=Release
cmake --build "$repo/build/trt-h100" -j"$(nproc)" --target tqexport_trt
lib="$repo/build/trt-h100/lib/libtqexport_trt.so"

# Build with the tensorrt Python module if present; otherwise run the trtexec line tqexport prints.
set +e
line="$(tqexport build "$model" --target h100 -o "$plan" --max-batch "$max_batch" --max-context "$max_context" \
  --plugin-lib "$lib")"
rc=$?
set -e
if [[ $rc -eq 7 ]]; then
  echo "tensorrt Python module missing: building with trtexec" >&2
  eval "$line"
elif [[ $rc -ne 0 ]]; then
  exit $rc
fi

# Smoke run at the profile's opt shapes (random inputs; buffer-mode models need real past_lengths to be
# meaningful, so this only proves the engine deserializes and its plugins enqueue).
opt="$(tqexport build "$model" --target h100 -o "$plan" --max-batch "$max_batch" --max-context "$max_context" \
  --plugin-lib "$lib" --print-trtexec | tr ' ' '\n' | sed -n 's/^--optShapes=//p')"
trtexec --loadEngine="$plan" --staticPlugins="$lib" ${opt:+--shapes="$opt"} --iterations=10 --warmUp=100
