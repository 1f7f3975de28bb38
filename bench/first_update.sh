#!/usr/bin/env bash
# What a login holding all of a run's first update costs the class
# (docs/security.md, "The first update"). Starts a private PostgreSQL
# (tools/pg-embedded.sh), makes a run (synthetic data; --size class: the
# class's model, 64x64x3, f = 64, 4 units of 256 images; tiny: 32x32x1,
# f = 16, 4 units of 16), and runs gannf-coord with two CPU workers of one
# thread (login gannf_student) for ITER updates, three ways: alone; after a
# second login (holder_quiet) claimed all four units of update 0 with psql
# and went quiet (no heartbeat: before sql/0031 the update waited for the
# lease, 5 minutes); and after a third (holder_heartbeat) did the same and
# sent a heartbeat for each unit every 10 s (before: the hold bound, at
# least 2 minutes). Prints the seconds of the first update and of the
# whole run for each, and what the coordinator said of its pace and of the
# units it took off.
#
#   bench/first_update.sh [-b BUILD_DIR] [--size class|tiny] [--iterations N]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
BUILD=build SIZE=class ITER=3
while [ $# -gt 0 ]; do
  case "$1" in
    -b) BUILD=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --iterations) ITER=$2; shift 2 ;;
    *) echo "first_update.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$SIZE" in
  class) MODEL=(--dataset synthetic:4096) ;;
  tiny) MODEL=(--dataset synthetic:4096 --image-size 32 --channels 1 --latent-dim 16 --ngf 16 --ndf 16
               --images-per-unit 16) ;;
  *) echo "first_update.sh: --size class or tiny, not '$SIZE'" >&2; exit 2 ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
COORD=$BUILD/tools/gannf-coord WORKER=$BUILD/tools/gannf-worker
for b in "$COORD" "$WORKER"; do
  [ -x "$b" ] || { echo "first_update.sh: no $b: cmake --build $BUILD --target gannf-coord gannf-worker" >&2; exit 1; }
done
. "$ROOT/bench/private_pg.sh"
private_pg_start first-update
DB="host=$sock port=$port dbname=gannf"
lscpu | sed -n 's/^Model name: *//p' | sed 's/^/# CPU: /'
echo "# $(nproc) cores; model: $SIZE; $ITER updates of 4 units; two workers of one thread"
# A login for each holder: a unit taken off a login holds it to one unit
# (sql/0021), in the next run too.
for l in holder_quiet holder_heartbeat; do
  "$ROOT/tools/pg-embedded.sh" psql "$PG/pg" -q -d gannf -c "SELECT gannf_admin.admit_student('$l', NULL, 4)" \
    > /dev/null || exit 1
done

one_run() {  # $1: none | quiet | heartbeat; prints "first-update-seconds total-seconds"
  local holder=$1 t0 t1 wid first
  local HOLDER="$DB user=holder_$holder"
  "$COORD" init --db "$DB user=gannf_coord" --force "${MODEL[@]}" --seed 7 --no-cache --quiet > "$PG/init.log" 2>&1 ||
    { cat "$PG/init.log" >&2; exit 1; }
  if [ "$holder" != none ]; then
    wid=$(psql -X -At -d "$HOLDER" -c "SELECT gannf.register_worker('holder', 'cpu', 1, 1000000000, NULL, NULL, 16)")
    psql -X -At -F ' ' -d "$HOLDER" -c "SELECT unit_id, attempt FROM gannf.claim($wid, 4)" > "$PG/held"
    [ "$(wc -l < "$PG/held")" -eq 4 ] || { echo "first_update.sh: the holder got $(wc -l < "$PG/held") units" >&2; exit 1; }
    if [ "$holder" = heartbeat ]; then
      while true; do
        while read -r u a; do psql -X -q -d "$HOLDER" -c "SELECT gannf.heartbeat($wid, $u, $a)" > /dev/null 2>&1 || true
        done < "$PG/held"
        sleep 10
      done &
      pids+=($!)
    fi
  fi
  for w in 1 2; do
    "$WORKER" --db "$DB user=gannf_student" --backend cpu --threads 1 --name "w$w" --exit-when-done \
      > "$PG/w$w.log" 2>&1 &
    pids+=($!)
  done
  t0=$(date +%s.%N)
  "$COORD" run --db "$DB user=gannf_coord" --iterations "$ITER" --sample-interval 0 --checkpoint-interval 0 \
    --output-dir "$PG/out" > "$PG/coord.log" 2>&1 || { tail -5 "$PG/coord.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  grep -o "this machine's CPU.*\|iteration 0: .* late, taken off.*" "$PG/coord.log" | cut -c1-220 | sed "s/^/# $holder: /" >&2 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
  first=$(sed -n 's/^iteration 1 |.*| \([0-9.]*\) s (wait.*/\1/p' "$PG/coord.log" | head -1)
  echo "${first:-?} $(echo "$t1 - $t0" | bc)"
}

for mode in none quiet heartbeat; do
  read -r first total < <(one_run "$mode")
  printf '%-32s first update %6.1f s, %d updates %6.1f s\n' \
    "$(case $mode in none) echo alone ;; quiet) echo 'holder of update 0, quiet' ;;
       heartbeat) echo 'holder of update 0, heartbeats' ;; esac)" "$first" "$ITER" "$total"
done
