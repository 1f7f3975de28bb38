#!/usr/bin/env bash
# Runs bench_dash (gannf-dash's response times over a long history, and the
# coordinator's updates/s with and without the dashboard and its clients;
# bench/bench_dash.cpp says what it measures) against the project's embedded
# PostgreSQL, as bench/db.sh runs bench_db. About 7 minutes at the defaults.
#
#   bench/dash.sh [-b BUILD_DIR] [bench_dash options...]     e.g. bench/dash.sh -b build --rounds 10
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
lscpu | sed -n 's/^Model name: *//p' | sed 's/^/# CPU: /'
GANNF_BENCH=bench_dash exec "$(dirname "$0")/db.sh" "$@"
