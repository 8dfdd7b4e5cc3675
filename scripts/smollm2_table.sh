#!/usr/bin/env bash
# The README table "Results on SmolLM2" (presets 2.5/3/3.5/4 bits, QJL off/on). Runs scripts/main.sh's setup,
# export and text steps first when their outputs are missing. Extra arguments go to scripts/smollm2_table.py,
# e.g. `bash scripts/smollm2_table.sh --presets 3 4 --qjl off`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${TQ_OUT:-out}"
bash scripts/setup.sh
if [[ ! -f "$out/smollm2/model.onnx" || ! -f "$out/text/emma.txt" ]]; then
  bash scripts/setup_export.sh
  bash graphs/smollm2/install.sh
  HF_HUB_OFFLINE=1 .venv-export/bin/python -m graphs.smollm2.export --out "$out/smollm2"
  .venv-export/bin/python -m graphs.text.fetch --out "$out/text/emma.txt"
fi
.venv/bin/python scripts/smollm2_table.py --model "$out/smollm2/model.onnx" --text "$out/text/emma.txt" \
  --out "$out/table" "$@"
