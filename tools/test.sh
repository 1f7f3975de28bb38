#!/usr/bin/env bash
# The test command: install what is missing, build, run every test.
#   tools/test.sh               all tests
#   tools/test.sh -L gradcheck  any ctest arguments select a subset
# The cluster tests start their own private PostgreSQL (a ctest fixture).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
BUILD=${GANNF_BUILD_DIR:-build}
JOBS=$(nproc)
LOG=$(mktemp)
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${GANNF_CMAKE_ARGS:-} >"$LOG" 2>&1 ||
  { cat "$LOG"; exit 1; }
grep -E "✓|✗" "$LOG" || true
cmake --build "$BUILD" -j"$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" "$@"
