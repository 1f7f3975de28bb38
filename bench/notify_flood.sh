#!/usr/bin/env bash
# What a NOTIFY flood by a student login costs the run (issue 12, NOTIFY;
# docs/security.md). PostgreSQL has no privilege for NOTIFY, so any login can
# flood the channels the coordinator (gannf_submission) and the workers
# (gannf_work, gannf_weights) listen on; gannf treats a notification as a
# hint and reads the tables at most every 50 ms (coordinator) / 100 ms (idle
# worker). This runs the same small run (synthetic 32x32, narrow nets, 2 CPU
# workers of one thread) twice on the build's embedded PostgreSQL, alone and
# beside FLOODERS psql sessions of the student login that each NOTIFY those
# channels in a loop of single-statement transactions, alternating
# ROUNDS times, and prints updates/s of each and their ratio (see below for
# a third run that separates the flooders' own load).
#
#   bench/notify_flood.sh [-b BUILD_DIR] [--iterations N] [--rounds R] [--flooders F]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
BUILD=build ITER=60 ROUNDS=2 FLOODERS=2
while [ $# -gt 0 ]; do
  case "$1" in
    -b) BUILD=$2; shift 2 ;;
    --iterations) ITER=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --flooders) FLOODERS=$2; shift 2 ;;
    *) echo "notify_flood.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
COORD=$BUILD/tools/gannf-coord WORKER=$BUILD/tools/gannf-worker
for b in "$COORD" "$WORKER"; do
  [ -x "$b" ] || { echo "notify_flood.sh: no $b: cmake --build $BUILD --target gannf-coord gannf-worker" >&2; exit 1; }
done
"$ROOT/tools/pg-embedded.sh" start "$BUILD/pg" >/dev/null
eval "$("$ROOT/tools/pg-embedded.sh" env "$BUILD/pg")"
DB=gannf_notify_flood
"$ROOT/tools/pg-embedded.sh" psql "$BUILD/pg" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" \
  -c "CREATE DATABASE $DB OWNER gannf_coord" >/dev/null
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
lscpu | sed -n 's/^Model name: *//p' | sed 's/^/# CPU: /'
echo "# $(nproc) cores; $ITER updates of 2 units of 16 images per run; $FLOODERS flooders"

one_run() {  # $1: flooders, $2: their channel prefix; prints updates/s
  "$COORD" init --db "dbname=$DB" --force --dataset synthetic:4096 --image-size 32 --channels 1 --latent-dim 16 \
    --ngf 8 --ndf 8 --images-per-unit 16 --units-per-update 2 --seed 3 --no-cache --quiet >"$TMP/init.log" 2>&1 \
    || { cat "$TMP/init.log" >&2; exit 1; }
  local pids=() k
  for k in $(seq 1 "$1"); do
    # Single-statement transactions, payloads all different (identical ones
    # in one transaction are folded), on the three channels.
    seq 1 100000000 | sed "s/.*/SELECT pg_notify('${2}_submission', '&'), pg_notify('${2}_work', '&'), pg_notify('${2}_weights', '&');/" \
      | "$ROOT/tools/pg-embedded.sh" psql "$BUILD/pg" -q -U gannf_student -d "$DB" >/dev/null 2>&1 &
    pids+=($!)
  done
  for k in 1 2; do
    "$WORKER" --db "user=gannf_student dbname=$DB" --name "w$k" --threads 1 --batch-size 16 --no-cache \
      --exit-when-done --quiet >"$TMP/w$k.log" 2>&1 &
  done
  local t0 t1
  t0=$(date +%s.%N)
  "$COORD" run --db "dbname=$DB" --iterations "$ITER" --output-dir "$TMP/out" --sample-interval 0 \
    --checkpoint-interval 0 --quiet >"$TMP/coord.log" 2>&1 || { cat "$TMP/coord.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  for k in ${pids[@]+"${pids[@]}"}; do kill "$k" 2>/dev/null || true; done
  wait 2>/dev/null || true
  awk -v n="$ITER" -v a="$t0" -v b="$t1" 'BEGIN { print n / (b - a) }'
}

# Three runs a round: alone; beside the flood on gannf's channels; beside the
# same flood on channels nobody listens to, which costs the same server and
# CPU time without waking anyone: the difference of the last two is what
# gannf's reaction to the notifications costs, the rest is the flooders' load.
base_all=() flood_all=() idle_all=()
for r in $(seq 1 "$ROUNDS"); do
  b=$(one_run 0 gannf); f=$(one_run "$FLOODERS" gannf); i=$(one_run "$FLOODERS" nobody)
  printf '# round %d: alone %.2f updates/s; beside the flood %.2f; beside a flood nobody listens to %.2f\n' \
    "$r" "$b" "$f" "$i"
  base_all+=("$b"); flood_all+=("$f"); idle_all+=("$i")
done
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { print s / NR }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }
B=$(mean "${base_all[@]}") F=$(mean "${flood_all[@]}") I=$(mean "${idle_all[@]}")
printf 'RESULT iterations=%d rounds=%d flooders=%d alone=%.2f flood=%.2f unheard_flood=%.2f flood_ratio=%.3f reaction_ratio=%.3f\n' \
  "$ITER" "$ROUNDS" "$FLOODERS" "$B" "$F" "$I" "$(ratio "$F" "$B")" "$(ratio "$F" "$I")"
"$ROOT/tools/pg-embedded.sh" psql "$BUILD/pg" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
