#!/usr/bin/env bash
# The adversarial training run of issue 12 (docs/security.md, Robust
# aggregation and validation): Fashion-MNIST 32x32, width 32, units of 64
# images, as a cluster on this machine, in up to three runs from one seed:
#
#   honest-mean     HONEST workers, the exact mean (the trusted baseline)
#   honest-RULE     the same workers, the robust rule
#   attack-RULE     the same honest workers plus the HOSTILE ones, the robust rule
#
# Each run reports its updates/s, its last losses (the mean of the last 20
# updates), the submissions rejected, and gannf-eval's Fréchet distance of the
# final generator (N images). One RESULT line per run.
#
#   bench/trust.sh [-b BUILD_DIR]
# Environment: RULE (clip+trimmed), SPOT (0.1: --spot-check of the RULE runs;
# the mean runs have none, as a trusted cluster), ITERATIONS (300), HONEST (8), HOSTILE
# ("alie:1.5 alie:1.5": two colluding workers, 20% of ten), UNITS (5 per
# update), EXTRA (5 units open beyond them), N (2000 images for the FD),
# RUNS ("honest-mean honest attack"), OUT (run/trust), DATA, FORMAT (f32: the
# gradients' wire format, gannf-coord init --blob-format; docs/scaling.md),
# SEED (1: the run's seed — initial weights, data order, noise).
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
BUILD=build
if [ "${1:-}" = -b ]; then BUILD=$2; shift 2; fi
[ $# -eq 0 ] || { echo "trust.sh: unknown arguments: $* (settings come from the environment: see --help)" >&2; exit 2; }
cd "$(dirname "$0")/.."
RULE=${RULE:-clip+trimmed}
SPOT=${SPOT:-0.1}
ITERATIONS=${ITERATIONS:-300}
HONEST=${HONEST:-8}
HOSTILE=${HOSTILE:-alie:1.5 alie:1.5}
UNITS=${UNITS:-5}
EXTRA=${EXTRA:-5}
N=${N:-2000}
RUNS=${RUNS:-honest-mean honest attack}
FORMAT=${FORMAT:-f32}
SEED=${SEED:-1}
OUT=${OUT:-run/trust}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
PGDIR=$OUT/pg
for b in tools/gannf-coord tools/gannf-worker tools/gannf-eval tests/hostile_worker; do
  [ -x "$BUILD/$b" ] || { echo "trust.sh: $BUILD/$b is missing: cmake --build $BUILD --target gannf-coord gannf-worker gannf-eval hostile_worker" >&2; exit 1; }
done
export OMP_WAIT_POLICY=PASSIVE
lscpu | sed -n 's/^Model name: *//p' | sed 's/^/# CPU: /'
echo "# $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); rule $RULE, $ITERATIONS updates of $UNITS units of 64 images, $HONEST honest workers, hostile: ${HOSTILE:-none}"

pids=()
logins=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; fi
  tools/pg-embedded.sh stop "$PGDIR" >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"
tools/pg-embedded.sh start "$PGDIR" >/dev/null 2>&1
export PGSERVICEFILE="$(cd "$PGDIR" && pwd)/pg_service.conf"

n_hostile=$(echo $HOSTILE | wc -w)
for i in $(seq 1 "$HONEST"); do logins+=("trust_h$i"); done
for j in $(seq 1 "$n_hostile"); do logins+=("trust_x$j"); done
for l in "${logins[@]}"; do
  psql "service=gannf" -XAtq -c "SELECT gannf_admin.admit_student('$l')" >/dev/null
done

one_run() {  # name rule spot-check hostile...
  local name=$1 rule=$2 spot=$3
  shift 3
  local n_run=$#
  local dir=$OUT/$name
  rm -rf "$dir"
  mkdir -p "$dir/logs"
  PGSERVICE=gannf "$BUILD/tools/gannf-coord" init --force --quiet --dataset "$DATA" --image-size 32 --ngf 32 --ndf 32 \
    --images-per-unit 64 --units-per-update "$UNITS" --extra-units "$EXTRA" --seed "$SEED" --lease 120 --aggregation "$rule" --spot-check "$spot" \
    --blob-format "$FORMAT"
  # Quarantines are per login and outlive a run: each run starts with none.
  psql "service=gannf" -XAtq -c "DELETE FROM gannf.login_trust" >/dev/null
  pids=()
  # One login per worker, as in a class: quarantine and the caps are per
  # login (a shared login would quarantine the honest with the hostile).
  for i in $(seq 1 "$HONEST"); do
    "$BUILD/tools/gannf-worker" --db "service=gannf_worker user=trust_h$i" --name "honest-$i" --threads 1 \
      --batch-size 64 --exit-when-done --quiet >"$dir/logs/honest-$i.log" 2>&1 &
    pids+=("$!")
  done
  local j=0
  for a in "$@"; do
    j=$((j + 1))
    "$BUILD/tests/hostile_worker" --db "service=gannf_worker user=trust_x$j" --attack "$a" --name "hostile-$j-${a%%:*}" \
      --threads 1 --batch-size 64 --exit-when-done >"$dir/logs/hostile-$j.log" 2>&1 &
    pids+=("$!")
  done
  local t0
  t0=$(date +%s.%N)
  PGSERVICE=gannf "$BUILD/tools/gannf-coord" run --iterations "$ITERATIONS" --output-dir "$dir" --sample-interval 100 \
    --checkpoint-interval "$ITERATIONS" --quiet >"$dir/logs/coord.log" 2>&1
  local secs
  secs=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
  local stats
  stats=$(psql "service=gannf" -XAt -F' ' -c "SELECT round(avg(loss_d)::numeric, 3), round(avg(loss_g)::numeric, 3)
      FROM (SELECT loss_d, loss_g FROM gannf.loss_history ORDER BY iteration DESC LIMIT 20) l" \
    -c "SELECT count(*) FILTER (WHERE s.state = 'rejected' AND w.name LIKE 'hostile%'),
               count(*) FILTER (WHERE s.state = 'used' AND w.name LIKE 'hostile%'),
               count(*) FILTER (WHERE s.state = 'rejected' AND w.name LIKE 'honest%')
      FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id" \
    -c "SELECT count(*) FILTER (WHERE login::text LIKE 'trust\_x%' AND quarantined_at IS NOT NULL),
               count(*) FILTER (WHERE login::text LIKE 'trust\_h%' AND strikes > 0)
      FROM gannf.login_trust")
  local fid
  fid=$("$BUILD/tools/gannf-eval" fid --checkpoint "$dir" --n "$N" --threads 1 2>"$dir/logs/eval.log" |
    sed -n 's/^fid=\([0-9.]*\).*/\1/p')
  set -- $stats
  echo "RESULT run=$name rule=$rule spot_check=$spot format=$FORMAT updates=$ITERATIONS seconds=$secs updates_per_s=$(awk -v n="$ITERATIONS" -v s="$secs" 'BEGIN { printf "%.3f", n / s }')" \
    "loss_d=$1 loss_g=$2 hostile_rejected=$3 hostile_used=$4 honest_rejected=$5 hostile_quarantined=$6/$n_run honest_struck=$7 fd=$fid n=$N"
}

for r in $RUNS; do
  case $r in
    honest-mean) one_run honest-mean mean 0 ;;
    honest) one_run "honest-$RULE" "$RULE" "$SPOT" ;;
    attack) one_run "attack-$RULE" "$RULE" "$SPOT" $HOSTILE ;;
    attack-mean) one_run attack-mean mean 0 $HOSTILE ;;
    *) echo "trust.sh: unknown run '$r' (honest-mean, honest, attack, attack-mean)" >&2; exit 2 ;;
  esac
done
