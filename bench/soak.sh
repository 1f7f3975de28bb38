#!/usr/bin/env bash
# Soak benchmark of the cluster's storage (issue 13; docs/operations.md,
# Storage): a long run with several workers on a fresh embedded PostgreSQL,
# the database's size sampled over time, plotted with gnuplot. Not a test:
# it runs for hours at the full model on a small machine.
#
#   bench/soak.sh [-b BUILD_DIR] [--size 32] [--iterations 2000] [--workers 4]
#                 [--every 10] [--out DIR] [-- gannf-coord init options...]
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
while [ $# -gt 0 ]; do
  case "$1" in
    -b) build=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --every) every=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
out=${out:-$build/soak-$size}
coord=$build/tools/gannf-coord
worker=$build/tools/gannf-worker
for b in "$coord" "$worker"; do
  [ -x "$b" ] || { echo "soak.sh: $b not found; build it: cmake --build $build --target gannf-coord gannf-worker" >&2; exit 1; }
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
"$coord" init "${init[@]}" "$@"
for i in $(seq 1 "$workers"); do
  "$worker" --db "$student" --name "soak$i" --threads 1 --no-cache --exit-when-done >"$out/worker-$i.log" 2>&1 &
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
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "seconds,iteration,weights,optimizer_state,submission_blobs,database,wal" >"$out/storage.csv"
while kill -0 "$run" 2>/dev/null; do
  line=$(sample 2>/dev/null || true)
  if [ -n "$line" ]; then
    echo "$line" >>"$out/storage.csv"
    echo "soak.sh: $line" >&2
  fi
  sleep "$every"
done
wait "$run" || { echo "soak.sh: gannf-coord run failed; see $out/coord.log" >&2; exit 1; }
sample >>"$out/storage.csv"

# The bound of docs/operations.md for this model: P bytes of parameters, S of
# BN statistics, U open units.
bound=$("$pgctl" psql "$pgdir" -d gannf -At -c "
  WITH m AS (SELECT 4 * sum(element_count) AS p, 4 * sum(bn_count) AS s FROM gannf.weights
             WHERE iteration = (SELECT iteration FROM gannf.training_state)),
       u AS (SELECT count(*) AS u FROM gannf.work_units WHERE state IN ('available', 'claimed', 'submitted'))
  SELECT p || ' ' || s || ' ' || u || ' ' || ((4 * (3 * p + s) + 3 * u * (p + 8 * s)) * 5 / 4 + 1048576)::bigint
  FROM m, u")
read -r p_bytes s_bytes units bound_bytes <<<"$bound"
echo "P $p_bytes bytes, S $s_bytes bytes, U $units: bound of the three tables $bound_bytes bytes" | tee "$out/bound.txt"
tail -1 "$out/storage.csv"

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
set title 'gannf soak: ${size}x${size}, $workers workers: database size over the run'
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
