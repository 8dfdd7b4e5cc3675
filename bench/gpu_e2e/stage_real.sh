#!/usr/bin/env bash
# Stage the real SmolLM2 (out/smollm2, scripts/main.sh) for the device: convert it (4-bit; 4-bit with
# --sink-tokens 4 --recent-window 32), copy the graphs without weights into build/e2e-real/models, write the
# test's token ids, and pack the weights losslessly into build/e2e-real/packNN (pack_real_weights.py, which
# also prints the device calls: build/e2e-real/calls.md). Needs the CUDA library build/e2e/lib (stage.sh) and
# the onnxruntime-gpu wheel parts in .device/ortgpu-e2e (bench/gpu_e2e/README.md), whose sizes set the plan.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py=.venv/bin/python
source_model=out/smollm2/model.onnx
src=build/e2e-real/src
models=build/e2e-real/models
[ -f "$source_model" ] || { echo "stage_real: $source_model missing (bash scripts/main.sh exports it)"; exit 1; }
[ -f build/e2e/lib/libtqexport_ort.so ] || echo "stage_real: warning: build/e2e/lib/libtqexport_ort.so missing (stage.sh)"
rm -rf "$models" && mkdir -p "$models/smollm2" "$src"
cp "$source_model" out/smollm2/config.json "$models/smollm2/"
convert() {  # name args...
  local name=$1
  shift
  mkdir -p "$src/$name" "$models/$name"
  "$py" -m tqexport convert "$source_model" -o "$src/$name/model.onnx" "$@" --json > "$src/$name/convert.json"
  cp "$src/$name/model.onnx" "$models/$name/"
  rm -f "$src/$name/model.onnx.data"  # a copy of out/smollm2's; the pack checks the graph still points into it
}
convert smollm2-tq4 --preset 4
convert smollm2-tq4-w --preset 4 --sink-tokens 4 --recent-window 32
"$py" -m bench.gpu_e2e.text_ids out/smollm2/tokenizer.json "$models/ids.npy"
"$py" -m bench.gpu_e2e.pack_real_weights "$source_model" \
  --converted "$models/smollm2-tq4/model.onnx" "$models/smollm2-tq4-w/model.onnx"
du -sh "$models"/* build/e2e-real/pack*
