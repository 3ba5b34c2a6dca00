#!/usr/bin/env bash
# Here, once: downloads the Debian packages the device machine lacks into .debs/ (git-ignored)
# and packs what the build needs from them (headers, shared libraries, pkg-config files; no
# static libraries but GoogleTest's, no docs) into two prefixes, to carry with the device tool
# (the working tree and the carried files share a 64 MiB limit, and models/ takes 53 MB of it):
#   .debs/prefix.tar.xz           (~1.5 MB) everything but OpenBLAS: build.sh then configures
#                                 -DBINDERY_WITH_OPENBLAS=OFF (GPU work; CPU path right, not fast)
#   .debs/prefix-openblas.tar.xz  (~5 MB) OpenBLAS, carried in addition for CPU benchmarks
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .debs
cd .debs
rm -f ./*.deb
apt-get download libxxhash-dev libxxhash0 libgtest-dev libcli11-dev nlohmann-json3-dev \
  libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2
mkdir -p blas && (cd blas && rm -f ./*.deb &&
  apt-get download libopenblas-dev libopenblas0-pthread libopenblas-pthread-dev)

pack() {  # pack <tarball> <deb>...
  local out=$1
  shift
  rm -rf prefix && mkdir prefix
  for f in "$@"; do dpkg -x "$f" prefix; done
  find prefix -name '*.a' ! -name 'libgtest*' ! -name 'libgmock*' -delete
  rm -rf prefix/usr/share/doc prefix/usr/share/man
  tar -C prefix -cJf "$out" .
  rm -rf prefix
  ls -la "$out"
}
pack prefix.tar.xz ./*.deb
pack prefix-openblas.tar.xz blas/*.deb
