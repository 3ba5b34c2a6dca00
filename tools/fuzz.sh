#!/usr/bin/env bash
# Runs one libFuzzer target: builds tests/fuzz/<name>_fuzzer (clang, libFuzzer + ASan + UBSan)
# in build-fuzz and runs it for the given number of seconds (default 600) with one worker.
#
#   tools/fuzz.sh plan_load|safetensors_header|unpickle [seconds]
#
# New inputs are collected in a scratch directory during the run and merged into the committed
# corpus (tests/fuzz/corpus/<name>) only at the end, with -merge=1 -use_counters=0: only
# inputs that reach new edges are kept (not every new hit count), so the corpus stays small. Crashes are written to build-fuzz/<name>_artifacts/; turn each
# into a unit test before fixing it. Exit status: the fuzzer's (non-zero on a
# crash, in which case nothing is merged).
set -euo pipefail

name=${1:?usage: tools/fuzz.sh plan_load|safetensors_header|unpickle [seconds]}
seconds=${2:-600}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BINDERY_FUZZ_BUILD:-$root/build-fuzz}
corpus=$root/tests/fuzz/corpus/$name
artifacts=$build/${name}_artifacts

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DBINDERY_BUILD_FUZZERS=ON -DBINDERY_BUILD_TESTS=ON -DBINDERY_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j2 --target ${name}_fuzzer

fuzzer=$build/tests/fuzz/${name}_fuzzer
mkdir -p "$corpus" "$artifacts"
scratch=$(mktemp -d "$build/${name}_new.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# The first directory receives new inputs; the committed corpus is only read.
status=0
"$fuzzer" -max_len=65536 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$scratch" "$corpus" || status=$?

if [[ $status -eq 0 ]]; then
  "$fuzzer" -merge=1 -use_counters=0 -max_len=65536 "$corpus" "$scratch"
fi
echo "corpus: $(find "$corpus" -type f | wc -l) files, $(du -sb "$corpus" | cut -f1) bytes"
exit $status
