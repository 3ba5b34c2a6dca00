#!/usr/bin/env bash
# Here, once: downloads the Debian packages the device machine lacks into .debs/ (git-ignored),
# to be carried to it with the device tool (carry [".debs"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .debs
cd .debs
apt-get download libxxhash-dev libxxhash0 libopenblas-dev libopenblas0-pthread libopenblas-pthread-dev \
  libgtest-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
