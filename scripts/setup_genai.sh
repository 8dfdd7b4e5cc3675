#!/usr/bin/env bash
# Create .venv-genai with transformers 5 and the onnxruntime-genai model builder (works
# offline: the builder reads a local model folder). Idempotent like setup_export.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TQ_GENAI_VENV:-$root/.venv-genai}"
req="$root/graphs/requirements-genai.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup_genai: $venv is up to date"
  exit 0
fi

python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$req"
"$venv/bin/python" - <<'PY'
import onnx, onnxruntime, onnxruntime_genai, onnxscript, torch, transformers  # noqa: F401
from onnxruntime_genai.models import builder  # noqa: F401
print(f"setup_genai: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"onnxruntime {onnxruntime.__version__}, onnxruntime-genai {onnxruntime_genai.__version__}")
PY
echo "$want" > "$stamp"
