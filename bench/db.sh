#!/usr/bin/env bash
# Runs bench_db (the cluster's database path against the same server's raw
# INSERT/SELECT; bench/bench_db.cpp says what it measures) against the
# project's embedded PostgreSQL: starts it in BUILD_DIR/pg if it is not
# running (the same private cluster the tests use) and stops it again if this
# script started it.
#
#   bench/db.sh [-b BUILD_DIR] [bench_db options...]     e.g. bench/db.sh -b build --reps 8
#
# Against another server: run BUILD_DIR/bench/bench_db --admin "host=... user=postgres"
# directly (it needs a login that may create a database and a role, and the
# roles of sql/roles.sql).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$here/../build
if [ "${1:-}" = -b ]; then
  [ $# -ge 2 ] || { echo "db.sh: -b needs a folder" >&2; exit 2; }
  build=$2
  shift 2
fi
case "${1:-}" in -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
# GANNF_BENCH: another benchmark of the same kind (bench/dash.sh runs bench_dash so).
name=${GANNF_BENCH:-bench_db}
bench=$build/bench/$name
[ -x "$bench" ] || { echo "db.sh: $bench not found; build it: cmake -S . -B $build && make -C $build $name" >&2; exit 1; }

pgdir=$build/pg
pgctl=$here/../tools/pg-embedded.sh
started=0
if ! "$pgctl" status "$pgdir" >/dev/null 2>&1; then
  "$pgctl" start "$pgdir"
  started=1
fi
stop() { [ "$started" = 1 ] && "$pgctl" stop "$pgdir" || true; }
trap stop EXIT

export PGSERVICEFILE=$pgdir/pg_service.conf PGSERVICE=gannf
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
"$bench" "$@"
