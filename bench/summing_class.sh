#!/usr/bin/env bash
# What the late rule costs an honest worker that sums units (sql/0022 against
# sql/0023; docs/security.md, "Stragglers: the quorum"): a small run
# (synthetic 32x32, ngf = ndf = 8, 8 units of 16 images per update, every
# unit awaited: --quorum 1) with SINGLES gannf-workers that send one unit at
# a time, computing a unit in UNIT_MS (--throttle-ms, one micro-batch a
# unit), and one that sums 4 (--sum-units 4) computing a unit in SUMMER_MS
# (a laptop a little slower than the others): the summer's claim takes 4 of
# its units' time. Each run lasts SECONDS s; it prints updates/s, the units
# the summer had accepted and the units the coordinator took off as late.
# With OLD_BUILD (a build of an earlier commit, e.g. one before sql/0023)
# the same run is made with its programs first, in the same round.
#
#   bench/summing_class.sh [-b BUILD_DIR] [--old-build DIR] [--seconds S] [--rounds R]
#                          [--singles N] [--unit-ms MS] [--summer-ms MS]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
BUILD=build OLD_BUILD="" SECONDS_RUN=60 ROUNDS=1 SINGLES=3 UNIT_MS=2000 SUMMER_MS=2500
while [ $# -gt 0 ]; do
  case "$1" in
    -b) BUILD=$2; shift 2 ;;
    --old-build) OLD_BUILD=$2; shift 2 ;;
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --singles) SINGLES=$2; shift 2 ;;
    --unit-ms) UNIT_MS=$2; shift 2 ;;
    --summer-ms) SUMMER_MS=$2; shift 2 ;;
    *) echo "summing_class.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for b in $BUILD $OLD_BUILD; do
  for p in gannf-coord gannf-worker; do
    [ -x "$b/tools/$p" ] || { echo "summing_class.sh: no $b/tools/$p: cmake --build $b --target $p" >&2; exit 1; }
  done
done
PG=("$ROOT/tools/pg-embedded.sh" psql "$BUILD/pg")
"$ROOT/tools/pg-embedded.sh" start "$BUILD/pg" >/dev/null
eval "$("$ROOT/tools/pg-embedded.sh" env "$BUILD/pg")"
DB=gannf_summing
"${PG[@]}" -q -d gannf -c "SELECT gannf_admin.admit_student('summing_summer', NULL, 4)" >/dev/null 2>&1 || true
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
lscpu | sed -n 's/^Model name: *//p' | sed 's/^/# CPU: /'
echo "# $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $SINGLES single workers, $UNIT_MS ms a unit, and one" \
  "summing 4 units, $SUMMER_MS ms a unit; runs of $SECONDS_RUN s"

one_run() {  # $1: build dir; prints updates/s, the summer's accepted units, units taken off as late
  local b=$1 pids=() k
  "${PG[@]}" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB OWNER gannf_coord" >/dev/null
  "$b/tools/gannf-coord" init --db "dbname=$DB" --dataset synthetic:100000 --image-size 32 --channels 1 \
    --latent-dim 16 --ngf 8 --ndf 8 --images-per-unit 16 --units-per-update 8 --seed 3 --quorum 1 \
    --no-cache --quiet >"$TMP/init.log" 2>&1 || { cat "$TMP/init.log" >&2; exit 1; }
  for k in $(seq 1 "$SINGLES"); do
    "$b/tools/gannf-worker" --db "user=gannf_student dbname=$DB" --name "single$k" --threads 1 --batch-size 16 \
      --sum-units 1 --throttle-ms "$UNIT_MS" --no-cache >"$TMP/single$k.log" 2>&1 &
    pids+=($!)
  done
  "$b/tools/gannf-worker" --db "user=summing_summer dbname=$DB" --name summer --threads 1 --batch-size 16 \
    --sum-units 4 --throttle-ms "$SUMMER_MS" --no-cache >"$TMP/summer.log" 2>&1 &
  pids+=($!)
  "$b/tools/gannf-coord" run --db "dbname=$DB" --iterations 1000000 --output-dir "$TMP/out" --sample-interval 0 \
    --checkpoint-interval 0 --quiet >"$TMP/coord.log" 2>&1 &
  local coord=$!
  sleep "$SECONDS_RUN"
  kill -INT "$coord" 2>/dev/null || true
  wait "$coord" 2>/dev/null || true
  for k in "${pids[@]}"; do kill "$k" 2>/dev/null || true; done
  wait 2>/dev/null || true
  local n summer late
  n=$("${PG[@]}" -XAtq -d "$DB" -c "SELECT count(*) FROM gannf.loss_history")
  summer=$("${PG[@]}" -XAtq -d "$DB" -c "SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w
    ON w.id = s.worker_id WHERE w.name = 'summer' AND s.state = 'used'")
  late=$(sed -n 's/.*: \([0-9][0-9]*\) unit(s) late.*/\1/p' "$TMP/coord.log" | awk '{ s += $1 } END { print s + 0 }')
  awk -v n="$n" -v t="$SECONDS_RUN" -v s="$summer" -v l="$late" 'BEGIN { printf "%.3f %d %d\n", n / t, s, l }'
}

for r in $(seq 1 "$ROUNDS"); do
  line="# round $r:"
  for b in $OLD_BUILD $BUILD; do
    set -- $(one_run "$b")
    line+=$(printf ' %s: %.3f updates/s, summer %s units used, %s taken off late;' "$b" "$1" "$2" "$3")
  done
  echo "$line"
done
