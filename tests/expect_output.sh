#!/usr/bin/env bash
# A program's run as a test: it passes when the program exits 0 AND each
# pattern (grep -E, one line) is found in what it printed. ctest's
# PASS_REGULAR_EXPRESSION alone ignores the exit code, so a program that
# printed its lines and then failed would pass.
#   expect_output.sh PATTERN... -- PROGRAM [ARGS...]
set -uo pipefail
patterns=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  patterns+=("$1")
  shift
done
[ $# -ge 2 ] || { echo "usage: expect_output.sh PATTERN... -- PROGRAM [ARGS...]" >&2; exit 2; }
shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" >"$out" 2>&1
rc=$?
cat "$out"
failed=0
if [ "$rc" -ne 0 ]; then
  echo "expect_output: $1 exited with $rc" >&2
  failed=1
fi
for p in "${patterns[@]}"; do
  grep -Eq -- "$p" "$out" || { echo "expect_output: no line matches: $p" >&2; failed=1; }
done
exit "$failed"
