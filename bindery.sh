#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./bindery.sh demo    install what is needed, build, then build + generate + refit + generate
#                        with the small model shipped in models/ (tools/demo.sh)
#   ./bindery.sh test    install what is needed, build, run the whole test suite
#   ./bindery.sh build   install and build only
# BUILD_DIR (default build) and JOBS (default: all cores) may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")"
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

# setup [target...]: install, configure, build (everything, or only the targets named).
setup() {
  ./scripts/install_deps.sh
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build "$BUILD_DIR" -j "$JOBS" "${targets[@]}"
}

case "${1:-demo}" in
  build) setup ;;
  demo)
    setup bindery_cli  # the demo needs only the CLI; `test` builds the tests and benchmarks
    tools/demo.sh "$BUILD_DIR"
    ;;
  test)
    setup
    cd "$BUILD_DIR"
    ctest --output-on-failure -j "$JOBS" --timeout 600
    ;;
  *)
    echo "usage: $0 [demo|test|build]" >&2
    exit 2
    ;;
esac
