#!/usr/bin/env bash
# The main job: install what is missing, build, start a private PostgreSQL in
# ./run/pg, and train the DCGAN on Fashion-MNIST (Debian's
# dataset-fashion-mnist) at 32x32 as a small cluster on this machine: one
# gannf-coord and two CPU gannf-workers, meeting only in the database.
# Samples, losses and checkpoints go to ./run/fashion-mnist-cluster (-2, -3, ...
# for later runs: earlier results are kept).
#
#   tools/run.sh                   the cluster job, ITERATIONS updates (a few minutes on 2 cores)
#   tools/run.sh --local [opts]    the one-machine job (gannf-train, 2 epochs); options pass through
#   tools/run.sh --dash            the dashboard of the run in run/pg, until Ctrl-C
#
# The cluster job also starts the class's dashboard (gannf-dash, logged in as
# the students' login) and prints its address; it stops with the job.
#
# Environment: ITERATIONS (default 1000), WORKERS (2), WIDTH (ngf = ndf, default
# 32), UNIT (images per work unit, 64), UNITS (units per update, 2), OUT, DATA,
# PGDIR (run/pg), DASH_PORT (8765; 0 for any free port, or DASH=0 for no
# dashboard), GANNF_BUILD_DIR (build). Ctrl-C stops everything cleanly
# (workers hand their units back, the coordinator keeps what it committed,
# PostgreSQL stops).
#
# Why WIDTH 32 and not the reference's 64: on two CPU cores the reference
# DCGAN computes ~280 images/s, so a few minutes buy only ~200 updates, which
# give blobs; at width 32 it is ~3x faster and its blobs 4x smaller, and 1000
# updates of 128 images give recognisable garments. WIDTH=64 trains the
# reference architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
BUILD=${GANNF_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${GANNF_CMAKE_ARGS:-} >/dev/null
DATA=${DATA:-/usr/share/datasets/fashion-mnist}

if [ "${1:-}" = "--local" ]; then
  shift
  cmake --build "$BUILD" -j"$(nproc)" --target gannf-train gannf-info >/dev/null
  OUT=${OUT:-run/fashion-mnist}
  # sed reads it all (head would close the pipe while gannf-info still runs its
  # GPU self-check, and pipefail would stop here); a GPU that fails the check
  # does not stop a CPU run.
  { "$BUILD/tools/gannf-info" || true; } | sed -n '1,2p'
  "$BUILD/tools/gannf-train" --dataset "$DATA" --image-size 32 --epochs 2 \
    --sample-interval 200 --checkpoint-interval 500 --output-dir "$OUT" "$@"
  echo
  echo "samples:     $OUT/samples/$(cat "$OUT/samples/latest.txt" 2>/dev/null)"
  echo "loss curve:  $OUT/loss-curve.png"
  echo "checkpoint:  $(cat "$OUT/checkpoints/latest" 2>/dev/null | sed "s|^|$OUT/checkpoints/|")"
  exit 0
fi
PGDIR=${PGDIR:-run/pg}
case "$PGDIR" in /*) ;; *) PGDIR="$PWD/$PGDIR" ;; esac  # relative to the repository; absolute as given
DASH_PORT=${DASH_PORT:-8765}
if [ "${1:-}" = "--dash" ]; then
  [ $# -eq 1 ] || { echo "run.sh: --dash takes no other arguments" >&2; exit 2; }
  cmake --build "$BUILD" -j"$(nproc)" --target gannf-dash >/dev/null
  [ -f "$PGDIR/pg_service.conf" ] || { echo "run.sh: no run in $PGDIR yet: tools/run.sh makes one" >&2; exit 1; }
  tools/pg-embedded.sh start "$PGDIR"
  trap 'tools/pg-embedded.sh stop "$PGDIR" || true' EXIT
  PGSERVICEFILE="$PGDIR/pg_service.conf" PGSERVICE=gannf_worker "$BUILD/tools/gannf-dash" --port "$DASH_PORT" || true
  exit 0
fi
[ $# -eq 0 ] || { echo "run.sh: unknown arguments: $* (the cluster job takes none; tools/run.sh --local [gannf-train options], tools/run.sh --dash)" >&2; exit 2; }

DASH=${DASH:-1}
targets=(gannf-coord gannf-worker gannf-info)
if [ "$DASH" = 1 ]; then targets+=(gannf-dash); fi
cmake --build "$BUILD" -j"$(nproc)" --target "${targets[@]}" >/dev/null
# Earlier results are kept: without OUT, each run gets the first free folder
# of run/fashion-mnist-cluster, -2, -3, ...; an OUT that holds files is refused.
if [ -n "${OUT:-}" ]; then
  if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    echo "run.sh: $OUT holds an earlier run's results; move it away or set OUT to a new folder" >&2
    exit 2
  fi
else
  OUT=run/fashion-mnist-cluster
  n=1
  while [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; do n=$((n + 1)); OUT=run/fashion-mnist-cluster-$n; done
fi
ITERATIONS=${ITERATIONS:-1000}
WORKERS=${WORKERS:-2}
WIDTH=${WIDTH:-32}
UNIT=${UNIT:-64}
UNITS=${UNITS:-2}
COORD=$BUILD/tools/gannf-coord
WORKER=$BUILD/tools/gannf-worker

# One core per worker (and the coordinator and PostgreSQL fit in the gaps):
# libgomp's spinning makes oversubscribed OpenMP teams crawl, so waits are
# passive and each worker has one thread.
export OMP_WAIT_POLICY=PASSIVE

pids=()
pg_started=0
start=
ended=0
# What was done, from the losses the coordinator wrote (one row per update),
# not from what was asked: true after Ctrl-C too.
summary() {
  [ -n "$start" ] || return 0
  local n_done=0
  if [ -f "$OUT/losses.csv" ]; then n_done=$(( $(wc -l < "$OUT/losses.csv") - 1 )); fi
  local why=""
  if [ "$n_done" -lt "$ITERATIONS" ]; then
    why=" (stopped early: Ctrl-C, 'gannf-coord stop' or an error; the last checkpoint is in $OUT/checkpoints)"
  fi
  echo
  echo "run.sh: $n_done of $ITERATIONS iterations done in $(( $(date +%s) - start )) s$why"
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true   # workers release their units, the coordinator stops
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$ended" = 0 ]; then summary; fi
  fi
  if [ "$pg_started" = 1 ]; then tools/pg-embedded.sh stop "$PGDIR" || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{ "$BUILD/tools/gannf-info" || true; } | sed -n '1,2p'  # not head: see above
tools/pg-embedded.sh start "$PGDIR"
pg_started=1
# libpq's service file, written by pg-embedded.sh: [gannf] is the
# coordinator's login, [gannf_worker] the students'.
export PGSERVICEFILE="$PGDIR/pg_service.conf"

mkdir -p "$OUT/logs"
echo "run.sh: results go to $OUT"
# A fresh run each time (--force replaces the previous one in run/pg). Units
# of 64 images, 2 per update: 128 images per update, 468 updates per epoch.
PGSERVICE=gannf "$COORD" init --force --dataset "$DATA" --image-size 32 --ngf "$WIDTH" --ndf "$WIDTH" \
  --images-per-unit "$UNIT" --units-per-update "$UNITS" --seed 1 --lease 120

start=$(date +%s)
PGSERVICE=gannf "$COORD" run --iterations "$ITERATIONS" --output-dir "$OUT" \
  --sample-interval 50 --checkpoint-interval 200 &
coord_pid=$!
pids+=("$coord_pid")
workers=()
for i in $(seq 1 "$WORKERS"); do
  PGSERVICE=gannf_worker "$WORKER" --backend cpu --name "local-$i" --threads 1 --batch-size 64 \
    --exit-when-done --quiet >"$OUT/logs/worker-$i.log" 2>&1 &
  pids+=("$!")
  workers+=("$!")
done
echo "run.sh: coordinator and $WORKERS workers started (worker logs in $OUT/logs/)"
if [ "$DASH" = 1 ]; then
  # The class's dashboard, as a student would open it: with the worker login.
  PGSERVICE=gannf_worker "$BUILD/tools/gannf-dash" --port "$DASH_PORT" --quiet >"$OUT/logs/dash.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 50); do grep -q '^gannf-dash: http' "$OUT/logs/dash.log" 2>/dev/null && break; sleep 0.1; done
  if grep -q '^gannf-dash: http' "$OUT/logs/dash.log"; then
    echo "run.sh: the dashboard: $(sed -n 's/^gannf-dash: \(http[^ ]*\).*/\1/p' "$OUT/logs/dash.log" | head -n1)  (open it in a browser)"
  else
    echo "run.sh: the dashboard did not start (training goes on): $(tail -n1 "$OUT/logs/dash.log")" >&2
  fi
fi

# The coordinator waits for workers as long as it takes (in a classroom they
# come and go); here, if every worker has failed, nobody is coming.
failed=0
while kill -0 "$coord_pid" 2>/dev/null; do
  alive=()
  for p in "${workers[@]}"; do
    if kill -0 "$p" 2>/dev/null; then alive+=("$p"); else wait "$p" || failed=$((failed + 1)); fi
  done
  workers=(${alive[@]+"${alive[@]}"})
  if [ ${#workers[@]} -eq 0 ] && [ "$failed" -gt 0 ]; then
    echo "run.sh: all workers exited, $failed with an error; the end of their logs:" >&2
    tail -n 3 "$OUT"/logs/worker-*.log >&2
    exit 1
  fi
  sleep 1
done
wait "$coord_pid"
ended=1
summary
PGSERVICE=gannf "$COORD" status || true
echo
echo "samples:     $OUT/samples/$(cat "$OUT/samples/latest.txt" 2>/dev/null)"
echo "loss curve:  $OUT/loss-curve.png"
echo "losses:      $OUT/losses.csv"
echo "checkpoint:  $(cat "$OUT/checkpoints/latest" 2>/dev/null | sed "s|^|$OUT/checkpoints/|")"
if [ "$DASH" = 1 ]; then echo "dashboard:   stopped with the job; tools/run.sh --dash shows this run again"; fi
