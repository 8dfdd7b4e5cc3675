#!/usr/bin/env bash
# Fetch TensorRT's public headers (NvInfer*.h, TensorRT 10.14) for building the TensorRT plugin library
# on a machine without TensorRT installed. They come from the PyPI package kernel-lens==2.0.1, which
# ships them as plain files: `pip download --no-deps`, then unzip only the headers.
#
# Usage: scripts/fetch_trt_headers.sh [DEST]
#   DEST defaults to ${TQEXPORT_CACHE:-~/.cache/tqexport}/trt-headers.
# Prints the include directory (the folder holding NvInfer.h) on its last stdout line. Idempotent.
set -euo pipefail

cache_root="${TQEXPORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tqexport}"
dest="${1:-$cache_root/trt-headers}"
pkg="kernel-lens==2.0.1"
inc="$dest/kernel_lens/include/tensorrt"

if [[ -f "$inc/NvInfer.h" && -f "$inc/NvInferRuntimePlugin.h" ]]; then
  echo "$inc"
  exit 0
fi

python="${PYTHON:-$(command -v python3 || command -v python)}"
command -v unzip >/dev/null || { echo "fetch_trt_headers: unzip not found (apt-get install unzip)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch_trt_headers: pip download --no-deps $pkg" >&2
"$python" -m pip download --no-deps --quiet --dest "$tmp" "$pkg" >&2
whl="$(ls "$tmp"/kernel_lens-*.whl | head -n1)"
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
unzip -q -o "$whl" 'kernel_lens/include/*' -d "$dest.tmp"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
basename "$whl" > "$dest/SOURCE_PACKAGE"
[[ -f "$inc/NvInfer.h" ]] || { echo "fetch_trt_headers: NvInfer.h missing from $whl" >&2; exit 1; }
echo "$inc"
