#!/usr/bin/env bash
# A GPU worker in a real cluster, on the GPU machine (issue 16, item 4):
# PostgreSQL, libpq and its headers from the pgserver wheel in build-devdeps/
# (tools/device-check.sh --fetch-deps puts it there; the GPU machine has no
# PostgreSQL and no network), gannf-coord and gannf-worker built against that
# libpq, a private server started from the wheel's binaries
# (tools/pg-embedded.sh with GANNF_PG_BINDIR), then two checks:
#
#  1. distributed = local with a GPU worker in the mix: one update of 4 units
#     of 64 Fashion-MNIST images, computed by a GPU worker (--backend cuda)
#     and a CPU worker together (the run paused until both are registered,
#     both throttled so that neither takes every unit, as
#     Cluster.DistributedEqualsLocal), against one local gannf-train step on
#     the same 256 images (--steps 1, micro-batches of 32 on both sides),
#     compared tensor by tensor by tools/compare_checkpoints.py: per tensor
#     relative L2 <= 1e-4 (GANNF_CLUSTER_RTOL), Adam's near-zero gradients
#     held to two Adam steps (compare_checkpoints.py's header says why);
#  2. a training run: the same two workers, Fashion-MNIST 32x32x1, reference
#     widths (f = 64), units of 64 images, 8 per update, both workers on
#     --sum-units auto (the coordinator shares each update's units by measured
#     speed), spot checks on (--spot-check 0.05: the coordinator recomputes the
#     drawn submissions on its CPU at the GPU tolerance, 1e-3), up to 300
#     updates or 75 s (less when the stage's limit leaves less). Reported:
#     updates done; units, uploads and images per worker; the GPU worker's
#     uploads used, rejected (with the reasons), lost
#     and refused at submission; how many of them the spot checks drew
#     (tools/spot_check_draws.py); its images/s through the database (its
#     used images over the run's time) and computing (over its units' compute
#     seconds) against gannf-train's on the same back end and settings.
#
# Any failure prints one line "FAILED (cluster): what" into the report and
# makes the exit status 1: the build, the server, a worker that exits with an
# error (the GPU self-check), distributed != local, a worker that contributed
# nothing, a GPU submission rejected. Exit 3: skipped (no wheel, no data).
#
#   tools/device-cluster.sh [--time-limit S]     (default 240 s; device-check passes its stage_timeout, 210 s)
#
# Times on the H100 machine (16 cores), estimated, never measured yet: build of
# the cluster targets 20-40 s, server 5 s, distributed = local 10-25 s, the run
# up to 75 s, gannf-train for the comparison 5 s: 2-2.5 minutes. Measured on
# the 2-core development machine with cpu standing in for the GPU: configure
# and build 110 s from nothing, 30 s when built; server 2-6 s; distributed =
# local 5 s; 17 updates in a 40 s run.
#
# Environment:
#   GANNF_CLUSTER_BUILD        build folder (default GANNF_DEVICE_BUILD, else build-device);
#                              an existing one (device-check's) is reconfigured with the
#                              wheel's libpq; a new one is configured from nothing with
#                              GANNF_CLUSTER_CMAKE_ARGS added (e.g. -DGANNF_CUDA=OFF)
#   GANNF_CLUSTER_GPU_BACKEND  the GPU worker's --backend (default cuda; cpu stands in for
#                              it on a machine without a GPU)
#   GANNF_CLUSTER_GPU_WORKER   the program run as the GPU worker (default the build's
#                              gannf-worker); it gets gannf-worker's arguments
#   GANNF_CLUSTER_DATA         Fashion-MNIST folder (default build-devdeps/fashion-mnist,
#                              else /usr/share/datasets/fashion-mnist)
#   GANNF_CLUSTER_RTOL         distributed = local bound (default 1e-4)
#   GANNF_CLUSTER_IMAGE_SIZE, _WIDTH, _UNIT, _UNITS, _SPOT, _ITERATIONS, _RUN_S,
#   _TRAIN_STEPS               the run's settings (32, 64, 64, 8, 0.05, 300, 75, 300)
#   GANNF_CLUSTER_FORCE_DEVDEPS=1  zstd and yaml-cpp from build-devdeps/ even where
#                              the machine has them (to test that path)
#   GANNF_PG_USER              as root: the user that runs the server (default postgres
#                              where it exists, else nobody; nothing is installed)
#   OUT, GANNF_LD              as device-check: logs into OUT (else BUILD/device-logs),
#                              GANNF_LD the library path of the gannf programs
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
T0=$(date +%s)
LIMIT=${GANNF_CLUSTER_TIME_S:-240}
if [ "${1:-}" = "--time-limit" ] && [ -n "${2:-}" ]; then LIMIT=$2; shift 2; fi
if [ $# -gt 0 ]; then sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; fi

DEPS_DIR=$ROOT/build-devdeps
BUILD=${GANNF_CLUSTER_BUILD:-${GANNF_DEVICE_BUILD:-build-device}}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
mkdir -p "$BUILD"
LOGS=${OUT:-$BUILD/device-logs}
mkdir -p "$LOGS"
REPORT=$LOGS/device-report.txt
SUMMARY=$LOGS/cluster-summary.txt   # KEY=value lines for device-check's table
: >"$SUMMARY"
W=$BUILD/cluster-work
rm -rf "$W"
mkdir -p "$W"
STATUS=0

say() { echo "$*" | tee -a "$REPORT"; }
fail() { STATUS=1; say "  FAILED (cluster): $*"; }
sum() { echo "$1=$2" >>"$SUMMARY"; }
elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((LIMIT - $(elapsed))); }
with_libs() { LD_LIBRARY_PATH="${GANNF_LD:-}${GANNF_LD:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}" "$@"; }
# For `bg_libs PROGRAM ... &`: the background subshell becomes the program
# (exec), so that $! is the program's own id, which the signals below reach.
bg_libs() { LD_LIBRARY_PATH="${GANNF_LD:-}${GANNF_LD:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}" exec "$@"; }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
tl() { local t; t=$(min "$1" "$(left)"); [ "$t" -ge 5 ] || t=5; echo "$t"; }  # a step's timeout: $1, or what is left

