#!/usr/bin/env bash
# tools/pg-embedded.sh's folder life cycle, where CI once failed: a folder
# whose path is too long for a Unix socket keeps its server in
# /tmp/gannf-pg-<hash of the path>, and a later folder at the same path (a
# fresh clone where an earlier one was) must get a fresh cluster, never the
# earlier one's data; `destroy` removes both places.
#   pg_embedded_test.sh SCRIPT WORKDIR
set -euo pipefail
script=$1
work=$2
fail() { echo "FAIL: $*" >&2; exit 1; }
# Past the ~100 bytes a socket path may have: the server goes to /tmp.
long=$work/pg-embedded-test/$(printf 'a%.0s' $(seq 1 90))
dir=$long/pg
rm -rf "$work/pg-embedded-test"
export GANNF_PG_NOSYNC=1
trap '"$script" destroy "$dir" >/dev/null 2>&1 || true; rm -rf "$work/pg-embedded-test"' EXIT

"$script" start "$dir"
sdir=$(cat "$dir/server-dir")
case $sdir in /tmp/gannf-pg-*) ;; *) fail "server folder $sdir is not the /tmp fallback" ;; esac
"$script" psql "$dir" -q -c "CREATE TABLE left_by_the_first_folder (x int)"
"$script" stop "$dir"

# The folder goes (a fresh clone); its server's files stay in /tmp.
rm -rf "$dir"
[ -d "$sdir/data" ] || fail "expected the earlier cluster in $sdir"
out=$("$script" start "$dir" 2>&1) || fail "second start: $out"
echo "$out"
echo "$out" | grep -q "removed the test cluster" || fail "no word about the earlier cluster"
n=$("$script" psql "$dir" -At -c "SELECT count(*) FROM pg_tables WHERE tablename = 'left_by_the_first_folder'")
[ "$n" = 0 ] || fail "the new folder was given the earlier folder's cluster"

# Not a test cluster (no GANNF_PG_NOSYNC at its initdb): moved aside, not deleted.
"$script" stop "$dir"
rm -f "$sdir/throwaway"
rm -rf "$dir"
out=$(GANNF_PG_NOSYNC=0 "$script" start "$dir" 2>&1) || fail "third start: $out"
echo "$out"
aside=$(ls -d "$sdir".orphaned-* 2>/dev/null | head -n1)
[ -n "$aside" ] && [ -d "$aside/data" ] || fail "the earlier cluster was not kept aside"
rm -rf "$sdir".orphaned-*

# destroy: the server stopped, both folders gone; a folder that is not one
# of the script's is refused.
"$script" destroy "$dir"
[ ! -e "$dir" ] && [ ! -e "$sdir" ] || fail "destroy left $dir or $sdir"
mkdir -p "$work/pg-embedded-test/not-ours" && touch "$work/pg-embedded-test/not-ours/keep"
if "$script" destroy "$work/pg-embedded-test/not-ours" 2>/dev/null; then fail "destroy took a foreign folder"; fi
[ -e "$work/pg-embedded-test/not-ours/keep" ] || fail "destroy deleted a foreign folder's file"
echo "pg-embedded folder life cycle: ok"
