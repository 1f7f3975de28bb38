#!/usr/bin/env bash
# What one student login's CPU-burning SQL costs the class (docs/security.md,
# "The server's CPU"). A worker login may run any SELECT of built-in
# functions, and PostgreSQL bounds no session's CPU. This starts a private
# PostgreSQL (tools/pg-embedded.sh) pinned to one core (taskset -c 0), runs
# the same small run (synthetic 32x32, f = 16, 4 units of 16 images, exact
# mean; gannf-coord and two CPU workers of one thread on login gannf_student,
# pinned to core 1) three ways: alone; beside HOGS sessions of another
# admitted login (hog_student), each running a pure-CPU statement (a
# 3000 x 3000 cross join counted, about 0.5 s, nothing spilled to temp
# files) back to back on one connection in database HOG_DB, with the
# coordinator's watch off (--student-sql-limit 0 --worker-call-limit 0); and the same with the
# watch at its default, which shuts the hog out. ROUNDS times; prints each
# run's seconds, the ratios to alone, and what the coordinator said.
# --hog heartbeat: instead of its own SQL, the hog sends a gannf-worker's
# own statement, SELECT gannf.heartbeat($1) for a worker it registered,
# back to back (pgbench -M extended, the same text as a gannf-worker's).
# --hog pipeline: a gannf-worker's own statement (--call: heartbeat, claim,
# why_waiting or training_state, the worker's state query), sent in libpq's
# pipeline mode by tests/call_flood, each session with a worker of its own
# (no round trip per call: the student's machine does not limit the flood).
# The watch counts a gannf-worker's calls too (--worker-call-limit).
#
#   bench/cpu_hog.sh [-b BUILD_DIR] [--iterations N] [--rounds R] [--hogs H] [--hog-db gannf|postgres]
#                    [--hog crossjoin|heartbeat|pipeline] [--call NAME]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
BUILD=build ITER=100 ROUNDS=2 HOGS=4 HOG_DB=gannf HOG=crossjoin CALL=training_state
while [ $# -gt 0 ]; do
  case "$1" in
    -b) BUILD=$2; shift 2 ;;
    --iterations) ITER=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --hogs) HOGS=$2; shift 2 ;;
    --hog-db) HOG_DB=$2; shift 2 ;;
    --hog) HOG=$2; shift 2 ;;
    --call) CALL=$2; shift 2 ;;
    *) echo "cpu_hog.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
COORD=$BUILD/tools/gannf-coord WORKER=$BUILD/tools/gannf-worker
for b in "$COORD" "$WORKER" $([ "$HOG" = pipeline ] && echo "$BUILD/tests/call_flood"); do
  [ -x "$b" ] || { echo "cpu_hog.sh: no $b: cmake --build $BUILD --target gannf-coord gannf-worker" >&2; exit 1; }
