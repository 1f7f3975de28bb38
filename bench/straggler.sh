#!/usr/bin/env bash
# What one straggler costs the class (issue 12, stragglers; docs/security.md):
# updates/s of a small run (synthetic 32x32, ngf = ndf = 8, 4 units of 16
# images per update, the classroom rules) with HONEST gannf-workers of one
# thread, alone and beside one holder of another login, with --quorum 1
# (every update waits for every unit) and with the classroom's 0.6. Holders:
#   slow     an honest gannf-worker that takes SLOW_MS per unit (--throttle-ms)
#   hostile  a psql loop that claims a unit and heartbeats it, never submitting
#            (sql/0008 takes it back after the hold bound, 2 min here; the loop
#            claims again)
#   hostile2 two such loops of the one login: 2 units of an update, more than
#            the quorum (3 of 4) can spare (sql/0022 takes them off once late)
# Each run lasts SECONDS s (the iteration bound is out of reach); the figure is
# the updates committed in that time / SECONDS. Runs alternate within a round,
# so that the machine's load moves them alike; ratios are within a round.
#
#   bench/straggler.sh [-b BUILD_DIR] [--seconds S] [--rounds R] [--honest N] [--slow-ms MS]
#   HOLDERS="none hostile2" bench/straggler.sh ...    only some of the holders
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
BUILD=build SECONDS_RUN=30 ROUNDS=1 HONEST=3 SLOW_MS=10000
while [ $# -gt 0 ]; do
  case "$1" in
    -b) BUILD=$2; shift 2 ;;
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --honest) HONEST=$2; shift 2 ;;
    --slow-ms) SLOW_MS=$2; shift 2 ;;
    *) echo "straggler.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
COORD=$BUILD/tools/gannf-coord WORKER=$BUILD/tools/gannf-worker
for b in "$COORD" "$WORKER"; do
  [ -x "$b" ] || { echo "straggler.sh: no $b: cmake --build $BUILD --target gannf-coord gannf-worker" >&2; exit 1; }
done
PG=("$ROOT/tools/pg-embedded.sh" psql "$BUILD/pg")
"$ROOT/tools/pg-embedded.sh" start "$BUILD/pg" >/dev/null
eval "$("$ROOT/tools/pg-embedded.sh" env "$BUILD/pg")"
DB=gannf_straggler
"${PG[@]}" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB OWNER gannf_coord" >/dev/null
"${PG[@]}" -q -d gannf -c "SELECT gannf_admin.admit_student('straggler_holder', NULL, 4)" >/dev/null
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
lscpu | sed -n 's/^Model name: *//p' | sed 's/^/# CPU: /'
echo "# $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $HONEST honest workers; runs of $SECONDS_RUN s;" \
  "slow holder: $SLOW_MS ms a unit"

hostile_holder() {  # $1: worker name; claims one unit at a time and heartbeats it every second
  local q=("${PG[@]}" -XAtq -U straggler_holder -d "$DB") id row
  id=$("${q[@]}" -c "SELECT gannf.register_worker('$1', 'cpu')")
  while [ ! -e "$TMP/stop" ]; do
    row=$("${q[@]}" -F ' ' -c "SELECT unit_id, attempt FROM gannf.claim($id)" 2>/dev/null || true)
    if [ -n "$row" ]; then
      set -- $row
      while [ ! -e "$TMP/stop" ] && [ -n "$("${q[@]}" -c "SELECT gannf.heartbeat($id, $1, $2)" 2>/dev/null || true)" ]; do
        sleep 1
      done
    fi
    sleep 0.2
  done
}

one_run() {  # $1: none|slow|hostile|hostile2, $2: quorum; prints updates/s and the longest time without an update
  rm -f "$TMP/stop"
  "$COORD" init --db "dbname=$DB" --force --dataset synthetic:100000 --image-size 32 --channels 1 \
    --latent-dim 16 --ngf 8 --ndf 8 --images-per-unit 16 --units-per-update 4 --seed 3 --quorum "$2" \
    --no-cache --quiet >"$TMP/init.log" 2>&1 || { cat "$TMP/init.log" >&2; exit 1; }
  "${PG[@]}" -q -d "$DB" -c "DELETE FROM gannf.login_trust" >/dev/null
  local pids=() k
  for k in $(seq 1 "$HONEST"); do
    "$WORKER" --db "user=gannf_student dbname=$DB" --name "w$k" --threads 1 --batch-size 16 --no-cache \
      --quiet >"$TMP/w$k.log" 2>&1 &
    pids+=($!)
  done
  case "$1" in
    slow) "$WORKER" --db "user=straggler_holder dbname=$DB" --name slow --threads 1 --batch-size 16 --no-cache \
            --throttle-ms "$SLOW_MS" --quiet >"$TMP/slow.log" 2>&1 &
          pids+=($!) ;;
    hostile) hostile_holder holder & pids+=($!) ;;
    hostile2) hostile_holder holder & pids+=($!); hostile_holder holder2 & pids+=($!) ;;
  esac
  local t_start t_end
  t_start="'$(date -u '+%Y-%m-%d %H:%M:%S.%N')+00'::timestamptz"
  "$COORD" run --db "dbname=$DB" --iterations 1000000 --output-dir "$TMP/out" --sample-interval 0 \
    --checkpoint-interval 0 --quiet >"$TMP/coord.log" 2>&1 &
  local coord=$!
  sleep "$SECONDS_RUN"
  t_end="'$(date -u '+%Y-%m-%d %H:%M:%S.%N')+00'::timestamptz"
  kill -INT "$coord" 2>/dev/null || true
  wait "$coord" 2>/dev/null || true
  touch "$TMP/stop"
  for k in "${pids[@]}"; do kill "$k" 2>/dev/null || true; done
  wait 2>/dev/null || true
  local n gap
  n=$("${PG[@]}" -XAtq -d "$DB" -c "SELECT count(*) FROM gannf.loss_history")
  # From the run's start (its init) to the first update, between updates, and
  # from the last one to the end.
  gap=$("${PG[@]}" -XAtq -d "$DB" -c "SELECT round(extract(epoch FROM greatest(max(gap), $t_end - max(at)))::numeric, 1)
    FROM (SELECT recorded_at AS at, recorded_at - coalesce(lag(recorded_at) OVER (ORDER BY iteration), $t_start) AS gap
            FROM gannf.loss_history UNION ALL SELECT $t_start, '0') g")
  awk -v n="$n" -v t="$SECONDS_RUN" -v g="$gap" 'BEGIN { printf "%.3f %s\n", n / t, g }'
}

for r in $(seq 1 "$ROUNDS"); do
  line="# round $r:"
  for holder in ${HOLDERS:-none slow hostile hostile2}; do
    for q in 1 0.6; do
      set -- $(one_run "$holder" "$q")
      line+=$(printf ' %s/q%s %.3f (%s s)' "$holder" "$q" "$1" "$2")
    done
  done
  echo "$line updates/s (the longest time without an update)"
done