GPU_BE=${GANNF_CLUSTER_GPU_BACKEND:-cuda}
RTOL=${GANNF_CLUSTER_RTOL:-1e-4}
S=${GANNF_CLUSTER_IMAGE_SIZE:-32}
WIDTH=${GANNF_CLUSTER_WIDTH:-64}
UNIT=${GANNF_CLUSTER_UNIT:-64}
UNITS=${GANNF_CLUSTER_UNITS:-8}
SPOT=${GANNF_CLUSTER_SPOT:-0.05}
ITERATIONS=${GANNF_CLUSTER_ITERATIONS:-300}
RUN_S=${GANNF_CLUSTER_RUN_S:-75}
TRAIN_STEPS=${GANNF_CLUSTER_TRAIN_STEPS:-300}
RUN_SEED=1
NPROC=$(nproc)
CPU_THREADS=$(( NPROC / 2 > 0 ? NPROC / 2 : 1 ))
GPU_THREADS=$(min 2 "$NPROC")
# Waits are passive: oversubscribed OpenMP teams (the CPU worker's and the
# coordinator's spot checks) crawl when they spin (tools/run.sh).
export OMP_WAIT_POLICY=PASSIVE

say ""
say "cluster: gpu-worker (--backend $GPU_BE) and cpu-worker (--backend cpu) through PostgreSQL (tools/device-cluster.sh, limit ${LIMIT} s)"

# ---- processes: started here, ended here by their ids ---------------------------
# The workers and the coordinator run as background jobs of this script; at
# its end, those still running (`jobs -pr`: this shell's own, never an id
# that a finished one left free) get SIGTERM, then SIGKILL.
PGDIR=$BUILD/cluster-pg
PG_STARTED=0
PGBIN=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local p
  for p in $(jobs -pr); do kill -TERM "$p" 2>/dev/null; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do [ -z "$(jobs -pr)" ] && break; sleep 0.5; done
  for p in $(jobs -pr); do kill -KILL "$p" 2>/dev/null; done
  if [ "$PG_STARTED" = 1 ]; then
    GANNF_PG_BINDIR=$PGBIN tools/pg-embedded.sh stop "$PGDIR" >>"$LOGS/cluster-pg.log" 2>&1
  fi
}
trap cleanup EXIT
trap 'say "  cluster: stopped by a signal after $(elapsed) s"; exit 1' INT TERM
ended() { ! kill -0 "$1" 2>/dev/null; }
wait_pid() {  # $1 pid, $2 seconds: WAIT_RC = its exit status, or "running" (no subshell: `wait` needs this one)
  local i
  for ((i = 0; i < $2 * 5; i++)); do ended "$1" && break; sleep 0.2; done
  if ended "$1"; then wait "$1"; WAIT_RC=$?; else WAIT_RC=running; fi
}

# ---- inputs -----------------------------------------------------------------------
WHEEL=$(find "$DEPS_DIR" -maxdepth 1 -name 'pgserver-*.whl' 2>/dev/null | sort -V | tail -1)
if [ -z "$WHEEL" ]; then
  say "  cluster: skipped: no pgserver wheel in build-devdeps/ (tools/device-check.sh --fetch-deps puts it there)"
  sum CLUSTER "skipped (no pgserver wheel)"
  exit 3
fi
SRC_DATA=${GANNF_CLUSTER_DATA:-}
if [ -z "$SRC_DATA" ]; then
  for d in "$DEPS_DIR/fashion-mnist" /usr/share/datasets/fashion-mnist; do
    ls "$d"/train-images-idx3-ubyte* >/dev/null 2>&1 && { SRC_DATA=$d; break; }
  done