done
command -v taskset > /dev/null || { echo "cpu_hog.sh: needs taskset (util-linux)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "cpu_hog.sh: needs 2 cores (the server on one, the class on the other)" >&2; exit 1; }
. "$ROOT/bench/private_pg.sh"
private_pg_start cpu-hog taskset -c 0
DB="host=$sock port=$port dbname=gannf"
lscpu | sed -n 's/^Model name: *//p' | sed 's/^/# CPU: /'
"$ROOT/tools/pg-embedded.sh" psql "$PG/pg" -q -d gannf -c "SELECT gannf_admin.admit_student('hog_student', NULL, 4)" \
  > /dev/null || exit 1
HOGCONN="host=$sock port=$port dbname=$HOG_DB user=hog_student"
echo "# server on core 0, class on core 1; $ITER updates of 4 units of 16 images; hogs: $HOGS sessions of hog_student in database $HOG_DB ($HOG$([ "$HOG" = pipeline ] && echo ": $CALL"))"

one_run() {  # $1: hogs, $2: --student-sql-limit; prints the seconds of ITER updates
  local hogs=$1 limit=$2 t0 t1 w
  "$ROOT/tools/pg-embedded.sh" psql "$PG/pg" -q -d gannf -c "SELECT gannf_admin.admit_student('hog_student')" \
    > /dev/null || exit 1
  local hog_pids=()
  taskset -c 1 "$COORD" init --db "$DB user=gannf_coord" --force --dataset synthetic:8192 --image-size 32 \
    --channels 1 --latent-dim 16 --ngf 16 --ndf 16 --images-per-unit 16 --units-per-update 4 --aggregation mean \
    --spot-check 0 --seed 7 --no-cache --quiet > "$PG/init.log" 2>&1 || { cat "$PG/init.log" >&2; exit 1; }
  if [ "$hogs" -gt 0 ] && [ "$HOG" = pipeline ]; then
    taskset -c 1 "$BUILD/tests/call_flood" --db "$HOGCONN" --sessions "$hogs" --seconds 3600 --call "$CALL" > "$PG/flood.log" 2>&1 &
    hog_pids+=($!)
  elif [ "$hogs" -gt 0 ] && [ "$HOG" = heartbeat ]; then
    local wid
    wid=$(psql -X -At -d "$HOGCONN" -c "SELECT gannf.register_worker('hog', 'cpu', 1, 1000000000, NULL, NULL, 16)") ||
      exit 1
    printf 'SELECT gannf.heartbeat(:wid)' > "$PG/heartbeat.sql"  # no ';': pgbench sends it, and a gannf-worker does not
    "$(pg_config --bindir)/pgbench" -n -M extended -c "$hogs" -T 3600 -D wid="$wid" -P 5 -f "$PG/heartbeat.sql" \
      "$HOGCONN" > "$PG/pgbench.log" 2>&1 &
    hog_pids+=($!)
  elif [ "$hogs" -gt 0 ]; then
    for _ in $(seq 1 "$hogs"); do
      yes "SELECT count(*) FROM generate_series(1, 3000) a, generate_series(1, 3000) b;" |
        psql -X -q -d "$HOGCONN" > /dev/null 2>&1 &
      hog_pids+=($!)
    done
  fi
  for w in 1 2; do
    taskset -c 1 "$WORKER" --db "$DB user=gannf_student" --backend cpu --threads 1 --name "w$w" --exit-when-done \
      > "$PG/w$w.log" 2>&1 &
    pids+=($!)
  done
  sleep 1
  t0=$(date +%s.%N)
  taskset -c 1 "$COORD" run --db "$DB user=gannf_coord" --iterations "$ITER" --sample-interval 0 \
    --checkpoint-interval 0 --output-dir "$PG/out" --student-sql-limit "$limit" --worker-call-limit "$(echo "$limit > 0" | bc)" > "$PG/coord.log" 2>&1 ||
    { tail -5 "$PG/coord.log" >&2; exit 1; }
  [ -n "${CPU_HOG_KEEP:-}" ] && cp "$PG/coord.log" "$CPU_HOG_KEEP/coord-$hogs-$limit.log"; grep -o 'login hog_student.*' "$PG/coord.log" | sed 's/^/# the coordinator: /' >&2 || true
  t1=$(date +%s.%N)
  for p in "${hog_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "generate_series\(1, 3000\)" 2>/dev/null || true
  pkill -f "pgbench -n -M extended" 2>/dev/null || true
  if [ -f "$PG/flood.log" ]; then
    sleep 0.5
    tail -2 "$PG/flood.log" | sed 's/^/# the hog: /' >&2
    rm -f "$PG/flood.log"
  fi
  [ -f "$PG/pgbench.log" ] && grep '^progress' "$PG/pgbench.log" | tail -1 | sed 's/^/# the hog (pgbench): /' >&2
  rm -f "$PG/pgbench.log"
  "$ROOT/tools/pg-embedded.sh" psql "$PG/pg" -q -c \
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ('gannf_student', 'hog_student')" \
    > /dev/null 2>&1 || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
  echo "$t1 - $t0" | bc
}

for r in $(seq 1 "$ROUNDS"); do
  alone=$(one_run 0 0.3)
  open=$(one_run "$HOGS" 0)
  watched=$(one_run "$HOGS" 0.3)
  printf 'round %d: alone %.1f s; beside %d hog session(s): watch off %.1f s (%.2fx), watch on %.1f s (%.2fx)\n' \
    "$r" "$alone" "$HOGS" "$open" "$(echo "$open / $alone" | bc -l)" "$watched" "$(echo "$watched / $alone" | bc -l)"
done
