#!/usr/bin/env bash
# The test command: install what is missing, build, run every test, and end
# with one line per label: passed, failed, skipped and why (tools/test-summary.sh).
#   tools/test.sh               all tests
#   tools/test.sh -L gradcheck  any ctest arguments select a subset
# The cluster tests start their own private PostgreSQL (a ctest fixture).
# GANNF_CMAKE_ARGS adds configure options (.ci/run: -DGANNF_REQUIRE_ALL=ON).
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
JUNIT="$(cd "$BUILD" && pwd)/Testing/junit.xml"
rm -f "$JUNIT"
rc=0
ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" --output-junit "$JUNIT" "$@" || rc=$?
echo
bash tools/test-summary.sh "$BUILD" "$JUNIT"
exit "$rc"
