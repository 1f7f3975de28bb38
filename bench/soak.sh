#!/usr/bin/env bash
# Soak benchmark of the cluster's storage (issue 13; docs/operations.md,
# Storage): a long run with several workers on a fresh embedded PostgreSQL,
# the database's size sampled over time, plotted with gnuplot. Not a test:
# it runs for hours at the full model on a small machine.
#
#   bench/soak.sh [-b BUILD_DIR] [--size 32] [--iterations 2000] [--workers 4]
#                 [--every 10] [--load] [--out DIR] [-- gannf-coord init options...]
#   bench/soak.sh --replot DIR [--size N --workers N --load]   (plot DIR/storage.csv again)
#
# --load: the workers are bench_load processes, which submit full-size results
# without computing them; storage depends on the blobs' sizes, not on what is
# in them, so this soaks the full-width model where real workers would take a
# day on a small machine (the weights still follow real Adam updates).
#
# Writes DIR/storage.csv (seconds, iteration, bytes of weights, optimizer_state,
# submission_blobs, the database, the WAL) and DIR/storage.png, and prints the
# last sample and the bound of docs/operations.md for this model. Options
# after -- go to `gannf-coord init` (e.g. --ngf 16 --ndf 16 for a short run);
# the dataset is synthetic unless one is given there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$here/../build
size=32
iterations=2000
workers=4
every=10
out=""
load=0
replot=""
while [ $# -gt 0 ]; do
  case "$1" in
    -b) build=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --every) every=$2; shift 2 ;;
    --load) load=1; shift ;;
    --replot) replot=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
# The samples against B, log scale (gnuplot).
plot() {
  kind=workers
  [ "$load" = 1 ] && kind='load workers (bench_load)'
  if command -v gnuplot >/dev/null; then
    gnuplot <<EOF
set terminal pngcairo size 900,500
set output '$out/storage.png'
set termoption noenhanced
set datafile separator ','
set key autotitle columnhead outside right
set logscale y
set xlabel 'iteration'
set ylabel 'MB (log scale)'
set title 'gannf soak: ${size}x${size}, $workers $kind: database size over the run'
plot '$out/storage.csv' using 2:((\$3+\$4+\$5)/1e6) title 'the 3 rewritten tables' with lines lw 3, \
     $bound_bytes/1e6 title 'their bound B' with lines dt 2 lw 2, \
     '' using 2:(\$3/1e6) with lines, \
     '' using 2:(\$4/1e6) with lines, \
     '' using 2:(\$5/1e6) with lines, \
     '' using 2:(\$6/1e6) title 'whole database' with lines lw 2, \
     '' using 2:(\$7/1e6) title 'WAL (whole server)' with lines lw 2
EOF
    echo "soak.sh: plot $out/storage.png"
  fi
}
if [ -n "$replot" ]; then
  out=$replot
  read -r _ _ _ _ _ _ _ _ _ _ _ _ _ bound_bytes _ <"$out/bound.txt" || { echo "soak.sh: no $out/bound.txt" >&2; exit 1; }
  plot
  exit 0
fi
out=${out:-$build/soak-$size}
coord=$build/tools/gannf-coord
worker=$build/tools/gannf-worker
loader=$build/bench/bench_load
[ "$load" = 1 ] && worker=$loader
for b in "$coord" "$worker"; do
  [ -x "$b" ] || { echo "soak.sh: $b not found; build it: cmake --build $build --target gannf-coord gannf-worker bench_load" >&2; exit 1; }
done
command -v gnuplot >/dev/null || echo "soak.sh: gnuplot not installed (apt-get install gnuplot-nox): no plot" >&2

mkdir -p "$out"
out=$(cd "$out" && pwd)
pgdir=$out/pg
pgctl=$here/../tools/pg-embedded.sh
"$pgctl" start "$pgdir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$pgctl" stop "$pgdir" || true
}
trap cleanup EXIT
export PGSERVICEFILE=$pgdir/pg_service.conf PGSERVICE=gannf
student="service=gannf user=gannf_student"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

init=(--image-size "$size" --quiet --force)
case " $* " in *" --dataset "*) ;; *) init+=(--dataset synthetic:100000 --no-cache) ;; esac
# Load workers send results they did not compute: the exact mean, no spot
# checks (the classroom default would refuse them and quarantine the login).
[ "$load" = 1 ] && init+=(--aggregation mean --spot-check 0)
"$coord" init "${init[@]}" "$@"
for i in $(seq 1 "$workers"); do
  if [ "$load" = 1 ]; then
    # Started before the run: bench_load ends when it finds no unit and the run not running.
    "$worker" --db "$student" --name "soak$i" --seconds 864000 >"$out/worker-$i.log" 2>&1 &
  else
    "$worker" --db "$student" --name "soak$i" --threads 1 --no-cache --exit-when-done >"$out/worker-$i.log" 2>&1 &
  fi
  pids+=($!)
done
"$coord" run --iterations "$iterations" --output-dir "$out/run" --sample-interval 0 --checkpoint-interval 0 \
  --quiet >"$out/coord.log" 2>&1 &
run=$!
pids+=($run)

sample() {
  "$pgctl" psql "$pgdir" -d gannf -At -F, -c "
    SELECT round(extract(epoch FROM clock_timestamp() - '$start'::timestamptz))::bigint,
           (SELECT iteration FROM gannf.training_state),
           max(total_bytes) FILTER (WHERE name = 'weights'),
           max(total_bytes) FILTER (WHERE name = 'optimizer_state'),
           max(total_bytes) FILTER (WHERE name = 'submission_blobs'),
           max(total_bytes) FILTER (WHERE name LIKE 'database %'),
           max(total_bytes) FILTER (WHERE name LIKE 'WAL %')
    FROM gannf.storage"
}
# The bound of docs/operations.md for this model (in bound.txt, so that --replot works on a run cut short): P bytes of parameters, S of
# BN statistics, U open units.
bound_now() {
  bound=$("$pgctl" psql "$pgdir" -d gannf -At -c "
  WITH m AS (SELECT 4 * sum(element_count) AS p, 4 * sum(bn_count) AS s FROM gannf.weights
             WHERE iteration = (SELECT iteration FROM gannf.training_state)),
       u AS (SELECT (config::jsonb #>> '{training,num_workunits_per_update}')::int +
                    coalesce((config::jsonb #>> '{training,extra_units}')::int, 0) AS u FROM gannf.training_state)
  SELECT p || ' ' || s || ' ' || u || ' ' || ((4 * (3 * p + s) + 3 * u * (p + 8 * s)) * 5 / 4 + 1048576)::bigint
  FROM m, u") || return 1
  read -r p_bytes s_bytes units bound_bytes <<<"$bound"
  echo "P $p_bytes bytes, S $s_bytes bytes, U $units: bound of the three tables $bound_bytes bytes" | tee "$out/bound.txt"
}
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "seconds,iteration,weights,optimizer_state,submission_blobs,database,wal" >"$out/storage.csv"
while kill -0 "$run" 2>/dev/null; do
  line=$(sample 2>/dev/null || true)
  if [ -n "$line" ]; then
    echo "$line" >>"$out/storage.csv"
    echo "soak.sh: $line" >&2
    [ -s "$out/bound.txt" ] || bound_now >/dev/null 2>&1 || true
  fi
  sleep "$every"
done
wait "$run" || { echo "soak.sh: gannf-coord run failed; see $out/coord.log" >&2; exit 1; }
sample >>"$out/storage.csv"
bound_now

tail -1 "$out/storage.csv"
plot
