#!/usr/bin/env bash
# On the device machine (nvcc, CMake, ninja, no Debian -dev packages, no network): unpacks the
# prefixes packed by fetch_debs.sh and builds bindery with CUDA against them.
#   [BINDERY_TARGETS="t1 t2"] tools/device/build.sh [build-dir]      (default build-device)
# Carry [".debs/prefix.tar.xz"], and ".debs/prefix-openblas.tar.xz" too for CPU benchmarks;
# without the OpenBLAS prefix the build uses portable gemm loops (-DBINDERY_WITH_OPENBLAS=OFF).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-device}
DEPS=${BINDERY_DEPS:-/tmp/deps}
mkdir -p "$DEPS"
tar -C "$DEPS" -xJf .debs/prefix.tar.xz
OPENBLAS=OFF
if [ -f .debs/prefix-openblas.tar.xz ]; then
  tar -C "$DEPS" -xJf .debs/prefix-openblas.tar.xz
  OPENBLAS=ON
fi
LIB=$DEPS/usr/lib/x86_64-linux-gnu
export PKG_CONFIG_PATH=$LIB/pkgconfig:$LIB/openblas-pthread/pkgconfig:$DEPS/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$DEPS
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$DEPS/usr" \
  -DCMAKE_BUILD_RPATH="$LIB;$LIB/openblas-pthread" -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DBINDERY_WITH_OPENBLAS=$OPENBLAS
# BINDERY_TARGETS="a b": build only these targets (a device call's time is short).
cmake --build "$BUILD" -j "$(nproc)" ${BINDERY_TARGETS:+--target $BINDERY_TARGETS}
