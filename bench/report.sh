#!/usr/bin/env bash
# Runs the CPU benchmarks and prints the figures docs/benchmarks.md quotes:
#  - per stride-2 conv / transposed-conv layer between the first and the last,
#    forward+backward GFLOP/s as a % of sgemm at the same shapes, measured in
#    the same process (bench_ops prints that table itself; medians);
#  - full training step images/s, gannf vs PyTorch on the CPU with the same
#    thread count (bench/peer/torch_step.py), and peak RSS.
#
# The step is timed in rounds that alternate gannf and PyTorch, so that a
# machine shared with other work slows both alike; the ratio is the median of
# the per-round ratios. A `share` column says how much of the cores the
# programs held (CPU time / wall / threads): below 0.9, other work interfered.
#
#   bench/report.sh [-b BUILD_DIR] [-r REPS] [-n ROUNDS] [-s STEP_REPS] [-t THREADS]
#                   [--no-ops] [--no-torch]
#
# BUILD_DIR defaults to ./build (configure with Google Benchmark installed;
# `make bench_ops bench_step`). REPS: repetitions of each op benchmark (5);
# ROUNDS: step rounds (5); STEP_REPS: repetitions per program per round (3);
# THREADS defaults to OMP_NUM_THREADS or nproc.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${GANNF_BUILD:-$here/../build}
reps=5
rounds=5
sreps=3
threads=${OMP_NUM_THREADS:-$(nproc)}
do_ops=1
do_torch=1
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    -b) build=$2; shift 2 ;;
    -r) reps=$2; shift 2 ;;
    -n) rounds=$2; shift 2 ;;
    -s) sreps=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    --no-ops) do_ops=0; shift ;;
    --no-torch) do_torch=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "report.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
ops=$build/bench/bench_ops
step=$build/bench/bench_step
for b in "$ops" "$step"; do
  if [ ! -x "$b" ]; then
    echo "report.sh: $b not found; build it: cmake -S . -B $build && make -C $build bench_ops bench_step" >&2
    exit 1
  fi
done
if [ "$do_torch" = 1 ] && ! python3 -c 'import torch' 2>/dev/null; then
  echo "report.sh: PyTorch not importable; skipping the peer (pip install torch, or --no-torch)" >&2
  do_torch=0
fi
export OMP_NUM_THREADS=$threads

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs; $threads threads"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$do_ops" = 1 ]; then
  echo
  echo "## Conv layers vs the sgemm roof ($reps repetitions, interleaved)"
  # Only the conv and sgemm benchmarks feed the table; run bench_ops alone for the rest.
  "$ops" --benchmark_filter='^(conv|sgemm)/' --benchmark_repetitions="$reps" \
    --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true \
    --benchmark_min_time=0.2 2>/dev/null | grep -E '^(# |layer )|^[GD]\.main'
  # (bench_ops's banner and its table; Google Benchmark's own lines are dropped)
fi

echo
echo "## Full training step, batch 64 ($rounds rounds, each gannf then PyTorch, $sreps repetitions each)"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for r in $(seq "$rounds"); do
  for c in "64 3" "32 1"; do
    set -- $c
    # One case per process, so that its peak RSS is its own; check correctness once.
    check=0
    [ "$r" = 1 ] && check=1
    "$step" --check=$check --benchmark_filter="step/${1}x${1}x${2}/" \
      --benchmark_repetitions="$sreps" --benchmark_report_aggregates_only=true \
      --benchmark_min_time=1 2>/dev/null | grep -E '^(RESULT|# corr)' | sed "s/^RESULT/RESULT round=$r/" >>"$results"
    if [ "$do_torch" = 1 ]; then
      python3 "$here/peer/torch_step.py" --image-size "$1" --nc "$2" --batch 64 \
        --threads "$threads" --reps "$sreps" 2>/dev/null | grep '^RESULT' |
        sed "s/^RESULT/RESULT round=$r/" >>"$results"
    fi
  done