fi
if [ -z "$SRC_DATA" ] || ! ls "$SRC_DATA"/train-images-idx3-ubyte* >/dev/null 2>&1; then
  say "  cluster: skipped: no Fashion-MNIST (train-images-idx3-ubyte) in build-devdeps/fashion-mnist (--fetch-deps)"
  sum CLUSTER "skipped (no Fashion-MNIST)"
  exit 3
fi
# The programs pack their dataset cache into the dataset's folder: a folder of
# links in the build folder, so that the carried one stays as it came.
DATA=$BUILD/fashion-mnist
mkdir -p "$DATA"
for f in "$SRC_DATA"/train-*-idx*-ubyte*; do ln -sf "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$DATA/"; done

# Who runs the server: PostgreSQL refuses root, and the GPU machine may have no
# `postgres` user; `nobody` needs nothing installed.
if [ "$(id -u)" -eq 0 ]; then
  if [ -z "${GANNF_PG_USER:-}" ]; then
    if id -u postgres >/dev/null 2>&1; then GANNF_PG_USER=postgres
    elif id -u nobody >/dev/null 2>&1; then GANNF_PG_USER=nobody
    else
      fail "running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL (which refuses root)"
      exit 1
    fi
  fi
  export GANNF_PG_USER
  command -v runuser >/dev/null || { fail "running as root without runuser (util-linux) to start PostgreSQL as $GANNF_PG_USER"; exit 1; }
fi

