#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh), lints with ruff, runs pytest. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh tests/ort -k quantize`. GPU tests (marker `gpu`) skip with a reason without CUDA.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
vpy=.venv/bin/python

# Lint and tests both run; the script fails if either does.
set +e
echo "test: ruff check"
"$vpy" -m ruff check .
ruff_rc=$?

echo "test: pytest"
"$vpy" -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "test: pytest collected no tests (exit 5); treating as success"
  rc=0
fi
if [[ $ruff_rc -ne 0 ]]; then
  echo "test: ruff check failed (exit $ruff_rc): fix the findings above (ruff check --fix / ruff format)" >&2
  [[ $rc -ne 0 ]] || rc=$ruff_rc
fi
exit $rc
