#!/usr/bin/env bash
# The campus-network benchmark (issue 17): a real PostgreSQL and a real
# gannf-coord in a "server" network namespace, N workers each in a namespace
# of its own, all joined through a "campus" router namespace by veth pairs
# whose both directions are rate-limited with tc tbf (netem is not needed):
# one server uplink, one link per student. For each link setting and worker
# count it measures images/s taken into updates, next to the arithmetic bound
# of the links, and writes a table and a gnuplot PNG.
#
#   bench/campus.sh [-b BUILD_DIR] [options]          (as root: namespaces and tc)
#
#   --workers "4 8 16 32"      worker counts
#   --links "unlimited 1000:100 300:100"
#                              link settings, SERVER:STUDENT in Mbit/s (0: unlimited)
#   --seconds 30 --warmup 15   measured window and the warm-up before it, per point
#   --image-size 64 --unit 256 the run (64: a 25.4 MB submission and 25.4 MB of weights)
#   --units-per-update N       default: the worker count (each worker one unit per update)
#   --formats "f32 bf16"       gradient blob formats (gannf-coord init --blob-format)
#   --sum-units "1 4 auto"     units each worker claims and submits summed (sql/0017); auto:
#                              as many as the coordinator gives it from its measured speed and
#                              link (sql/0018); the default units per update is workers × the
#                              largest number among these (4 when only auto), so that every
#                              setting trains the same updates
#   --weights "delta full"     how workers download the weights: delta (the default: the exact
#                              delta from the previous iteration's, sql/0019) or full
#                              (--full-weights: the whole float32 parameters every iteration)
#   --compute-ms "0"           load workers only: stand for compute with a sleep of this many ms
#                              per unit; a list is dealt out to the workers in turn (a mixed class)
#   --links "1000:100,0"       a student list after the colon is dealt out the same way (here:
#                              every other student unlimited); the link bound is then not drawn
#   --real                     real gannf-worker processes (--threads 1) instead of bench_load
#                              load workers; only where the CPU can compute units
#   --out DIR                  results (default BUILD_DIR/campus); results.tsv, campus.png, logs
#   --plot FILE                also copy the PNG there (e.g. docs/campus.png)
#   --replot                   no runs: plot --out's results.tsv again (rows may be deleted from it)
#
# Load workers (bench/bench_load.cpp) claim, download the weights once per
# iteration and submit full-size results without computing, so the numbers
# are the server's and the network's ceiling, not a class's compute. Every
# process shares this machine's CPUs: where those are the limit the
# "unlimited" row says so (it is the machine's ceiling, not the network's).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=$root/build
workers_list="4 8 16 32"
links="unlimited 1000:100 300:100"
seconds=30
warmup=15
image_size=64
unit=256
per_update=""
formats="f32"
sums="1"
compute_ms="0"
weight_modes="delta"
real=0
replot=0
out=""
plot=""
die() { echo "campus.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -b) build=$2; shift ;;
    --workers) workers_list=$2; shift ;;
    --links) links=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --image-size) image_size=$2; shift ;;
    --unit) unit=$2; shift ;;
    --units-per-update) per_update=$2; shift ;;
    --formats) formats=$2; shift ;;
    --sum-units) sums=$2; shift ;;
    --compute-ms) compute_ms=$2; shift ;;
    --weights) weight_modes=$2; shift ;;
    --real) real=1 ;;
    --replot) replot=1 ;;
    --out) out=$2; shift ;;
    --plot) plot=$2; shift ;;
    *) die "unknown option '$1' (--help lists them)" ;;
  esac
  [ $# -gt 0 ] && shift
done
out=${out:-$build/campus}

# ------------------------------------------------------------------ plot
plot() {
  local res=$out/results.tsv i l
  if command -v gnuplot >/dev/null; then
    {
      echo "set terminal pngcairo size 900,560 noenhanced"
      echo "set output '$out/campus.png'"
      echo "set title \"$(sed 's/^# //' "$out/header.txt")\" font ',9'"
      echo "set xlabel 'workers'; set ylabel 'images/s arriving in accepted submissions'"
      echo "set logscale x 2; set xtics ($(echo $workers_list | sed 's/ /, /g')); set key outside right; set grid"
      echo -n "plot "
      i=0
      for l in $links; do
        for f in $formats; do
        for su in $sums; do
        for wmode in $weight_modes; do
          [ $i -gt 0 ] && echo -n ", "
          sel="(strcol(1) eq '$l' && strcol(4) eq '$f' && strcol(13) eq '$su' && (strcol(16) eq '$wmode' || ('$wmode' eq 'delta' && strcol(16) eq '')) ? \$5 : 1/0)"
          t="$l $f"; [ "$sums" != 1 ] && t="$t sum $su"; [ "$weight_modes" != delta ] && t="$t weights $wmode"
          echo -n "'$res' using $sel:8 with linespoints lw 2 lc $((i + 1)) title '$t measured'"
          [ "$l" != unlimited ] && echo -n ", '$res' using $sel:9 with lines dt 2 lc $((i + 1)) title '$t link bound'"
          i=$((i + 1))
        done
        done
        done
      done
      echo
    } >"$out/campus.gp"
    gnuplot "$out/campus.gp" && echo "campus.sh: plot in $out/campus.png"
    if [ -n "$plot" ]; then cp "$out/campus.png" "$plot"; echo "campus.sh: copied to $plot"; fi
  else
    echo "campus.sh: gnuplot not found (apt-get install gnuplot-nox): no plot; the table is $res"
  fi
  column -t -s $'\t' "$res"
}

if [ "$replot" = 1 ]; then
  [ -f "$out/results.tsv" ] || die "--replot: no $out/results.tsv"
  links=$(awk -F'\t' 'NR > 1 && !seen[$1]++ { printf "%s ", $1 }' "$out/results.tsv")
  workers_list=$(awk -F'\t' 'NR > 1 && !seen[$5]++ { printf "%s ", $5 }' "$out/results.tsv")
  formats=$(awk -F'\t' 'NR > 1 && !seen[$4]++ { printf "%s ", $4 }' "$out/results.tsv")
  sums=$(awk -F'\t' 'NR > 1 && !seen[$13]++ { printf "%s ", $13 }' "$out/results.tsv")
  sums=${sums% }
  weight_modes=$(awk -F'\t' 'NR > 1 && !seen[$16]++ { printf "%s ", ($16 == "" ? "delta" : $16) }' "$out/results.tsv")
  weight_modes=${weight_modes% }
  plot
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "network namespaces and tc need root; run it with sudo"
for t in ip tc; do command -v $t >/dev/null || die "'$t' not found: apt-get install iproute2"; done
coord=$build/tools/gannf-coord
load=$build/bench/bench_load
wbin=$build/tools/gannf-worker
[ -x "$coord" ] || die "$coord not found: cmake --build $build --target gannf-coord"
if [ "$real" = 1 ]; then
  [ -x "$wbin" ] || die "$wbin not found: cmake --build $build --target gannf-worker"
else
  [ -x "$load" ] || die "$load not found: cmake --build $build --target bench_load"
fi
BIN=${GANNF_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$BIN/initdb" ] || die "PostgreSQL's server programs not found (apt-get install postgresql, or set GANNF_PG_BINDIR)"
max_w=0
for w in $workers_list; do
  [[ "$w" =~ ^[0-9]+$ ]] && [ "$w" -ge 1 ] && [ "$w" -le 200 ] || die "--workers: '$w' is not a count in 1..200"
  [ "$w" -gt "$max_w" ] && max_w=$w
done
for f in $formats; do
  [[ "$f" =~ ^(f32|bf16|f16s)$ ]] || die "--formats: '$f' is not f32, bf16 or f16s"
done
for m in $weight_modes; do
  [[ "$m" =~ ^(delta|full)$ ]] || die "--weights: '$m' is neither delta nor full"
done
for l in $links; do
  [[ "$l" = unlimited || "$l" =~ ^[0-9]+:[0-9]+(,[0-9]+)*$ ]] ||
    die "--links: '$l' is neither 'unlimited' nor SERVER:STUDENT[,STUDENT...] in Mbit/s"
done

mkdir -p "$out"
rm -f "$out"/*.log
P=gcampus  # namespace prefix: gcampus-srv, gcampus-net, gcampus-w1...
pg=/tmp/gcampus-pg-$$
sock=$pg/sock
coord_pid=""
worker_pids=()

cleanup() {
  set +e
  for p in "${worker_pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$coord_pid" ] && kill "$coord_pid" 2>/dev/null && wait "$coord_pid" 2>/dev/null
  if [ -f "$pg/data/postmaster.pid" ]; then
    ip netns exec $P-srv runuser -u postgres -- "$BIN/pg_ctl" stop -D "$pg/data" -m immediate -w >/dev/null 2>&1
  fi
  [ -f "$pg/postgres.log" ] && cp "$pg/postgres.log" "$out/postgres.log"
  rm -rf "$pg"
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do ip netns del "$ns"; done
}
trap cleanup EXIT
# Namespaces left by an interrupted run of this script.
for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done

# ------------------------------------------------------------------ network
# server 10.78.0.1 -- 10.78.0.254 [router] 10.78.K.254 -- 10.78.K.1 worker K
echo "campus.sh: building the network: a server, a router and $max_w workers"
ip netns add $P-srv
ip netns add $P-net
ip netns exec $P-net sysctl -qw net.ipv4.ip_forward=1
ip -n $P-net link set lo up
ip -n $P-srv link set lo up
link_pair() {  # NS IFACE ADDR ROUTER_IFACE ROUTER_ADDR
  ip link add "$2" netns "$1" type veth peer name "$4" netns $P-net
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n $P-net addr add "$5/24" dev "$4"
  ip -n "$1" link set "$2" up
  ip -n $P-net link set "$4" up
  ip -n "$1" route add default via "$5"
}
link_pair $P-srv srv0 10.78.0.1 r0 10.78.0.254
for k in $(seq 1 "$max_w"); do
  ip netns add $P-w$k
  ip -n $P-w$k link set lo up
  link_pair $P-w$k w0 10.78.$k.1 r$k 10.78.$k.254
done

# Both directions of a link: the egress of each end. burst: 10 ms of the
# rate, at least 128 KB (veth hands tbf segments of up to 64 KB).
shape() {  # NS IFACE MBIT (0: unlimited)
  ip netns exec "$1" tc qdisc del dev "$2" root 2>/dev/null || true
  [ "$3" = 0 ] && return 0
  local burst=$(( $3 * 1000000 / 8 / 100 ))
  [ "$burst" -lt 131072 ] && burst=131072
  ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$3mbit" burst "$burst" latency 100ms
}
set_links() {  # SERVER_MBIT STUDENT_MBIT
  shape $P-srv srv0 "$1"
  shape $P-net r0 "$1"
  local rates=(${2//,/ })
  for k in $(seq 1 "$max_w"); do
    local r=${rates[$(( (k - 1) % ${#rates[@]} ))]}
    shape $P-w$k w0 "$r"
    shape $P-net r$k "$r"
  done
}

# ------------------------------------------------------------------ database
# A throw-away cluster that listens on the server's campus address; trust
# inside these private namespaces only (nothing else can reach 10.78/16 here).
echo "campus.sh: starting PostgreSQL in the server namespace"
mkdir -p "$sock"
chown -R postgres "$pg"
runuser -u postgres -- "$BIN/initdb" -D "$pg/data" -U postgres -E UTF8 --locale=C --auth=trust --no-sync \
  >"$out/initdb.log" 2>&1 || { cat "$out/initdb.log"; die "initdb failed"; }
cat >>"$pg/data/postgresql.conf" <<EOF
listen_addresses = '10.78.0.1'
unix_socket_directories = '$sock'
max_connections = 300
wal_buffers = 16MB
max_wal_size = 4GB
max_parallel_workers_per_gather = 0
fsync = off
EOF
echo "host all all 10.78.0.0/16 trust" >>"$pg/data/pg_hba.conf"
ip netns exec $P-srv runuser -u postgres -- "$BIN/pg_ctl" start -D "$pg/data" -l "$pg/postgres.log" -w >/dev/null ||
  { cat "$pg/postgres.log" >&2; die "PostgreSQL did not start (its log above)"; }
psql_su() { ip netns exec $P-srv "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -U postgres "$@"; }
psql_su -d postgres -f "$root/sql/roles.sql" >/dev/null
# One login per worker, as in a class: the trust caps (sql/0008: units held
# at once, workers per login) are per login, and one login shared by all
# the workers held the whole class to max_held_units (4) units in flight.
for k in $(seq 1 "$max_w"); do
  psql_su -d postgres -c "CREATE ROLE gannf_student$k LOGIN IN ROLE gannf_worker" >/dev/null
done
coord_db="host=$sock user=gannf_coord dbname=gannf"
q() { ip netns exec $P-srv "$BIN/psql" -X -qAt -h "$sock" -U gannf_coord -d gannf -c "$1"; }

# ------------------------------------------------------------------ runs
kind=load; [ "$real" = 1 ] && kind=real
maxsum=$(echo $sums | tr ' ' '\n' | grep -E '^[0-9]+$' | sort -n | tail -1 || true)
[ -z "$maxsum" ] && maxsum=4  # only auto: the default cap on held units
for su in $sums; do
  [[ "$su" = auto || "$su" =~ ^[0-9]+$ ]] || die "--sum-units: '$su' is neither a number nor auto"
done
read -r -a compute_list <<<"$compute_ms"
[ "$real" = 1 ] && [ "$compute_ms" != 0 ] && die "--compute-ms is for load workers (real workers compute)"
# Load workers send results they did not compute: the exact mean, no spot
# checks (the classroom default would refuse them); real workers get the
# classroom default, as a class would.
trust_flags=(--aggregation mean --spot-check 0 --norm-ratio 0); [ "$real" = 1 ] && trust_flags=()
res=$out/results.tsv
printf "link\tserver_mbit\tstudent_mbit\tformat\tworkers\tkind\tunits_per_s\timages_per_s\tbound_images_per_s\tsubmission_mb\tweights_mb\timages_per_s_updates\tsum_units\tcompute_ms\timages_per_s_between_updates\tweights\n" >"$res"
echo "# campus.sh on $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $kind workers; image $image_size, $unit images/unit" | tee "$out/header.txt"
for l in $links; do
  if [ "$l" = unlimited ]; then sm=0; wm=0; else sm=${l%%:*}; wm=${l##*:}; fi
  mixed=0; [[ "$wm" == *,* || "$compute_ms" == *" "* ]] && mixed=1  # no single bound for a mixed class
  set_links "$sm" "$wm"
  for f in $formats; do
  for su in $sums; do
  for wmode in $weight_modes; do
  wflag=(); [ "$wmode" = full ] && wflag=(--full-weights)
  for w in $workers_list; do
    k=${per_update:-$((w * maxsum))}
    # A whole number of units per epoch: the load workers' fake results are
    # shaped for full units, and an epoch's short last unit (100 000 images
    # make one of 160 at 256 or 512 per unit) is refused from every one of
    # them, which held each epoch's last update open until the window ended.
    ip netns exec $P-srv "$coord" init --db "$coord_db" --force --dataset "synthetic:$((unit * 400))" --image-size "$image_size" \
      --images-per-unit "$unit" --units-per-update "$k" --epochs 1000 --no-cache --quiet --lease 600 --blob-format "$f" "${trust_flags[@]}" \
      >>"$out/coord-init.log" 2>&1 || die "gannf-coord init failed: $out/coord-init.log"
    ip netns exec $P-srv "$coord" run --db "$coord_db" --output-dir "$pg/out" --sample-interval 0 \
      --checkpoint-interval 0 --quiet >>"$out/coord-run.log" 2>&1 &
    coord_pid=$!
    worker_pids=()
    tag="$f-s$su-$wmode-${l/:/_}-w$w"  # this point's worker logs
    for i in $(seq 1 "$w"); do
      wdb="host=10.78.0.1 user=gannf_student$i dbname=gannf"
      if [ "$real" = 1 ]; then
        ip netns exec $P-w$i "$wbin" --db "$wdb" --name "w$i" --threads 1 --quiet --sum-units "$su" "${wflag[@]}" \
          >>"$out/worker-$tag-$i.log" 2>&1 &
      else
        cms=${compute_list[$(( (i - 1) % ${#compute_list[@]} ))]}
        ip netns exec $P-w$i "$load" --db "$wdb" --name "w$i" --seconds $((warmup + seconds + 30)) --sum-units "$su" \
          --compute-ms "$cms" "${wflag[@]}" \
          >>"$out/worker-$tag-$i.log" 2>&1 &
      fi
      worker_pids+=($!)
    done
    # Two counts over the window, on the server's clock: the images that
    # arrived in accepted submissions (the steady-state rate; with many
    # units per update a window may see few updates close), and the images
    # the closed updates took.
    sleep "$warmup"
    s0=$(q "SELECT coalesce(sum(samples), 0) FROM gannf.loss_history"); c0=$(q "SELECT clock_timestamp()")
    sleep "$seconds"
    s1=$(q "SELECT coalesce(sum(samples), 0) FROM gannf.loss_history"); c1=$(q "SELECT clock_timestamp()")
    span=$(q "SELECT extract(epoch FROM '$c1'::timestamptz - '$c0'::timestamptz)")
    # The steady rate between updates: the images of the updates recorded in
    # the window after its first, over the time from the first to the last
    # (not cut by the window's edges; empty with fewer than two updates).
    between=$(q "SELECT CASE WHEN count(*) >= 2 THEN round(((sum(samples) - (array_agg(samples ORDER BY recorded_at))[1])
                   / extract(epoch FROM max(recorded_at) - min(recorded_at)))::numeric, 1) END
                 FROM gannf.loss_history WHERE recorded_at > '$c0' AND recorded_at <= '$c1'")
    [ -z "$between" ] && between=nan
    recv=$(q "SELECT coalesce(sum(sample_count), 0) FROM gannf.submissions WHERE state IN ('pending', 'used')
              AND submitted_at >= '$c0' AND submitted_at < '$c1'")
    # The units per claim the coordinator gave (sql/0018; used by auto workers).
    # Beside each: what the worker last reported (compute s per unit, upload s, download s).
    hints=$(q "SELECT string_agg(name || '=' || units_hint || coalesce(format(' (c %s u %s d %s)',
                 round((timing_compute_seconds / timing_units)::numeric, 2), round(timing_upload_seconds::numeric, 2),
                 round(timing_download_seconds::numeric, 2)), ''), ' ' ORDER BY id) FROM gannf.workers")
    for p in "${worker_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${worker_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    worker_pids=()
    kill "$coord_pid" 2>/dev/null || true
    wait "$coord_pid" 2>/dev/null || true
    coord_pid=""
    # The bytes a unit moves: its submission up (the load workers count it),
    # and the weights down, once per worker and iteration (the run's rows).
    wt_mb=$(q "SELECT round(4e-6 * (sum(element_count) + sum(bn_count))::numeric, 2) FROM gannf.weights WHERE iteration = (SELECT max(iteration) FROM gannf.weights)")
    # Real workers print no RESULT line: the gradients' share of the weights'
    # size in the format (BN statistics, a few kB, stay float32).
    half=1; [ "$f" != f32 ] && half=0.5
    # Per unit: a summed submission's bytes are shared by its units.
    sun=$su; [ "$su" = auto ] && sun=1
    sub_mb=$(cat "$out"/worker-"$tag"-*.log 2>/dev/null | awk -v d="$wt_mb" -v h="$half" -v su="$sun" '/^RESULT/ {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        mb += v["mb_up"]; n += v["accepted"] + v["refused"] }
      END { printf "%.2f\n", (n > 0 ? mb / n : d * h / su) }')
    # The weights as the workers downloaded them (deltas after the first),
    # per download; the full size where no RESULT line says (real workers).
    wt_dl=$(cat "$out"/worker-"$tag"-*.log 2>/dev/null | awk -v d="$wt_mb" '/^RESULT/ {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        mb += v["mb_down"]; n += v["downloads"] }
      END { printf "%.2f\n", (n > 0 ? mb / n : d) }')
    wt_mb=$wt_dl
    read -r ups ips upd bound <<<"$(awk -v s0="$s0" -v s1="$s1" -v span="$span" -v recv="$recv" -v unit="$unit" \
      -v sm="$sm" -v wm="${wm%%,*}" -v mixed="$mixed" -v sb="$sub_mb" -v wt="$wt_mb" -v w="$w" -v k="$k" 'BEGIN {
        ips = recv / span; ups = ips / unit; upd = (s1 - s0) / span
        # Per iteration the server link carries k submissions up and at most
        # min(w, k) weight downloads down, each direction its own tbf; a load
        # worker downloads, then submits its k/w units, one after the other.
        d = (w < k ? w : k); bound = 1e30
        if (sm > 0) { up = k * sb; dn = d * wt; b = (sm / 8) * k / (up > dn ? up : dn); if (b < bound) bound = b }
        if (wm > 0 && k >= w) { b = k * (wm / 8) / (wt + sb * k / w); if (b < bound) bound = b }
        printf "%.3f %.1f %.1f %s\n", ups, ips, upd, (bound < 1e29 && !mixed ? sprintf("%.1f", bound * unit) : "nan") }')"
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$l" "$sm" "$wm" "$f" "$w" "$kind" "$ups" "$ips" "$bound" \
      "$sub_mb" "$wt_mb" "$upd" "$su" "${compute_ms// /,}" "$between" "$wmode" >>"$res"
    echo "campus.sh: link $l, $f, sum $su, weights $wmode ($wt_mb MB per download), $w workers ($k units/update): $ups units/s = $ips images/s arrived, $upd images/s in closed updates, $between between updates (link bound $bound; upload $sub_mb MB/unit; units per claim given: $hints)"
  done
  done
  done
  done
done
plot