# The wheel (a zip: pgserver/pginstall/{bin,lib,include,share}, pgserver.libs):
# unpacked with Python's zipfile (or unzip), which keep no file modes.
unpack_wheel() {  # $1: folder
  rm -rf "$1" && mkdir -p "$1" || return 1
  if ! python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$WHEEL" "$1" 2>/dev/null; then
    command -v unzip >/dev/null && unzip -q -o "$WHEEL" -d "$1" || return 1
  fi
  chmod -R a+rX "$1" && chmod a+x "$1"/pgserver/pginstall/bin/*
}
PGW=$BUILD/pgwheel
unpack_wheel "$PGW" || { fail "cannot unpack $(basename "$WHEEL") (python3's zipfile or unzip)"; exit 1; }
if [ "$(id -u)" -eq 0 ] && [ "$GANNF_PG_USER" != root ] &&
   ! runuser -u "$GANNF_PG_USER" -- test -x "$PGW/pgserver/pginstall/bin/postgres" 2>/dev/null; then
  # A parent of the build folder (/root, say) is closed to the server's user.
  rm -rf "$PGW"
  PGW=/tmp/gannf-pgwheel-$(printf %s "$BUILD" | md5sum | cut -c1-12)
  unpack_wheel "$PGW" || { fail "cannot unpack the wheel into $PGW"; exit 1; }
fi
PGI=$PGW/pgserver/pginstall
PGBIN=$PGI/bin
PG_VERSION=$("$PGBIN/postgres" --version 2>/dev/null | awk '{print $3}')
[ -n "$PG_VERSION" ] || { fail "the wheel's postgres does not run: $("$PGBIN/postgres" --version 2>&1 | head -1)"; exit 1; }

# ---- build against the wheel's libpq ----------------------------------------------------
TB=$(date +%s)
PQ_ARGS=(-DPostgreSQL_INCLUDE_DIR="$PGI/include" -DPostgreSQL_TYPE_INCLUDE_DIR="$PGI/include"
         -DPostgreSQL_LIBRARY="$PGI/lib/libpq.so" -DPostgreSQL_LIBRARY_RELEASE="$PGI/lib/libpq.so")
FRESH_ARGS=()
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  FRESH_ARGS=(-DCMAKE_BUILD_TYPE=Release)
  command -v ninja >/dev/null && FRESH_ARGS+=(-G Ninja)
  # shellcheck disable=SC2206  # split on purpose: a list of -D arguments
  FRESH_ARGS+=(${GANNF_CLUSTER_CMAKE_ARGS:-})
fi
configure() {  # extra arguments
  with_libs cmake -S . -B "$BUILD" ${FRESH_ARGS[@]+"${FRESH_ARGS[@]}"} "${PQ_ARGS[@]}" "$@" >"$LOGS/cluster-configure.log" 2>&1
}
DEVDEP_NOTE=""
CDEPS=$BUILD/devdeps-cluster
CDEPS_LIB=$CDEPS/usr/lib/x86_64-linux-gnu
cluster_devdeps() {  # zstd and yaml-cpp from build-devdeps/, unpacked here (used by this build only)
  local d n=0
  mkdir -p "$CDEPS" || return 1
  for d in "$DEPS_DIR"/libzstd-dev_*.deb "$DEPS_DIR"/libzstd1_*.deb "$DEPS_DIR"/libyaml-cpp-dev_*.deb \
           "$DEPS_DIR"/libyaml-cpp0*.deb; do
    [ -f "$d" ] || continue
    dpkg-deb -x "$d" "$CDEPS" || return 1
    n=$((n + 1))
  done
  [ "$n" -gt 0 ]
}
ok=0
if [ "${GANNF_CLUSTER_FORCE_DEVDEPS:-0}" != 1 ] && configure &&
   ! grep -qE "✗ (yaml-cpp|zstd)" "$LOGS/cluster-configure.log"; then
  ok=1
elif cluster_devdeps; then
  GANNF_LD=$CDEPS_LIB${GANNF_LD:+:$GANNF_LD}
  extra=()
  if [ "${GANNF_CLUSTER_FORCE_DEVDEPS:-0}" = 1 ] || grep -q "✗ zstd" "$LOGS/cluster-configure.log" 2>/dev/null; then
    extra+=(-DGANNF_ZSTD_INCLUDE="$CDEPS/usr/include" -DGANNF_ZSTD="$CDEPS_LIB/libzstd.so")
    DEVDEP_NOTE+=" zstd"
  fi
  if [ "${GANNF_CLUSTER_FORCE_DEVDEPS:-0}" = 1 ] || grep -q "✗ yaml-cpp" "$LOGS/cluster-configure.log" 2>/dev/null; then
    extra+=(-Dyaml-cpp_DIR="$CDEPS_LIB/cmake/yaml-cpp")
    DEVDEP_NOTE+=" yaml-cpp"
  fi
  [ -f "$LOGS/cluster-configure.log" ] && cp "$LOGS/cluster-configure.log" "$LOGS/cluster-configure-first.log"
  configure "${extra[@]}" && ok=1
fi
if [ $ok = 0 ] || ! grep -q "✓ libpq" "$LOGS/cluster-configure.log" ||
   grep -qE "✗ (yaml-cpp|zstd|libpq)" "$LOGS/cluster-configure.log"; then
  fail "configure against the wheel's libpq: $(grep -E "✗ (libpq|yaml-cpp|zstd)|CMake Error" "$LOGS/cluster-configure.log" | head -2 | tr '\n' ' ')(cluster-configure.log)"
  exit 1
fi
if ! with_libs timeout "$(min 300 "$(left)")" cmake --build "$BUILD" -j"$NPROC" --target gannf-coord gannf-worker gannf-train \
     >"$LOGS/cluster-build.log" 2>&1; then
  fail "build of gannf-coord, gannf-worker, gannf-train: $(grep -m2 -E "error|Error" "$LOGS/cluster-build.log" | tr '\n' ' ')(cluster-build.log)"
  exit 1
fi
COORD=$BUILD/tools/gannf-coord
WORKER=$BUILD/tools/gannf-worker
TRAIN=$BUILD/tools/gannf-train
GPU_WORKER=${GANNF_CLUSTER_GPU_WORKER:-$WORKER}
PQ_LOADED=$(with_libs ldd "$WORKER" 2>/dev/null | awk '/libpq/ {print $3}')
say "  built against PostgreSQL $PG_VERSION's libpq from $(basename "$WHEEL") in $(($(date +%s) - TB)) s${DEVDEP_NOTE:+; from build-devdeps/:$DEVDEP_NOTE}; gannf-worker loads ${PQ_LOADED:-no libpq?}"

# ---- the server -------------------------------------------------------------------------
export PGSERVICEFILE=$PGDIR/pg_service.conf
GANNF_PG_BINDIR=$PGBIN GANNF_PG_NOSYNC=1 tools/pg-embedded.sh destroy "$PGDIR" >"$LOGS/cluster-pg.log" 2>&1
if ! GANNF_PG_BINDIR=$PGBIN GANNF_PG_NOSYNC=1 timeout "$(tl 90)" tools/pg-embedded.sh start "$PGDIR" >>"$LOGS/cluster-pg.log" 2>&1; then
  fail "PostgreSQL $PG_VERSION from the wheel did not start: $(grep -v '^$' "$LOGS/cluster-pg.log" | tail -1) (cluster-pg.log)"
  exit 1
fi
PG_STARTED=1
say "  PostgreSQL $PG_VERSION from the wheel running${GANNF_PG_USER:+ as user $GANNF_PG_USER} ($(elapsed) s into the stage)"
psql_as() {  # $1: role, $2: database, then psql arguments
  local role=$1 db=$2
  shift 2
  "$PGBIN/psql" -X -q -At -F '|' -v ON_ERROR_STOP=1 "service=gannf user=$role dbname=$db" "$@"
}
q() { psql_as gannf_coord "$@"; }  # $1: database, then -c SQL
if ! psql_as postgres postgres -c "CREATE DATABASE gannf_dl OWNER gannf_coord" >>"$LOGS/cluster-pg.log" 2>&1 ||
   ! q gannf -c "SELECT gannf_admin.admit_student('gpu_student', NULL, 8)" >>"$LOGS/cluster-pg.log" 2>&1; then
  fail "database or GPU login not created: $(tail -1 "$LOGS/cluster-pg.log") (cluster-pg.log)"
  exit 1
fi

# The two workers: $1 database, $2 log, then extra arguments. The GPU one logs
# in as gpu_student, the CPU one as gannf_student: two logins, as two students.
GPU_PID=""
CPU_PID=""
start_gpu_worker() {
  local db=$1 log=$2
  shift 2
  bg_libs "$GPU_WORKER" --backend "$GPU_BE" --db "service=gannf_worker user=gpu_student dbname=$db" --name gpu-worker \
    --threads "$GPU_THREADS" --poll-interval 0.2 --exit-when-done "$@" >"$log" 2>&1 &
  GPU_PID=$!
}
start_cpu_worker() {
  local db=$1 log=$2
  shift 2
  bg_libs "$WORKER" --backend cpu --db "service=gannf_worker dbname=$db" --name cpu-worker \
    --threads "$CPU_THREADS" --poll-interval 0.2 --exit-when-done "$@" >"$log" 2>&1 &
  CPU_PID=$!
}
stop_workers() {  # after the coordinator: --exit-when-done ends them; else SIGTERM (units handed back)
  local p
  for p in "$GPU_PID" "$CPU_PID"; do
    [ -n "$p" ] || continue
    wait_pid "$p" 20
    if [ "$WAIT_RC" = running ]; then kill -TERM "$p" 2>/dev/null; wait_pid "$p" 15; fi
    if [ "$p" = "$GPU_PID" ]; then GPU_RC=$WAIT_RC; else CPU_RC=$WAIT_RC; fi
  done
}
last_line() { grep -v '^$' "$1" 2>/dev/null | tail -1 | cut -c1-200; }

# ---- 1. distributed = local with the GPU worker in the mix ----------------------------
DL_UNITS=4
DL_UNIT=64
DL_MICRO=32
DL_SEED=7
DL_ARGS=(--dataset "$DATA" --image-size "$S" --channels 1 --latent-dim 100 --ngf "$WIDTH" --ndf "$WIDTH" --seed "$DL_SEED")
TD=$(date +%s)
DL="not run"
dl_check() {
  local db=gannf_dl rc
  if ! with_libs timeout "$(tl 120)" "$COORD" init --db "service=gannf dbname=$db" "${DL_ARGS[@]}" --images-per-unit "$DL_UNIT" \
       --units-per-update "$DL_UNITS" --aggregation mean --spot-check 0 --quiet >"$LOGS/cluster-dl-init.log" 2>&1 ||
     ! with_libs "$COORD" pause --db "service=gannf dbname=$db" >>"$LOGS/cluster-dl-init.log" 2>&1; then
    fail "distributed = local: gannf-coord init: $(last_line "$LOGS/cluster-dl-init.log")"
    return
  fi
  # Both wait, registered, while the run is paused; throttled so that neither
  # takes all the units once the coordinator resumes it.
  start_gpu_worker $db "$LOGS/cluster-dl-gpu-worker.log" --batch-size "$DL_MICRO" --throttle-ms 300
  start_cpu_worker $db "$LOGS/cluster-dl-cpu-worker.log" --batch-size "$DL_MICRO" --throttle-ms 300
  local i
  for ((i = 0; i < 5 * $(tl 60); i++)); do
    [ "$(q $db -c "SELECT count(*) FROM gannf.workers" 2>/dev/null)" = 2 ] && break
    if ended "$GPU_PID" || ended "$CPU_PID"; then break; fi
    sleep 0.2
  done
  if [ "$(q $db -c "SELECT count(*) FROM gannf.workers" 2>/dev/null)" != 2 ]; then
    ended "$GPU_PID" && fail "gpu-worker (--backend $GPU_BE) exited before registering: $(last_line "$LOGS/cluster-dl-gpu-worker.log")"
    ended "$CPU_PID" && fail "cpu-worker exited before registering: $(last_line "$LOGS/cluster-dl-cpu-worker.log")"
    [ $STATUS = 1 ] || fail "distributed = local: the workers did not register in time"
    return
  fi
  sleep 0.5  # both past their first claim, listening
  GPU_SELF_CHECK=$(grep -m1 -o "self-check.*" "$LOGS/cluster-dl-gpu-worker.log" | cut -c1-150)
  with_libs timeout "$(tl 120)" "$COORD" run --db "service=gannf dbname=$db" --iterations 1 --sample-interval 0 \
    --checkpoint-interval 0 --output-dir "$W/dl-cluster" >"$LOGS/cluster-dl-coord.log" 2>&1
  rc=$?
  stop_workers
  if [ $rc != 0 ]; then fail "distributed = local: gannf-coord run exit $rc: $(last_line "$LOGS/cluster-dl-coord.log")"; return; fi
  [ "$GPU_RC" = 0 ] || fail "distributed = local: gpu-worker (--backend $GPU_BE) exit $GPU_RC: $(last_line "$LOGS/cluster-dl-gpu-worker.log")"
  [ "$CPU_RC" = 0 ] || fail "distributed = local: cpu-worker exit $CPU_RC: $(last_line "$LOGS/cluster-dl-cpu-worker.log")"
  local per
  per=$(q $db -c "SELECT w.name || ' ' || count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                  WHERE s.iteration = 0 AND s.state = 'used' GROUP BY w.name ORDER BY w.name" | paste -sd, - | sed 's/,/, /g')
  DL_PER=${per:-none}
  if [ "$(q $db -c "SELECT count(DISTINCT worker_id) FROM gannf.submissions WHERE iteration = 0 AND state = 'used'")" != 2 ]; then
    fail "distributed = local: the update's units were not computed by both workers (used: ${per:-none}); the check did not mix them"
  fi
  # The local step: the same K·B images in micro-batches of the same size, on the CPU.
  with_libs timeout "$(tl 120)" "$TRAIN" --backend cpu --threads "$CPU_THREADS" "${DL_ARGS[@]}" --batch-size $((DL_UNITS * DL_UNIT)) \
    --micro-batch "$DL_MICRO" --steps 1 --sample-interval 0 --checkpoint-interval 0 --output-dir "$W/dl-local" \
    >"$LOGS/cluster-dl-local.log" 2>&1 || { fail "distributed = local: gannf-train --steps 1: $(last_line "$LOGS/cluster-dl-local.log")"; return; }
  python3 tools/compare_checkpoints.py "$W/dl-local/checkpoints/step-00000001" "$W/dl-cluster/checkpoints/step-00000001" \
    --rtol "$RTOL" --losses "$W/dl-local/losses.csv" "$W/dl-cluster/losses.csv" >"$LOGS/cluster-dl-compare.log" 2>&1
  rc=$?
  DL_RESULT=$(grep "^RESULT" "$LOGS/cluster-dl-compare.log")
  local worst tensor sens
  worst=$(sed -n 's/.* worst_rel_l2=\([^ ]*\).*/\1/p' <<<"$DL_RESULT")
  tensor=$(sed -n 's/.* worst_tensor=\([^ ]*\).*/\1/p' <<<"$DL_RESULT")
  sens=$(sed -n 's/.* adam_sensitive=\([^ ]*\) .*adam_sensitive_max_lr=\([^ ]*\).*/\1 weights with |g| < 100 eps within \2 lr/p' <<<"$DL_RESULT")
  if [ $rc = 0 ]; then
    DL="ok"
    say "  distributed = local: ok: 1 update of $DL_UNITS units x $DL_UNIT images (used: $DL_PER) against gannf-train --steps 1 on the same $((DL_UNITS * DL_UNIT)) images: worst tensor ${worst:-?} relative L2 (${tensor:-?}) <= $RTOL; ${sens:-?}"
  else
    DL="FAILED"
    fail "distributed != local (bound $RTOL): $(grep -m2 "FAILED:" "$LOGS/cluster-dl-compare.log" | sed 's/^ *FAILED: //' | paste -sd';' - | sed 's/;/; /g') [worst ${worst:-?} ${tensor:-}; units used: $DL_PER] (cluster-dl-compare.log)"
  fi
  sum CLUSTER_DL_WORST "${worst:-}"
}
DL_PER=""
GPU_SELF_CHECK=""
if [ "$(left)" -lt 60 ]; then
  say "  distributed = local: skipped (the stage's time is spent)"
