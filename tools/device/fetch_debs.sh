#!/usr/bin/env bash
# Here, once: downloads the Debian packages the device machine lacks into .debs/ (git-ignored)
# and packs what the build needs from them (headers, shared libraries, pkg-config files; no
# static libraries or docs) into .debs/prefix.tar.xz, about 6.5 MB: carry [".debs/prefix.tar.xz"]
# with the device tool (the working tree and the carried files share a 64 MiB limit).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .debs
cd .debs
apt-get download libxxhash-dev libxxhash0 libopenblas-dev libopenblas0-pthread libopenblas-pthread-dev \
  libgtest-dev libcli11-dev nlohmann-json3-dev zlib1g-dev libpcre2-dev libpcre2-8-0 \
  libutf8proc-dev libutf8proc2
rm -rf prefix && mkdir prefix
for f in *.deb; do dpkg -x "$f" prefix; done
find prefix -name '*.a' ! -name 'libgtest*' ! -name 'libgmock*' -delete  # GoogleTest ships static only
rm -rf prefix/usr/share/doc prefix/usr/share/man
tar -C prefix -cJf prefix.tar.xz .
rm -rf prefix
ls -la prefix.tar.xz
