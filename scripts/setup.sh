#!/usr/bin/env bash
# Creates .venv (idempotent) and installs tqexport into it, editable, with the test extras and the native ORT
# custom-op library (CMake build of plugins/; ORT headers fetched on first use, see scripts/fetch_ort_headers.sh).
# Quick when nothing changed: a stamp over pyproject.toml and plugins/ skips the reinstall.
#
# Env: PYTHON (default python3), TQ_VENV (default .venv), TQ_WITH_CUDA / TQ_WITH_TRT (default OFF),
#      CMAKE_CUDA_ARCHITECTURES (default 90a; full: "87;90a;110"), TQ_FORCE_REINSTALL=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${PYTHON:-python3}"
venv="${TQ_VENV:-.venv}"
vpy="$venv/bin/python"

if [[ ! -x "$vpy" ]]; then
  echo "setup: creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
fi
"$vpy" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: Python >= 3.11 needed" >&2; exit 1; }

stamp_file="$venv/.tqexport-install-stamp"
stamp="$( { echo "cuda=${TQ_WITH_CUDA:-OFF} trt=${TQ_WITH_TRT:-OFF} arch=${CMAKE_CUDA_ARCHITECTURES:-90a}";
            find pyproject.toml plugins scripts/fetch_ort_headers.sh scripts/fetch_trt_headers.sh -type f \
                 -printf '%p %s %T@\n' | LC_ALL=C sort; } | sha256sum | cut -d' ' -f1)"
if [[ "${TQ_FORCE_REINSTALL:-0}" != 1 && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] &&
   "$vpy" -c 'import tqexport.runtime as r; r.ort_library_path()' 2>/dev/null; then
  echo "setup: $venv is up to date"
  exit 0
fi

pip=("$vpy" -m pip --disable-pip-version-check)
# Build requirements go into the venv so the native build can run without isolation (incremental rebuilds
# in build/<wheel tag>/ instead of a fresh CMake tree per install).
build_deps=("scikit-build-core>=0.11")
cmake_ok="$("$vpy" - <<'PY'
import re, shutil, subprocess
exe = shutil.which("cmake")
if exe:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    print(int(bool(m and (int(m[1]), int(m[2])) >= (3, 24))))
else:
    print(0)
PY
)"
[[ "$cmake_ok" == 1 ]] || build_deps+=("cmake>=3.24")
command -v ninja >/dev/null || build_deps+=("ninja")
echo "setup: installing build requirements: ${build_deps[*]}"
"${pip[@]}" install -q "${build_deps[@]}"

echo "setup: installing tqexport (editable, [test]); native build log: build/setup-build.log"
mkdir -p build
if ! "${pip[@]}" install -q --no-build-isolation -e ".[test]" > build/setup-build.log 2>&1; then
  tail -n 60 build/setup-build.log >&2
  echo "setup: pip install failed (full log: build/setup-build.log)" >&2
  exit 1
fi
"$vpy" -c 'import tqexport.runtime as r; print("setup: ORT custom-op library:", r.ort_library_path())'
echo "$stamp" > "$stamp_file"
