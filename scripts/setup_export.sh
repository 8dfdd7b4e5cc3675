#!/usr/bin/env bash
# Create .venv-export with the pinned export toolchain (torch CPU, transformers 4.57,
# optimum-onnx, onnx, onnxruntime, onnxscript, gguf, rdata). Idempotent: when the venv
# already holds exactly graphs/requirements-export.txt it returns at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TQ_EXPORT_VENV:-$root/.venv-export}"
req="$root/graphs/requirements-export.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup_export: $venv is up to date"
  exit 0
fi

python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$req"
"$venv/bin/python" - <<'PY'
import onnx, onnxruntime, onnxscript, optimum.exporters.onnx, torch, transformers  # noqa: F401
print(f"setup_export: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxscript {onnxscript.__version__}")
PY
echo "$want" > "$stamp"