else
  dl_check
fi
sum CLUSTER_DL "$DL"
GPU_PID=""
CPU_PID=""
say "    ($(($(date +%s) - TD)) s${GPU_SELF_CHECK:+; gpu-worker: $GPU_SELF_CHECK})"

# ---- 2. a training run with spot checks --------------------------------------------------
RUN_LEFT=$(( $(left) - 45 ))
RUN_FOR=$(min "$RUN_S" "$RUN_LEFT")
if [ "$RUN_FOR" -lt 20 ]; then
  say "  run: skipped (the stage's time is spent: $(left) s left)"
  sum CLUSTER_RUN "skipped (time)"
  exit $STATUS
fi
TR=$(date +%s)
if ! with_libs timeout "$(tl 120)" "$COORD" init --db "service=gannf" --dataset "$DATA" --image-size "$S" --channels 1 \
     --ngf "$WIDTH" --ndf "$WIDTH" --images-per-unit "$UNIT" --units-per-update "$UNITS" --aggregation mean \
     --spot-check "$SPOT" --seed "$RUN_SEED" --lease 60 --epochs 100 --quiet >"$LOGS/cluster-run-init.log" 2>&1 ||
   ! q gannf -c "UPDATE gannf.trust_settings SET max_held_units = 16" >>"$LOGS/cluster-run-init.log" 2>&1; then
  fail "run: gannf-coord init: $(last_line "$LOGS/cluster-run-init.log")"
  sum CLUSTER_RUN FAILED
  exit 1