done
grep '^# corr' "$results" | head -1
# Per case: the median images/s of each program over the rounds, and the median
# of the per-round ratios (each round's two figures were taken a minute apart,
# so a slow spell of the machine mostly cancels out of its ratio).
awk '
  function median(arr, m,   i, j, t, a) {
    for (i = 1; i <= m; i++) a[i] = arr[i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  /^RESULT/ {
    delete f
    for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    impl = f["impl"] ~ /^torch/ ? "torch" : "gannf"
    if (impl == "torch") tver = f["impl"]
    c = f["image"] "x" f["image"] "x" f["nc"]
    cases[c] = 1
    ips[impl, c, f["round"]] = f["images_per_s"]
    if (f["round"] + 0 > rounds) rounds = f["round"] + 0
    if (f["peak_rss_mb"] + 0 > rss[impl, c]) rss[impl, c] = f["peak_rss_mb"] + 0
    if (!((impl, c) in share) || f["cpu_share"] + 0 < share[impl, c]) share[impl, c] = f["cpu_share"] + 0
  }
  END {
    printf "%-8s %11s %11s %6s %13s %9s %9s %6s\n", "case", "gannf img/s", "torch img/s", "ratio",
           "ratio range", "gannf RSS", "torch RSS", "share"
    low = 1
    for (c in cases) {
      ng = nt = nr = 0; lo = 1e9; hi = 0
      for (r = 1; r <= rounds; r++) {
        if ((("gannf", c, r) in ips)) g[++ng] = ips["gannf", c, r]
        if ((("torch", c, r) in ips)) t[++nt] = ips["torch", c, r]
        if ((("gannf", c, r) in ips) && (("torch", c, r) in ips)) {
          q[++nr] = ips["gannf", c, r] / ips["torch", c, r]
          if (q[nr] < lo) lo = q[nr]
          if (q[nr] > hi) hi = q[nr]
        }
      }
      s = share["gannf", c]
      if (nt && share["torch", c] < s) s = share["torch", c]
      if (s < low) low = s
      mg = median(g, ng); mt = nt ? median(t, nt) : 0; mq = nr ? median(q, nr) : 0
      printf "%-8s %11.1f %11s %6s %13s %6d MB %9s %6.2f\n", c, mg, nt ? sprintf("%.1f", mt) : "-",
             nr ? sprintf("%.2fx", mq) : "-", nr ? sprintf("%.2f-%.2fx", lo, hi) : "-",
             rss["gannf", c], nt ? sprintf("%d MB", rss["torch", c]) : "-", s
      if (c == "64x64x3") { rss64 = rss["gannf", c]; q64 = mq; have64 = 1; havet = nr > 0 }
      line = ""
      for (r = 1; r <= rounds; r++)
        line = line sprintf(" %s/%s", (("gannf", c, r) in ips) ? ips["gannf", c, r] : "-",
                            (("torch", c, r) in ips) ? ips["torch", c, r] : "-")
      rounds_line[c] = line
    }
    printf "# share: least share of the cores either program held in any round (1 = no other load)%s\n",
           ((low < 0.9) ? "; BELOW 0.9: the machine was busy, rerun when idle" : "")
    if (tver != "") print "# peer: " tver ", same thread count; ratio = median of the per-round ratios"
    for (c in rounds_line) print "# rounds " c " (gannf/torch img/s):" rounds_line[c]
    if (have64) {
      printf "# target: peak RSS <= 1 GB at 64x64: %s (%d MB)\n", ((rss64 <= 1024) ? "met" : "MISSED"), rss64
      if (havet)
        printf "# target: step >= 1.3x PyTorch at 64x64: %s (%.2fx)%s\n", ((q64 >= 1.3) ? "met" : "MISSED"),
               q64, ((low < 0.9) ? " -- not a valid verdict: the machine was busy" : "")
    }
  }' "$results" | sort -r
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
