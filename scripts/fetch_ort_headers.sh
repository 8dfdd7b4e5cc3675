#!/usr/bin/env bash
# Fetch the ONNX Runtime C/C++ API headers (they are not in the PyPI wheel) from Debian trixie's
# libonnxruntime-dev, with a PRIVATE apt configuration: its own sources list, state, cache and an empty
# dpkg status under the cache folder. The system's apt configuration is never read or written.
#
# Usage: scripts/fetch_ort_headers.sh [DEST]
#   DEST defaults to ${TQEXPORT_CACHE:-~/.cache/tqexport}/ort-headers.
# Prints the include directory (the folder holding onnxruntime_c_api.h) on its last stdout line.
# Idempotent: a second run with the headers present does nothing but print that folder.
set -euo pipefail

cache_root="${TQEXPORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tqexport}"
dest="${1:-$cache_root/ort-headers}"
suite="${TQ_ORT_DEBIAN_SUITE:-trixie}"
mirror="${TQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

find_include_dir() {
  local hdr
  hdr="$(find "$dest" -name onnxruntime_c_api.h -print -quit 2>/dev/null || true)"
  [[ -n "$hdr" ]] && dirname "$hdr"
}

if inc="$(find_include_dir)" && [[ -n "$inc" && -f "$inc/onnxruntime_cxx_api.h" ]]; then
  echo "$inc"
  exit 0
fi

command -v apt-get >/dev/null || { echo "fetch_ort_headers: apt-get not found; pass -DORT_INCLUDE_DIR=<dir with onnxruntime_c_api.h> instead" >&2; exit 1; }
command -v dpkg >/dev/null || { echo "fetch_ort_headers: dpkg not found; pass -DORT_INCLUDE_DIR=... instead" >&2; exit 1; }

apt_root="$cache_root/apt-$suite"
mkdir -p "$apt_root"/{etc/sources.list.d,etc/preferences.d,etc/apt.conf.d,state/lists/partial,cache/archives/partial,debs}
: > "$apt_root/state/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f "$keyring" ]] || { echo "fetch_ort_headers: $keyring missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
cat > "$apt_root/etc/sources.list" <<SRC
deb [signed-by=$keyring] $mirror $suite main
SRC

arch="$(dpkg --print-architecture)"
apt_opts=(
  -o "Dir::Etc=$apt_root/etc"
  -o "Dir::Etc::sourcelist=$apt_root/etc/sources.list"
  -o "Dir::Etc::sourceparts=$apt_root/etc/sources.list.d"
  -o "Dir::Etc::preferencesparts=$apt_root/etc/preferences.d"
  -o "Dir::Etc::parts=$apt_root/etc/apt.conf.d"
  -o "Dir::State=$apt_root/state"
  -o "Dir::State::lists=$apt_root/state/lists"
  -o "Dir::State::status=$apt_root/state/status"
  -o "Dir::Cache=$apt_root/cache"
  -o "Dir::Cache::archives=$apt_root/cache/archives"
  -o "APT::Architecture=$arch"
  -o "APT::Architectures=$arch"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)

echo "fetch_ort_headers: apt-get update ($suite, private state in $apt_root)" >&2
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$apt_root/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev >&2)
deb="$(ls "$apt_root"/debs/libonnxruntime-dev_*.deb | head -n1)"
echo "fetch_ort_headers: unpacking $(basename "$deb")" >&2
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
dpkg -x "$deb" "$dest.tmp"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
basename "$deb" > "$dest/SOURCE_PACKAGE"

inc="$(find_include_dir)"
[[ -n "$inc" && -f "$inc/onnxruntime_cxx_api.h" ]] || { echo "fetch_ort_headers: no onnxruntime_cxx_api.h in $deb" >&2; exit 1; }
echo "$inc"