fi
OMP_NUM_THREADS=$CPU_THREADS bg_libs "$COORD" run --db "service=gannf" --iterations "$ITERATIONS" --sample-interval 0 \
  --checkpoint-interval 0 --output-dir "$W/run-out" >"$LOGS/cluster-run-coord.log" 2>&1 &
COORD_PID=$!
start_gpu_worker gannf "$LOGS/cluster-run-gpu-worker.log" --batch-size "$UNIT" --sum-units auto
start_cpu_worker gannf "$LOGS/cluster-run-cpu-worker.log" --batch-size "$UNIT" --sum-units auto
deadline=$(( $(date +%s) + RUN_FOR ))
stopped=0
GPU_RC=""
CPU_RC=""
while ! ended "$COORD_PID"; do
  now=$(date +%s)
  if [ "$stopped" = 0 ] && { [ "$now" -ge "$deadline" ] || { ended "$GPU_PID" && ended "$CPU_PID"; }; }; then
    with_libs "$COORD" stop --db "service=gannf" >>"$LOGS/cluster-run-coord.log" 2>&1
    stopped=$now
  elif [ "$stopped" != 0 ] && [ "$now" -ge $((stopped + 30)) ]; then
    kill -INT "$COORD_PID" 2>/dev/null
  fi
  sleep 1
