#!/usr/bin/env bash
# Installs the Debian packages bindery's build and tests need. Idempotent; run as root
# (or with sudo). Nothing is downloaded at build or run time: everything comes from here.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev       # tests
  nlohmann-json3-dev              # plan metadata (JSON)
  libcli11-dev                    # CLI parsing
  libxxhash-dev                   # plan checksums, REFIT_IDENTICAL hashes
  libopenblas-dev                 # CPU GEMM
  zlib1g-dev                      # torch.save checkpoints (deflated zip records, CRC-32)
  libpcre2-dev                    # tokenizer.json pre-tokenizer regexes (Unicode classes)
  libutf8proc-dev                 # tokenizer.json NFC/NFD/NFKC/NFKD normalizers (Qwen2)
  clang libclang-rt-14-dev        # libFuzzer target (optional, only for fuzzing)
  clang-format
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bindery: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
