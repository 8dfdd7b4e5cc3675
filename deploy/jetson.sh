#!/usr/bin/env bash
# Jetson AGX Orin (SM 8.7, JetPack 6) or Jetson Thor (SM 11.0, JetPack 7): build the plugin library ON the
# device, build the engine with trtexec (JetPack ships trtexec at /usr/src/tensorrt/bin), smoke-run it.
# UNVERIFIED end to end (no Jetson or TensorRT in tqexport's CI); see deploy/README.md.
#   deploy/jetson.sh orin|thor model.onnx [model.plan] [max_batch] [max_context]
# Needs: JetPack's CUDA (nvcc at /usr/local/cuda/bin), TensorRT headers (/usr/include/aarch64-linux-gnu),
# CMake >= 3.24 (pip install cmake if the distro's is older), Python 3.11+ for the tqexport CLI.
set -euo pipefail
target="${1:?usage: deploy/jetson.sh orin|thor model.onnx [model.plan] [max_batch] [max_context]}"
model="${2:?model.onnx}"
plan="${3:-${model%.onnx}.$target.plan}"
max_batch="${4:-1}"
max_context="${5:-4096}"
case "$target" in
  orin) arch=87 ;;
  thor) arch=110 ;;  # needs CUDA 13 (JetPack 7): nvcc of CUDA 12.x has no sm_110
  *) echo "target must be orin or thor" >&2; exit 2 ;;
esac
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="/usr/local/cuda/bin:/usr/src/tensorrt/bin:$PATH"

cmake -S "$repo/plugins" -B "$repo/build/trt-$target" -DTQ_WITH_TRT=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DCMAKE_BUILD_TYPE=Release ${TENSORRT_ROOT:+-DTENSORRT_ROOT="$TENSORRT_ROOT"}
cmake --build "$repo/build/trt-$target" -j"$(nproc)" --target tqexport_trt
lib="$repo/build/trt-$target/lib/libtqexport_trt.so"

# JetPack's TensorRT Python bindings may be present; the trtexec path works either way.
line="$(tqexport build "$model" --target "$target" -o "$plan" --max-batch "$max_batch" \
  --max-context "$max_context" --plugin-lib "$lib" --print-trtexec)"
echo "$line" >&2
eval "$line --memPoolSize=workspace:1024M"
opt="$(echo "$line" | tr ' ' '\n' | sed -n 's/^--optShapes=//p')"
trtexec --loadEngine="$plan" --staticPlugins="$lib" ${opt:+--shapes="$opt"} --iterations=10 --warmUp=100
