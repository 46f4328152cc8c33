#!/bin/sh
# Fetch ONNX Runtime C headers from Debian 13 (trixie)'s libonnxruntime-dev
# package into DEST (default: build/ort), without touching the system's apt state.
# The archive URIs are read from this machine's own Debian apt sources at run time; elsewhere
# (Ubuntu, JetPack) it says how to build with a release, pkg-config or ORT_INCLUDE instead.
set -eu

DEST=${1:-build/ort}
SOURCES=${SB_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
SUITE=${SB_ORT_SUITE:-trixie}

if [ -f "$DEST/include/onnxruntime_c_api.h" ]; then
    exit 0
fi
if [ ! -r "$SOURCES" ]; then
    cat >&2 <<EOF
fetch_ort_headers: cannot read $SOURCES: this is not a Debian machine (Ubuntu and JetPack have no
Debian apt sources), so ONNX Runtime's headers cannot come from Debian's libonnxruntime-dev. Build with
  make ORT_ROOT=/abs/path/onnxruntime-linux-<arch>-<version>   an ONNX Runtime release (include/ and lib/)
  make ORT_PKG=libonnxruntime                                  an ONNX Runtime that pkg-config knows
  make ORT_INCLUDE=/dir/of/onnxruntime_c_api.h [ORT_LIB=/dir/of/libonnxruntime.so]
or point SB_APT_SOURCES at a deb822 .sources file that names a Debian archive.
EOF
    exit 1
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

# First URIs: line whose URI ends in /debian (not debian-security, not ports).
URI=$(sed -n 's/^URIs:[[:space:]]*//p' "$SOURCES" | tr ' ' '\n' | grep -E '/debian/?$' | head -n 1)
[ -n "$URI" ] || { echo "fetch_ort_headers: no Debian archive URI found in $SOURCES" >&2; exit 1; }

mkdir -p "$TMP/lists/partial" "$TMP/archives/partial"
KEYRING=$(sed -n 's/^Signed-By:[[:space:]]*//p' "$SOURCES" | head -n 1)
KEYRING=${KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
echo "deb [signed-by=$KEYRING] $URI $SUITE main" > "$TMP/sources.list"
APT_OPTS="-o Dir::Etc::SourceList=$TMP/sources.list -o Dir::Etc::SourceParts=/dev/null \
 -o Dir::State::Lists=$TMP/lists -o Dir::Cache::archives=$TMP/archives \
 -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root"

# shellcheck disable=SC2086
apt-get -q $APT_OPTS update >&2
# shellcheck disable=SC2086
(cd "$TMP" && apt-get -q $APT_OPTS download libonnxruntime-dev >&2)

DEB=$(ls "$TMP"/libonnxruntime-dev_*.deb)
dpkg -x "$DEB" "$TMP/root"
HDR=$(dirname "$(find "$TMP/root" -name onnxruntime_c_api.h | head -n 1)")
[ -f "$HDR/onnxruntime_c_api.h" ] || { echo "fetch_ort_headers: onnxruntime_c_api.h not in $DEB" >&2; exit 1; }

mkdir -p "$DEST/include"
cp "$HDR"/*.h "$DEST/include/"
basename "$DEB" > "$DEST/SOURCE"
echo "fetch_ort_headers: headers from $(basename "$DEB") in $DEST/include" >&2
