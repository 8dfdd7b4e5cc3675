#!/usr/bin/env bash
# Convert the exported graphs and stage what the device call carries: build/e2e/{lib,models} (graphs only,
# no weights: fill_weights.py writes them there). Needs build/e2e/src/{smol,llama8b} (export_models.py) and the
# CUDA build in build/e2e-cuda.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py=.venv/bin/python
src=build/e2e/src
models=build/e2e/models
rm -rf "$models" build/e2e/lib && mkdir -p "$models" build/e2e/lib
cp build/e2e-cuda/lib/libtqexport_ort.so build/e2e/lib/
convert() {  # name source args...
  local name=$1 source=$2
  shift 2
  mkdir -p "$src/$name"
  "$py" -m tqexport convert "$src/$source/model.onnx" -o "$src/$name/model.onnx" "$@" --json > "$src/$name/convert.json"
  mkdir -p "$models/$name" && cp "$src/$name/model.onnx" "$models/$name/"
}
for base in smol llama8b; do
  mkdir -p "$models/$base" && cp "$src/$base/model.onnx" "$src/$base/config.json" "$models/$base/"
done
convert smol-tq4 smol --preset 4
convert smol-tq4-w smol --preset 4 --sink-tokens 4 --recent-window 32
convert smol-tq4-buf smol --preset 4 --cache-mode buffer
convert smol-tq8 smol --preset 8
convert llama8b-tq4 llama8b --preset 4
convert llama8b-tq3 llama8b --preset 3
du -sh build/e2e/lib "$models"/*