done
wait "$COORD_PID"
COORD_RC=$?
stop_workers
RUN_WALL=$(($(date +%s) - TR))

# What the database says.
UPDATES=$(q gannf -c "SELECT count(*) FROM gannf.loss_history")
RUN_LINE=$(grep -E "iterations in [0-9.]+ s" "$LOGS/cluster-run-coord.log" | tail -1)
RUN_SECS=$(sed -n 's/.* iterations in \([0-9.]*\) s.*/\1/p' <<<"$RUN_LINE")
RUN_IPS=$(sed -n 's/.* s (\([0-9.]*\) img\/s).*/\1/p' <<<"$RUN_LINE")
RUN_WHY=$(sed -n 's/.* img\/s), \([^;]*\);.*/\1/p' <<<"$RUN_LINE")
say "  run: ${UPDATES:-0} updates in ${RUN_SECS:-?} s, ${RUN_WHY:-no closing line} (${RUN_IPS:-?} img/s in all; Fashion-MNIST ${S}x${S}x1, f = $WIDTH, units of $UNIT, $UNITS per update, --spot-check $SPOT, aggregation mean; coordinator exit $COORD_RC, ${RUN_WALL} s with start and stop)"
per_worker() {  # $1: worker name; "units uploads images" of its used submissions
  q gannf -c "SELECT count(*), count(*) FILTER (WHERE s.summed_with IS NULL OR s.summed_with = s.id), coalesce(sum(s.sample_count), 0)
              FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id WHERE w.name = '$1' AND s.state = 'used'" | tr '|' ' '
}
read -r GPU_UNITS GPU_UPLOADS GPU_IMAGES <<<"$(per_worker gpu-worker)"
read -r CPU_UNITS CPU_UPLOADS CPU_IMAGES <<<"$(per_worker cpu-worker)"
GPU_REJECTED=$(q gannf -c "SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                           WHERE w.name = 'gpu-worker' AND s.state = 'rejected' AND (s.summed_with IS NULL OR s.summed_with = s.id)")
GPU_LOST=$(q gannf -c "SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                       WHERE w.name = 'gpu-worker' AND s.state = 'stale' AND (s.summed_with IS NULL OR s.summed_with = s.id)")
GPU_REASONS=$(q gannf -c "SELECT count(*) || ' x ' || left(s.reject_reason, 140) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                          WHERE w.name = 'gpu-worker' AND s.state IN ('rejected', 'stale') AND (s.summed_with IS NULL OR s.summed_with = s.id)
                          GROUP BY s.reject_reason ORDER BY count(*) DESC LIMIT 3" | paste -sd';' -)
GPU_REFUSED=$(grep -c "refused:" "$LOGS/cluster-run-gpu-worker.log")
# The spot checks' draws over the GPU worker's uploads (a passed check leaves
# no trace), and the first 3 updates, which the coordinator recomputes in full
# while it has no norm history and fewer than 3 logins.
q gannf -c "SELECT coalesce(s.summed_with, s.id), count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
            WHERE w.name = 'gpu-worker' AND s.state IN ('used', 'rejected') GROUP BY 1 ORDER BY 1" | tr '|' ' ' >"$W/gpu-uploads.txt"
DRAWN=$(python3 tools/spot_check_draws.py --seed "$RUN_SEED" --fraction "$SPOT" <"$W/gpu-uploads.txt" | sed -n 1p)
FIRST3=$(q gannf -c "SELECT count(DISTINCT coalesce(s.summed_with, s.id)) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                     WHERE w.name = 'gpu-worker' AND s.state IN ('used', 'rejected') AND s.iteration < 3")
# Images/s: through the database (its used images over the run's time), and
# computing (its units' compute seconds, which the leader of a summed upload carries).
GPU_COMPUTE_IPS=$(q gannf -c "SELECT round((sum(s.sample_count) / nullif(sum(s.compute_seconds), 0))::numeric, 1)
                              FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                              WHERE w.name = 'gpu-worker' AND s.state = 'used'")
GPU_DB_IPS=""
[ -n "$RUN_SECS" ] && [ -n "${GPU_IMAGES:-}" ] && GPU_DB_IPS=$(awk -v i="$GPU_IMAGES" -v s="$RUN_SECS" 'BEGIN {if (s > 0) printf "%.1f", i / s}')
say "  gpu-worker (--backend $GPU_BE): ${GPU_UNITS:-0} units (${GPU_IMAGES:-0} images) in ${GPU_UPLOADS:-0} uploads used; ${GPU_REJECTED:-?} rejected, ${GPU_LOST:-?} lost${GPU_REASONS:+ ($GPU_REASONS)}; $GPU_REFUSED refused at submission (iteration closed or unit taken back: recomputed, not counted); exit ${GPU_RC:-?}"
say "    spot checks: ${DRAWN:-?} of its uploads drawn (fraction 1 - (1 - $SPOT)^units), and its ${FIRST3:-?} uploads of the first 3 updates recomputed in full, on the coordinator's CPU (tolerance: src/cluster/spot_check.cpp)"
# Checks that passed only on the second opinion (an activation within
# rounding of its kink: docs/security.md, "A false positive: kinks").
KINKS=$(grep -c "other side of its kink" "$LOGS/cluster-run-coord.log" 2>/dev/null || true)
say "    spot checks of any worker passed only on the second opinion (one activation on the other side of its kink): ${KINKS:-0}"
say "  cpu-worker (--backend cpu): ${CPU_UNITS:-0} units (${CPU_IMAGES:-0} images) in ${CPU_UPLOADS:-0} uploads used; exit ${CPU_RC:-?}"
[ "$COORD_RC" = 0 ] || fail "run: gannf-coord run exit $COORD_RC: $(last_line "$LOGS/cluster-run-coord.log")"
[ "${UPDATES:-0}" -gt 0 ] 2>/dev/null || fail "run: no update was made"
[ "$GPU_RC" = 0 ] || fail "run: gpu-worker (--backend $GPU_BE) exit $GPU_RC: $(last_line "$LOGS/cluster-run-gpu-worker.log")"
[ "$CPU_RC" = 0 ] || fail "run: cpu-worker exit $CPU_RC: $(last_line "$LOGS/cluster-run-cpu-worker.log")"
[ "${GPU_UNITS:-0}" -gt 0 ] 2>/dev/null || fail "run: gpu-worker (--backend $GPU_BE) contributed no unit"
[ "${CPU_UNITS:-0}" -gt 0 ] 2>/dev/null || fail "run: cpu-worker contributed no unit (the mix was not exercised)"
[ "${GPU_REJECTED:-1}" = 0 ] || fail "run: ${GPU_REJECTED:-?} uploads of gpu-worker (--backend $GPU_BE) rejected: ${GPU_REASONS:-?}"

# gannf-train on the same back end and settings (its micro-batch: the worker's --batch-size).
TRAIN_IPS=""
tl=$(min 60 $(( $(left) - 10 )))
if [ "$tl" -ge 10 ]; then
  with_libs timeout "$tl" "$TRAIN" --backend "$GPU_BE" --threads "$GPU_THREADS" --dataset "$DATA" --image-size "$S" --channels 1 \
    --ngf "$WIDTH" --ndf "$WIDTH" --batch-size "$UNIT" --steps "$TRAIN_STEPS" --sample-interval 0 --checkpoint-interval 0 \
    --output-dir "$W/train-same" >"$LOGS/cluster-train-same.log" 2>&1
  TRAIN_IPS=$(sed -n 's/.*steps in [0-9.]* s (\([0-9.]*\) img\/s).*/\1/p' "$LOGS/cluster-train-same.log" | tail -1)
fi
say "  gpu-worker images/s: ${GPU_DB_IPS:-n/a} through the database (its used images / the run's time), ${GPU_COMPUTE_IPS:-n/a} computing (its units' compute seconds); gannf-train --backend $GPU_BE, same settings, batch $UNIT: ${TRAIN_IPS:-n/a}"
sum CLUSTER_RUN "$([ $STATUS = 0 ] && echo ok || echo FAILED)"
sum CLUSTER_UPDATES "${UPDATES:-0}"
sum CLUSTER_GPU_DB_IPS "$GPU_DB_IPS"
sum CLUSTER_GPU_COMPUTE_IPS "$GPU_COMPUTE_IPS"
sum CLUSTER_TRAIN_IPS "$TRAIN_IPS"
sum CLUSTER_GPU_UNITS "${GPU_UNITS:-0}"
sum CLUSTER_CPU_UNITS "${CPU_UNITS:-0}"
sum CLUSTER_SETTINGS "${S}x${S}x1, f = $WIDTH, units of $UNIT"
say "  (cluster stage: $(elapsed) s, status $STATUS; logs cluster-*.log)"
exit $STATUS
