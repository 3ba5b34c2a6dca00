#!/usr/bin/env bash
# On the device machine (nvcc, CMake, ninja, no Debian -dev packages, no network): unpacks the
# prefix packed by fetch_debs.sh (.debs/prefix.tar.xz, or the .deb files in .debs/) and builds
# bindery with CUDA against it.
#   tools/device/build.sh [build-dir]      (default build-device)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-device}
DEPS=${BINDERY_DEPS:-/tmp/deps}
mkdir -p "$DEPS"
if [ -f .debs/prefix.tar.xz ]; then
  tar -C "$DEPS" -xJf .debs/prefix.tar.xz
else
  for f in .debs/*.deb; do dpkg -x "$f" "$DEPS"; done
fi
LIB=$DEPS/usr/lib/x86_64-linux-gnu
export PKG_CONFIG_PATH=$LIB/pkgconfig:$LIB/openblas-pthread/pkgconfig:$DEPS/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$DEPS
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$DEPS/usr" \
  -DCMAKE_BUILD_RPATH="$LIB;$LIB/openblas-pthread" -DCMAKE_CUDA_ARCHITECTURES=90a
cmake --build "$BUILD" -j "$(nproc)"
