#!/usr/bin/env bash
# The one prepared run for a (scarce) GPU session: build for the present GPU,
# run the cuda-labelled tests, time the CUDA kernels against cuDNN and the full
# training step against PyTorch on the same GPU, and print a short report.
# Stages, in order: configure, build, tests (ctest -L cuda), gannf-train on the
# GPU (synthetic, 40 steps), bench_cuda (per op against cuDNN in FP32, TF32 and
# BF16, the step), PyTorch's step, the cluster (tools/device-cluster.sh: a GPU
# worker beside a CPU worker through a private PostgreSQL from the pgserver
# wheel, distributed = local, a run with spot checks), real data (gannf-train
# one epoch of Fashion-MNIST at 64x64, cuda and cuda-tf32, against
# bench/peer/torch_train.py with the data on the GPU), spot checks (honest
# cuda, cuda-tf32 and cuda-bf16 units at 64x64x3 against the coordinator's
# CPU recomputation: bench_spot_check --worker-backend), compute-sanitizer,
# Nsight Compute.
# Took 2.2-2.5 minutes on an H100 before the cluster and real-data stages
# (measured: configure 14-28 s, build 13-19 s, tests 16 s, bench_cuda 32 s,
# PyTorch 17-24 s, sanitizers 10-17 s, ncu 8 s); those two have not run on a
# GPU yet: estimated 2-2.5 minutes (cluster, bounded by stage_timeout 210 s)
# and 1-1.5 minutes (real data), the spot stage (never run on a GPU either)
# under a minute (20 CPU steps, 24 GPU units, their CPU checks), so about
# 6-8 minutes in all, within the
# budget below (the sanitizers and ncu get what is left). bench_cuda's BF16
# per-op table, its last part, has not run either: estimated 10-20 s more.
# Whenever a GPU is at hand, this is what runs first.
#
#   tools/device-check.sh                on the GPU machine, from anywhere in the repo
#   tools/device-check.sh --fetch-deps   here, with network: download what the GPU machine
#                                        lacks and cannot download into build-devdeps/
#                                        (carry build-devdeps, about 51 MiB of the 64 a
#                                        carry may hold): the Debian packages the build
#                                        needs (OpenBLAS, GoogleTest, Google Benchmark,
#                                        nlohmann-json, stb, zlib, CLI11, and zstd and
#                                        yaml-cpp for the cluster programs), the pgserver
#                                        wheel (PostgreSQL's server, libpq and headers)
#                                        and Fashion-MNIST's training split
#
# The workplace's device tool, for instance (after --fetch-deps here):
#   run(command="bash tools/device-check.sh", carry=["build-devdeps"], timeout_s=540)
#
# Environment:
#   OUT                   the report and the logs are written there when set
#   GANNF_DEVICE_BUILD    build folder (default build-device)
#   GANNF_DEVICE_ARCHS    GPU architectures (default native, else the GPU's own
#                         compute capability as nvidia-smi reports it)
#   GANNF_DEVICE_BATCH    batch for the benchmarks and PyTorch (default 128)
#   GANNF_DEVICE_BUDGET_S seconds the whole check may take (default 480); the
#                         cluster, bench_cuda, PyTorch and real-data stages are
#                         bounded by what is left of it, the sanitizers and ncu,
#                         last, get the rest
#   GANNF_DEVICE_SKIP     stages to leave out, e.g. "tests bench torch" (names: tests,
#                         train, cluster, bench, torch, fmnist, spot, sanitizers, ncu): a
#                         second, shorter call for the stages that need it; spot:
#                         honest GPU units against the spot check
#   GANNF_CLUSTER_*       tools/device-cluster.sh's settings (its header)
#
# Nothing here installs anything system-wide (the GPU machine has no network
# and its / must stay as it is): packages from build-devdeps/ are unpacked
# into the build folder and used only by the gannf build and its programs.
# The exit status is non-zero when the build fails, a test fails, a kernel
# disagrees with cuDNN, the cluster stage fails (a GPU submission rejected,
# distributed != local, a worker's error) or a real-data run fails; the report
# is printed either way.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
DEPS_DIR=$ROOT/build-devdeps
# zstd and yaml-cpp: the cluster stage's gannf-coord and gannf-worker (tools/device-cluster.sh).
DEB_PACKAGES=(libopenblas0-openmp libopenblas-openmp-dev libgtest-dev libgmock-dev
              libbenchmark-dev libbenchmark1debian nlohmann-json3-dev libgfortran5 libquadmath0
              libstb-dev zlib1g-dev libcli11-dev libzstd-dev libzstd1 libyaml-cpp-dev libyaml-cpp0.7)
# PostgreSQL's server, libpq and its headers, for the cluster stage: the
# manylinux wheel of pgserver (a zip; nothing of Python is used).
PGSERVER_WHEEL_VERSION=0.1.4
CARRY_LIMIT_MIB=64

if [ "${1:-}" = "--fetch-deps" ]; then
  mkdir -p "$DEPS_DIR"
  (cd "$DEPS_DIR" && apt-get download "${DEB_PACKAGES[@]}") || {
    echo "device-check: apt-get download failed (needs a Debian/Ubuntu machine with network)" >&2
    exit 1
  }
  if ! ls "$DEPS_DIR"/pgserver-"$PGSERVER_WHEEL_VERSION"-*.whl >/dev/null 2>&1; then
    python3 -m pip download --no-deps --only-binary :all: --platform manylinux2014_x86_64 --python-version 3.11 \
      -d "$DEPS_DIR" "pgserver==$PGSERVER_WHEEL_VERSION" >/dev/null || {
      echo "device-check: pip download pgserver==$PGSERVER_WHEEL_VERSION failed (needs PyPI)" >&2
      exit 1
    }
  fi
  # Fashion-MNIST's training split (images and labels, as the Debian package
  # dataset-fashion-mnist has them), for the real-data and cluster stages;
  # nothing else of that folder (no cache files: the stages write theirs into
  # the build folder).
  FM_SRC=${GANNF_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
  rm -rf "$DEPS_DIR/fashion-mnist" && mkdir -p "$DEPS_DIR/fashion-mnist"
  cp "$FM_SRC"/train-images-idx3-ubyte.gz "$FM_SRC"/train-labels-idx1-ubyte.gz "$DEPS_DIR/fashion-mnist/" || {
    echo "device-check: no Fashion-MNIST training files in $FM_SRC (apt-get install dataset-fashion-mnist, or set GANNF_FASHION_MNIST)" >&2
    exit 1
  }
  bytes=$(du -sb "$DEPS_DIR" | cut -f1)
  mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
  echo "device-check: build-devdeps/: $(ls "$DEPS_DIR"/*.deb | wc -l) Debian packages ($(du -shc "$DEPS_DIR"/*.deb | tail -1 | cut -f1)), $(basename "$(ls "$DEPS_DIR"/pgserver-*.whl | tail -1)") ($(du -sh "$DEPS_DIR"/pgserver-*.whl | tail -1 | cut -f1)), Fashion-MNIST train ($(du -sh "$DEPS_DIR/fashion-mnist" | cut -f1)): $mib MiB of the ${CARRY_LIMIT_MIB} MiB a carry may hold; carry build-devdeps"
  if [ "$bytes" -gt $((CARRY_LIMIT_MIB * 1048576 * 9 / 10)) ]; then
    echo "device-check: WARNING: build-devdeps/ is within 10% of the carry limit; old package versions left there? (rm -rf build-devdeps and fetch again)" >&2
  fi
  exit 0
elif [ $# -gt 0 ]; then
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi

T0=$(date +%s)
BUILD=${GANNF_DEVICE_BUILD:-build-device}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BATCH=${GANNF_DEVICE_BATCH:-128}
# With OUT set, the logs are written there as they are made: a run cut off
# by a time limit still brings back everything up to that point.
LOGS=${OUT:-$BUILD/device-logs}
mkdir -p "$LOGS"
REPORT=$LOGS/device-report.txt
: >"$REPORT"
rm -f "$LOGS/cluster-summary.txt"
STATUS=0
say() { echo "$*" | tee -a "$REPORT"; }
elapsed() { echo $(($(date +%s) - T0)); }
# The last, optional stages (sanitizers, ncu) fit into what is left of
# GANNF_DEVICE_BUDGET_S, so that the script ends -- report printed -- before
# the device tool's limit (540 s in the suggested call) cuts it off.
BUDGET=${GANNF_DEVICE_BUDGET_S:-480}
stage_timeout() {  # $1: what the stage would like; prints what it gets (0: skip)
  local left=$((BUDGET - $(elapsed) - 15))
  if [ "$left" -lt 30 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
skipped() {  # $1: a stage named in GANNF_DEVICE_SKIP
  case " ${GANNF_DEVICE_SKIP//,/ } " in *" $1 "*) return 0 ;; esac
  return 1
}
[ -n "${GANNF_DEVICE_SKIP:-}" ] && SKIP_NOTE="  stages left out (GANNF_DEVICE_SKIP): $GANNF_DEVICE_SKIP"

# ---- what is here ------------------------------------------------------------
GPU="none"
GPU_CC=""
if command -v nvidia-smi >/dev/null; then
  GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
  GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
fi
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
NVCC_V=$("$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
say "gannf device check, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "  gpu: ${GPU:-none} (compute capability ${GPU_CC:-?}); nvcc ${NVCC_V:-not found}; $(nproc) CPUs"
say "  commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' + local changes')"
[ "$GPU" = "none" ] && say "  WARNING: nvidia-smi sees no GPU; the cuda tests will report skipped"
[ -n "${SKIP_NOTE:-}" ] && say "$SKIP_NOTE"

# ---- configure ------------------------------------------------------------------
ARCHS=${GANNF_DEVICE_ARCHS:-native}
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DGANNF_NATIVE=ON -DCMAKE_CUDA_COMPILER="$NVCC")
command -v ninja >/dev/null && CMAKE_ARGS+=(-G Ninja)
# cuDNN for bench_cuda: beside the toolkit, else PyTorch's pip package.
if ! ls "$(dirname "$NVCC")"/../include/cudnn.h /usr/include/cudnn.h >/dev/null 2>&1; then
  CUDNN_PY=$(python3 -c 'import nvidia.cudnn as c; print(list(c.__path__)[0])' 2>/dev/null)
  [ -n "$CUDNN_PY" ] && CMAKE_ARGS+=(-DCUDNN_ROOT="$CUDNN_PY") &&
    export LD_LIBRARY_PATH="$CUDNN_PY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

configure() {  # $1 = architectures; the rest: extra arguments
  local archs=$1
  shift
  rm -f "$BUILD/CMakeCache.txt"
  cmake -S . -B "$BUILD" "${CMAKE_ARGS[@]}" -DGANNF_CUDA_ARCHS="$archs" "$@" >"$LOGS/configure.log" 2>&1
}

# The build's dependencies from build-devdeps/ (unpacked there, used by this build only).
DEPS_ARGS=()
DEVDEPS_ROOT=$BUILD/devdeps-root
DEVDEPS_LIB=$DEVDEPS_ROOT/usr/lib/x86_64-linux-gnu
unpack_devdeps() {
  ls "$DEPS_DIR"/*.deb >/dev/null 2>&1 || return 1
  # Unpacked into the build folder, so that build-devdeps/ stays the size of
  # the packages when it is carried to a GPU machine.
  if [ ! -d "$DEVDEPS_ROOT" ]; then
    mkdir -p "$DEVDEPS_ROOT" || return 1
    for d in "$DEPS_DIR"/*.deb; do dpkg-deb -x "$d" "$DEVDEPS_ROOT" || return 1; done
  fi
  # zlib1g-dev's libz.so points at a zlib1g it does not bring: the machine's own.
  local sysz
  sysz=$(ls /usr/lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1 2>/dev/null | head -1)
  [ -n "$sysz" ] && ln -sf "$sysz" "$DEVDEPS_LIB/libz.so"
  return 0
}
use_devdeps() {
  unpack_devdeps || return 1
  local usr=$DEVDEPS_ROOT/usr
  DEPS_ARGS=(-DCMAKE_PREFIX_PATH="$usr"
             -DGANNF_OPENBLAS="$DEVDEPS_LIB/openblas-openmp/libopenblas.so"
             -DGANNF_CBLAS_INCLUDE="$usr/include/x86_64-linux-gnu/openblas-openmp")
  # For the build (test discovery runs the test binaries) and every gannf program
  # below -- not for python3, which keeps the machine's own libraries.
  GANNF_LD="$DEVDEPS_LIB/openblas-openmp:$DEVDEPS_LIB"
  say "  dependencies: from build-devdeps/ ($(ls "$DEPS_DIR"/*.deb | wc -l) Debian packages)"
}
GANNF_LD=""
with_libs() { LD_LIBRARY_PATH="${GANNF_LD}${GANNF_LD:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}" "$@"; }

ok_configure=0
if [ "${GANNF_DEVICE_FORCE_DEVDEPS:-0}" = 1 ] && use_devdeps; then
  configure "$ARCHS" "${DEPS_ARGS[@]}" && ok_configure=1
else
  configure "$ARCHS" && ok_configure=1
  if [ $ok_configure = 0 ] && grep -qE "OpenBLAS not found|GoogleTest not found|nlohmann-json not found" "$LOGS/configure.log" &&
     use_devdeps; then
    configure "$ARCHS" "${DEPS_ARGS[@]}" && ok_configure=1
  fi
fi
# The image libraries (for gannf-train) and CLI11 (for the programs) are optional to CMake: where the
# machine lacks them, their headers come from build-devdeps/ (nothing else).
if [ $ok_configure = 1 ] && [ ${#DEPS_ARGS[@]} = 0 ] && grep -qE "✗ (stb|zlib|CLI11)" "$LOGS/configure.log" &&
   unpack_devdeps; then
  IMG_ARGS=()
  grep -q "✗ stb" "$LOGS/configure.log" && IMG_ARGS+=(-DGANNF_STB_INCLUDE="$DEVDEPS_ROOT/usr/include/stb")
  grep -q "✗ zlib" "$LOGS/configure.log" && IMG_ARGS+=(-DZLIB_ROOT="$DEVDEPS_ROOT/usr")
  grep -q "✗ CLI11" "$LOGS/configure.log" && IMG_ARGS+=(-DGANNF_CLI11_INCLUDE="$DEVDEPS_ROOT/usr/include")
  cp "$LOGS/configure.log" "$LOGS/configure-without-image-libs.log"
  if configure "$ARCHS" "${IMG_ARGS[@]}"; then
    DEPS_ARGS=("${IMG_ARGS[@]}")
    say "  image libraries: headers from build-devdeps/ (the machine has none)"
  else
    cp "$LOGS/configure.log" "$LOGS/configure-image-libs-failed.log"
    say "  image libraries from build-devdeps/: configure failed (configure-image-libs-failed.log)"
    configure "$ARCHS" || ok_configure=0
  fi
fi
# "native" needs CMake >= 3.24 and a GPU it can query; else name the GPU's own architecture.
if [ $ok_configure = 0 ] && [ "$ARCHS" = native ] && [ -n "$GPU_CC" ]; then
  ARCHS=$GPU_CC
  configure "$ARCHS" "${DEPS_ARGS[@]}" && ok_configure=1
fi
grep -E "✓|✗" "$LOGS/configure.log" | sed 's/^-- */  /' | tee -a "$REPORT"
if [ $ok_configure = 0 ]; then
  say "CONFIGURE FAILED (architectures $ARCHS) -- last lines of configure.log:"
  tail -15 "$LOGS/configure.log" | tee -a "$REPORT"
  [ -d "$DEPS_DIR" ] || say "  (missing dependencies? run tools/device-check.sh --fetch-deps on a machine with network and carry build-devdeps)"
  exit 1
fi
say "  configured for GPU architectures: $ARCHS ($(elapsed) s)"

# ---- build ------------------------------------------------------------------------
TB=$(date +%s)
TARGETS=(test_cuda gannf-info)
if grep -q "✓ cuDNN" "$LOGS/configure.log" && grep -q "✓ Google Benchmark" "$LOGS/configure.log"; then
  TARGETS+=(bench_cuda)
else
  say "  bench_cuda not built (needs Google Benchmark and cuDNN; see the ✗ lines above)"
fi
if with_libs cmake --build "$BUILD" -j"$(nproc)" --target "${TARGETS[@]}" >"$LOGS/build.log" 2>&1; then
  say "build: ok in $(($(date +%s) - TB)) s (${TARGETS[*]})"
else
  say "BUILD FAILED -- last lines of build.log:"
  grep -E "error|Error" "$LOGS/build.log" | head -20 | tee -a "$REPORT"
  exit 1
fi
# gannf-train needs the image libraries, which a GPU image may lack: built on
# its own, and its absence only noted.
with_libs cmake --build "$BUILD" -j"$(nproc)" --target gannf-train >"$LOGS/build-train.log" 2>&1 ||
  say "  gannf-train not built (no product run on the GPU; see build-train.log)"
with_libs "$BUILD/tools/gannf-info" 2>&1 | grep -E "^(cpu|cuda|cuda-tf32):|^  self-check" | sed 's/^/  /' | tee -a "$REPORT"

# ---- tests --------------------------------------------------------------------------
TT=$(date +%s)
if skipped tests; then
  : >"$LOGS/ctest.log"
  CTEST_RC=0
else
  with_libs timeout 150 ctest --test-dir "$BUILD" -L cuda --output-on-failure -j4 --timeout 120 \
    >"$LOGS/ctest.log" 2>&1
  CTEST_RC=$?
fi
# One line per test: "... Passed", "...***Skipped", "...***Failed" (or Timeout, Exception).
PASSED=$(grep -cE "Test +#[0-9]+: .* Passed" "$LOGS/ctest.log")
FAILED=$(grep -cE "Test +#[0-9]+: .*\*\*\*(Failed|Exception|Timeout)" "$LOGS/ctest.log")
SKIPPED=$(grep -cE "Test +#[0-9]+: .*\*\*\*Skipped" "$LOGS/ctest.log")
skipped tests || say "tests (ctest -L cuda): $PASSED passed, $FAILED failed, $SKIPPED skipped in $(($(date +%s) - TT)) s"
if [ $CTEST_RC -ne 0 ] || [ "$FAILED" -gt 0 ]; then
  STATUS=1
  grep -E "Failed|Timeout|Exception" "$LOGS/ctest.log" | grep -E "Test +#" | sed 's/^/  /' | head -20 | tee -a "$REPORT"
fi
if skipped tests; then rm -f "$LOGS/ctest-full.log"; else cp "$BUILD/Testing/Temporary/LastTest.log" "$LOGS/ctest-full.log" 2>/dev/null; fi
[ "$SKIPPED" -gt 0 ] && grep -m1 -o "no usable GPU.*" "$LOGS/ctest-full.log" | sed 's/^/  skipped: /' | tee -a "$REPORT"
# nvidia-smi sees a GPU, so a test skipped for want of one is a broken build or driver.
if [ -n "$GPU" ] && [ "$GPU" != "none" ] && grep -qs "no usable GPU" "$LOGS/ctest-full.log"; then
  STATUS=1
  say "  FAILED: nvidia-smi sees a GPU but cuda tests skipped for want of one (the back end did not start)"
fi

# ---- the product on the GPU: gannf-train (self-check, then 40 steps) ------------------
if [ -x "$BUILD/tools/gannf-train" ] && [ "$GPU" != "none" ] && ! skipped train; then
  for be in cuda cuda-tf32; do
    with_libs timeout 60 "$BUILD/tools/gannf-train" --backend $be --dataset synthetic:2048 --no-cache \
      --image-size 64 --batch-size 128 --steps 40 --sample-interval 0 --output-dir "$BUILD/train-$be" \
      >"$LOGS/train-$be.log" 2>&1
    rc=$?
    say "  gannf-train --backend $be: exit $rc; $(grep -m1 -o "self-check.*" "$LOGS/train-$be.log" || echo "no self-check line")"
    grep -E "steps in .* img/s" "$LOGS/train-$be.log" | tail -1 | sed 's/^/    /' | tee -a "$REPORT"
    [ $rc -ne 0 ] && { STATUS=1; tail -3 "$LOGS/train-$be.log" | sed 's/^/    /' | tee -a "$REPORT"; }
  done
fi

# ---- benchmarks -----------------------------------------------------------------------
# The worst of one ratio field ($2) of bench_cuda's RESULT op= lines of math $1
# over the large convolutions -- the passes of at least a quarter of the
# largest's FLOP (G.3-G.9 and D.2-D.8 at f = 64) -- against issue 16's target
# for TF32, each within 1.5x of cuDNN. $3: what the ratio is, in words.
worst_large() {
  grep "^RESULT op=.* math=$1 " "$LOGS/bench_cuda.log" | awk -v key="$2" -v what="$3" '
    {split("", v); for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
     n++; op[n] = v["op"]; fl[n] = (v["gannf_gflops"] + 0) * (v["gannf_ms"] + 0); r[n] = v[key] + 0
     if (fl[n] > mx) mx = fl[n]}
    END {for (i = 1; i <= n; i++) if (fl[i] >= mx / 4) {m++; if (m == 1 || r[i] > w) {w = r[i]; at = op[i]}}
         if (m) printf "  large convolutions (%d passes): worst %s %.2f (%s); target <= 1.5\n", m, what, w, at}' |
    tee -a "$REPORT"
}
GANNF_IPS=""
GANNF_TF32_IPS=""
GANNF_1SM_IPS=""
GANNF_WMMA_IPS=""
GANNF_BF16_IPS=""
GANNF_GRAPH_IPS=""
BENCH_LIMIT=$(stage_timeout 240)
if [ -x "$BUILD/bench/bench_cuda" ] && { skipped bench || [ "$BENCH_LIMIT" = 0 ]; }; then
  say "  bench_cuda: $(skipped bench && echo "left out (GANNF_DEVICE_SKIP)" || echo "skipped (the time budget is spent)")"
elif [ -x "$BUILD/bench/bench_cuda" ]; then
  TBN=$(date +%s)
  with_libs timeout "$BENCH_LIMIT" "$BUILD/bench/bench_cuda" --batch="$BATCH" --benchmark_min_time=0.05 \
    >"$LOGS/bench_cuda.log" 2>&1
  RC=$?
  grep -E "^# (gpu|cuDNN|check:|memory:)" "$LOGS/bench_cuda.log" | sed 's/^# /  /' | tee -a "$REPORT"
  if [ $RC -ne 0 ]; then
    STATUS=1
    say "BENCH_CUDA FAILED (exit $RC) -- last lines:"
    tail -8 "$LOGS/bench_cuda.log" | tee -a "$REPORT"
  fi
  for math in fp32 tf32; do
    grep -q "^RESULT op=.* math=$math " "$LOGS/bench_cuda.log" || continue
    say ""
    if [ $math = fp32 ]; then
      say "per op, FP32, batch $BATCH (median ms; ratio = gannf / cuDNN's fastest FP32 algorithm):"
    else
      say "per op, TF32 tensor cores, batch $BATCH (ratio = gannf / cuDNN's fastest with CUDNN_TENSOR_OP_MATH):"
    fi
    # "1/SM": the large FP32 tile built for 1 block per SM (same bits); for TF32
    # that column ("WMMA") is the WMMA kernel the staged kernels replace.
    alt=1/SM
    [ $math = tf32 ] && alt=WMMA
    printf "  %-10s %-10s %9s %9s %9s %7s %9s\n" layer pass gannf $alt cuDNN ratio GFLOP/s | tee -a "$REPORT"
    grep "^RESULT op=.* math=$math " "$LOGS/bench_cuda.log" |
      sed -E 's/RESULT op=([^/]*)\/([^ ]*) math=[^ ]* gannf_ms=([^ ]*) cudnn_ms=([^ ]*) ratio=([^ ]*) gannf_gflops=([^ ]*).* gannf1_ms=([^ ]*).*/\1 \2 \3 \4 \5 \6 \7/' |
      while read -r layer pass g c r f g2; do
        [ "$g2" = nan ] && g2=-
        printf "  %-10s %-10s %9.3f %9s %9.3f %7.2f %9s\n" "$layer" "$pass" "$g" "$g2" "$c" "$r" "$f"
      done | tee -a "$REPORT"
    grep "^RESULT op=.* math=$math " "$LOGS/bench_cuda.log" | awk -v alt="$alt" '{for(i=1;i<=NF;i++) if ($i ~ /^(gannf_ms|cudnn_ms|gannf1_ms)=/) {split($i,a,"="); s[a[1]]+=a[2]}} END {if (s["cudnn_ms"] > 0) printf "  all convolutions: gannf %.2f ms, cuDNN %.2f ms, ratio %.2f (%s column: %.2f ms)\n", s["gannf_ms"], s["cudnn_ms"], s["gannf_ms"]/s["cudnn_ms"], alt, s["gannf1_ms"]}' | tee -a "$REPORT"
    [ $math = tf32 ] && worst_large tf32 ratio "gannf / cuDNN"
  done
  # BF16 (bench_cuda's last table, not yet run on a GPU): gannf against cuDNN
  # on BF16 tensors, and against cuDNN after casting its FP32 inputs to BF16
  # on every call (+cast: about what PyTorch's autocast pays); rel L2: gannf's
  # output against cuDNN's (above 5e-2 a warning; the exit status ignores it,
  # as it ignores any failure of that table: its "# bf16 per-op" lines say it).
  if grep -qE "^RESULT op=.* math=bf16 |^# bf16 per-op" "$LOGS/bench_cuda.log"; then
    say ""
    say "per op, BF16 tensor cores, batch $BATCH (ratio = gannf / cuDNN with BF16 tensors, FP32 compute; +cast: cuDNN casting its FP32 inputs each call):"
    printf "  %-10s %-10s %9s %9s %7s %9s %7s %9s %9s\n" layer pass gannf cuDNN ratio +cast ratio GFLOP/s "rel L2" | tee -a "$REPORT"
    grep "^RESULT op=.* math=bf16 " "$LOGS/bench_cuda.log" | awk '
      {split("", v); for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
       split(v["op"], lp, "/")
       warn = (v["rel_l2"] ~ /nan/ || v["rel_l2"] + 0 > 5e-2) ? "  WARNING: far from cuDNN" : ""
       printf "  %-10s %-10s %9.3f %9.3f %7.2f %9.3f %7.2f %9s %9s%s\n", lp[1], lp[2], v["gannf_ms"], v["cudnn_ms"],
              v["ratio"], v["cudnn_cast_ms"], v["cast_ratio"], v["gannf_gflops"], v["rel_l2"], warn}' | tee -a "$REPORT"
    grep "^RESULT op=.* math=bf16 " "$LOGS/bench_cuda.log" | awk '{for(i=1;i<=NF;i++) if ($i ~ /^(gannf_ms|cudnn_ms|cudnn_cast_ms)=/) {split($i,a,"="); s[a[1]]+=a[2]}} END {if (s["cudnn_ms"] > 0) printf "  all convolutions: gannf %.2f ms, cuDNN %.2f ms, ratio %.2f; cuDNN with the casts %.2f ms, ratio %.2f\n", s["gannf_ms"], s["cudnn_ms"], s["gannf_ms"]/s["cudnn_ms"], s["cudnn_cast_ms"], s["gannf_ms"]/s["cudnn_cast_ms"]}' | tee -a "$REPORT"
    worst_large bf16 ratio "gannf / cuDNN"
    worst_large bf16 cast_ratio "gannf / cuDNN+cast"
    grep -E "^# bf16 per-op" "$LOGS/bench_cuda.log" | sed 's/^# /  /' | tee -a "$REPORT"
  fi
  if grep -q "^# where a step goes" "$LOGS/bench_cuda.log"; then
    say ""
    grep -E "^# (where a step goes|  )" "$LOGS/bench_cuda.log" | sed 's/^# /  /' | tee -a "$REPORT"
  fi
  GANNF_IPS=$(sed -n 's/^RESULT impl=gannf math=fp32 .*images_per_s=\([0-9.]*\).*/\1/p' "$LOGS/bench_cuda.log")
  GANNF_TF32_IPS=$(sed -n 's/^RESULT impl=gannf math=tf32 .*images_per_s=\([0-9.]*\).*/\1/p' "$LOGS/bench_cuda.log")
  GANNF_1SM_IPS=$(sed -n 's/^RESULT impl=gannf math=fp32_1sm .*images_per_s=\([0-9.]*\).*/\1/p' "$LOGS/bench_cuda.log")
  GANNF_WMMA_IPS=$(sed -n 's/^RESULT impl=gannf math=tf32_wmma .*images_per_s=\([0-9.]*\).*/\1/p' "$LOGS/bench_cuda.log")
  GANNF_BF16_IPS=$(sed -n 's/^RESULT impl=gannf math=bf16 .*images_per_s=\([0-9.]*\).*/\1/p' "$LOGS/bench_cuda.log")
  GANNF_GRAPH_IPS=$(sed -n 's/^RESULT impl=gannf math=fp32_graph .*images_per_s=\([0-9.]*\).*/\1/p' "$LOGS/bench_cuda.log")
  say "  (bench_cuda: $(($(date +%s) - TBN)) s)"
fi

# ---- PyTorch on the same GPU ---------------------------------------------------------------
TORCH_IPS=""
TORCH32_IPS=""
TORCH_BF16_IPS=""
HAVE_TORCH_CUDA=0
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && HAVE_TORCH_CUDA=1
if skipped torch; then
  say "  PyTorch's step: left out (GANNF_DEVICE_SKIP)"
elif [ $HAVE_TORCH_CUDA = 1 ]; then
  TP=$(date +%s)
  # PyTorch's default lets cuDNN use TF32 tensor cores for FP32 convolutions;
  # torch_step_fp32.py turns that off, for the same precision as gannf;
  # bf16 is PyTorch's mixed precision, torch.autocast(bfloat16) (cuda-bf16's peer).
  for variant in default fp32 bf16; do
    script=bench/peer/torch_step.py
    extra=()
    [ $variant = fp32 ] && script=bench/peer/torch_step_fp32.py
    [ $variant = bf16 ] && extra=(--autocast bf16)
    limit=$(stage_timeout 80)
    if [ "$limit" = 0 ]; then say "  torch ($variant): skipped (the time budget is spent)"; continue; fi
    PYTHONUNBUFFERED=1 timeout "$limit" python3 "$script" --device cuda --batch "$BATCH" --f 64 \
      --warmup 5 --reps 10 --steps 3 ${extra[@]+"${extra[@]}"} >"$LOGS/torch_$variant.log" 2>&1
    ips=$(sed -n 's/^RESULT impl=torch.*images_per_s=\([0-9.]*\).*/\1/p' "$LOGS/torch_$variant.log")
    case $variant in default) TORCH_IPS=$ips ;; fp32) TORCH32_IPS=$ips ;; bf16) TORCH_BF16_IPS=$ips ;; esac
    [ -z "$ips" ] && { say "  torch ($variant) failed -- last lines:"; tail -3 "$LOGS/torch_$variant.log" | tee -a "$REPORT"; }
  done
  say "  (PyTorch: $(($(date +%s) - TP)) s, $(python3 -c 'import torch; print("torch", torch.__version__, "cuDNN", torch.backends.cudnn.version())' 2>/dev/null))"
else
  say "  PyTorch with CUDA not found here: no PyTorch figure (never pip install on the GPU machine)"
fi

# ---- a GPU worker in a real cluster (tools/device-cluster.sh; issue 16, item 4) -------------
# Its own script, with its own lines in the report and its KEY=value summary
# in cluster-summary.txt for the table below. It reconfigures this build
# folder with the pgserver wheel's libpq and builds gannf-coord and
# gannf-worker into it. The outer timeout only backs up its own limit.
CLUSTER_STATE="not run"
if skipped cluster; then
  CLUSTER_STATE="left out (GANNF_DEVICE_SKIP)"
elif [ "$GPU" = "none" ] && [ -z "${GANNF_CLUSTER_GPU_BACKEND:-}" ]; then
  CLUSTER_STATE="not run (no GPU)"
else
  CLUSTER_LIMIT=$(stage_timeout 210)
  if [ "$CLUSTER_LIMIT" = 0 ]; then
    CLUSTER_STATE="skipped (the time budget is spent)"
    say "  cluster: skipped (the time budget is spent)"
  else
    GANNF_LD="$GANNF_LD" OUT="$LOGS" GANNF_CLUSTER_BUILD="$BUILD" \
      timeout -k 15 $((CLUSTER_LIMIT + 30)) bash "$ROOT/tools/device-cluster.sh" --time-limit "$CLUSTER_LIMIT"
    rc=$?
    case $rc in
      0) CLUSTER_STATE=ok ;;
      3) CLUSTER_STATE="skipped: $(sed -n 's/^CLUSTER=//p' "$LOGS/cluster-summary.txt" 2>/dev/null)" ;;
      *) CLUSTER_STATE=FAILED
         STATUS=1
         grep -q "FAILED (cluster)" "$REPORT" ||
           say "  FAILED: the cluster stage ended with exit $rc (124: cut off by its time limit) after its last line above (logs cluster-*.log)" ;;
    esac
  fi
fi

# ---- real data on the GPU: Fashion-MNIST at 64x64 (issue 16, item 5) -------------------------
# gannf-train end to end (one epoch, 468 steps of 128; its closing line's
# images/s, from its first step to its last, the final sample grid and
# checkpoint included; the packing of the dataset cache before it is not)
# against bench/peer/torch_train.py: the same DCGAN and step in PyTorch, the
# images prepared as gannf prepares them and held on the GPU, one epoch's
# worth of steps timed after 20 warm-up steps. Both at 64x64x1, f = 64, batch
# BATCH; FP32 (gannf cuda, PyTorch with TF32 off), TF32 (gannf cuda-tf32,
# PyTorch's default) and BF16 (gannf cuda-bf16, PyTorch's autocast(bfloat16)).
FM_GANNF_IPS=""
FM_GANNF_TF32_IPS=""
FM_GANNF_BF16_IPS=""
FM_TORCH_BF16_IPS=""
FM_TORCH32_IPS=""
FM_TORCH_IPS=""
FM_SRC=${GANNF_DEVICE_FASHION_MNIST:-}
if [ -z "$FM_SRC" ]; then
  for d in "$DEPS_DIR/fashion-mnist" /usr/share/datasets/fashion-mnist; do
    ls "$d"/train-images-idx3-ubyte* >/dev/null 2>&1 && { FM_SRC=$d; break; }
  done
fi
if skipped fmnist; then
  say "  Fashion-MNIST stage: left out (GANNF_DEVICE_SKIP)"
elif [ -z "$FM_SRC" ]; then
  say "  Fashion-MNIST stage: skipped: no train-images-idx3-ubyte in build-devdeps/fashion-mnist (--fetch-deps puts it there)"
elif [ "$GPU" != "none" ]; then
  # gannf packs its dataset cache beside the data: a folder of links here, so
  # that the carried folder stays as it came.
  FM=$BUILD/fashion-mnist
  mkdir -p "$FM"
  for f in "$FM_SRC"/train-*-idx*-ubyte*; do ln -sf "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$FM/"; done
  TF=$(date +%s)
  say ""
  say "Fashion-MNIST (60000 images) at 64x64x1, f = 64, batch $BATCH, one epoch:"
  if [ -x "$BUILD/tools/gannf-train" ]; then
    for be in cuda cuda-tf32 cuda-bf16; do
      limit=$(stage_timeout 75)
      if [ "$limit" = 0 ]; then say "  gannf-train --backend $be: skipped (the time budget is spent)"; continue; fi
      t1=$(date +%s)
      with_libs timeout "$limit" "$BUILD/tools/gannf-train" --backend $be --dataset "$FM" --image-size 64 \
        --batch-size "$BATCH" --epochs 1 --sample-interval 0 --checkpoint-interval 0 \
        --output-dir "$BUILD/fmnist-$be" >"$LOGS/fmnist-gannf-$be.log" 2>&1
      rc=$?
      ips=$(sed -n 's/.*steps in [0-9.]* s (\([0-9.]*\) img\/s).*/\1/p' "$LOGS/fmnist-gannf-$be.log" | tail -1)
      steady=$(grep -o "| [0-9.]* img/s |" "$LOGS/fmnist-gannf-$be.log" | tail -1 | tr -d '| ' | sed 's/img\/s//')
      case $be in cuda) FM_GANNF_IPS=$ips ;; cuda-tf32) FM_GANNF_TF32_IPS=$ips ;; cuda-bf16) FM_GANNF_BF16_IPS=$ips ;; esac
      say "  gannf-train --backend $be: exit $rc, ${ips:-n/a} img/s end to end (last progress line ${steady:-n/a}); $(($(date +%s) - t1)) s with start-up and the cache"
      if [ $rc -ne 0 ]; then STATUS=1; say "  FAILED: gannf-train --backend $be on Fashion-MNIST: $(grep -v '^$' "$LOGS/fmnist-gannf-$be.log" | tail -1)"; fi
    done
  fi
  if [ $HAVE_TORCH_CUDA = 1 ]; then
    for math in fp32 default bf16; do
      limit=$(stage_timeout 75)
      if [ "$limit" = 0 ]; then say "  torch_train.py --math $math: skipped (the time budget is spent)"; continue; fi
      PYTHONUNBUFFERED=1 timeout "$limit" python3 bench/peer/torch_train.py --device cuda --data "$FM" \
        --image-size 64 --batch "$BATCH" --f 64 --math $math --warmup 20 >"$LOGS/fmnist-torch-$math.log" 2>&1
      ips=$(sed -n 's/^RESULT impl=torch.*images_per_s=\([0-9.]*\).*/\1/p' "$LOGS/fmnist-torch-$math.log")
      case $math in fp32) FM_TORCH32_IPS=$ips ;; default) FM_TORCH_IPS=$ips ;; bf16) FM_TORCH_BF16_IPS=$ips ;; esac
      if [ -n "$ips" ]; then
        say "  PyTorch (torch_train.py --math $math): $ips img/s; $(grep -m1 -o "read in .*warm-up steps in [0-9.]* s" "$LOGS/fmnist-torch-$math.log")"
      else
        say "  PyTorch (torch_train.py --math $math) failed -- last lines:"
        tail -3 "$LOGS/fmnist-torch-$math.log" | sed 's/^/    /' | tee -a "$REPORT"
      fi
    done
  else
    say "  PyTorch with CUDA not found here: no PyTorch figure on Fashion-MNIST"
  fi
  say "  (Fashion-MNIST stage: $(($(date +%s) - TF)) s)"
fi

# ---- the spot check of a GPU worker's units at the class's size (issue 16, item 2) ----------
# bench_spot_check: the reference DCGAN (64x64x3, f = 64) after 20 local steps
# on the CPU (written once, read by each back end with --weights-from); units
# of 64 images computed on the GPU as gannf-worker --backend B computes them,
# each checked on the CPU as the coordinator checks it, against B's tolerance
# (src/cluster/spot_check.cpp). A failed unit is an honest GPU worker the
# coordinator would quarantine: a failure of this check.
SPOT_STATE="not run"
if skipped spot; then
  SPOT_STATE="left out (GANNF_DEVICE_SKIP)"
elif [ "$GPU" = "none" ]; then
  SPOT_STATE="not run (no GPU)"
elif ! with_libs cmake --build "$BUILD" -j"$(nproc)" --target bench_spot_check >"$LOGS/build-spot.log" 2>&1; then
  SPOT_STATE="not built (build-spot.log)"
  say "  bench_spot_check not built: $(grep -m1 -E "error|Error" "$LOGS/build-spot.log")"
else
  TSC=$(date +%s)
  say ""
  say "spot checks of honest GPU units, 64x64x3, f = 64, units of 64 images after 20 local steps (bench_spot_check):"
  SPOT_W=$BUILD/spot-weights
  SPOT_STATE=ok
  limit=$(stage_timeout 40)
  if [ "$limit" = 0 ] || ! with_libs timeout "$limit" "$BUILD/bench/bench_spot_check" --units 1 --train-steps 20       --worker-threads "$(nproc)" --save "$SPOT_W" >"$LOGS/spot-weights.log" 2>&1; then
    SPOT_STATE="no weights (spot-weights.log)"
    say "  the weights: $( [ "$limit" = 0 ] && echo "skipped (the time budget is spent)" || tail -1 "$LOGS/spot-weights.log")"
  else
    for be in cuda cuda-tf32 cuda-bf16; do
      limit=$(stage_timeout 40)
      if [ "$limit" = 0 ]; then say "  --worker-backend $be: skipped (the time budget is spent)"; continue; fi
      with_libs timeout "$limit" "$BUILD/bench/bench_spot_check" --worker-backend $be --weights-from "$SPOT_W" \
        --units 8 --checker-threads "$(nproc)" >"$LOGS/spot-$be.log" 2>&1
      rc=$?
      line=$(grep -m1 "^worker " "$LOGS/spot-$be.log" | sed 's/^worker //')
      say "  $be (exit $rc): ${line:-$(tail -1 "$LOGS/spot-$be.log")}"
      grep -E "^  unit [0-9]+ FAILED|^  units by" "$LOGS/spot-$be.log" | head -4 | tee -a "$REPORT"
      if [ $rc -ne 0 ]; then STATUS=1; SPOT_STATE=FAILED; say "  FAILED: honest $be units against the spot check (spot-$be.log)"; fi
    done
  fi
  say "  (spot checks: $(($(date +%s) - TSC)) s)"
fi

# ---- compute-sanitizer on small cases (last: a hang here costs no figures) -----------------
# racecheck: shared-memory hazards between the threads of a block, which the
# host emulator's one-fiber-at-a-time schedule can only approximate; memcheck:
# out-of-bounds and misaligned accesses, on the tests that failed if any did
# (else on the small conv and BN cases).
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$SAN" ] && [ -x "$BUILD/tests/test_cuda" ] && [ "$GPU" != "none" ] && ! skipped sanitizers; then
  TS=$(date +%s)
  SMALL='Ops/CudaConv.*/conv_s2_odd:Ops/CudaConv.*/conv_large_tile:Ops/CudaConv.*/conv_phase_mid:Ops/CudaConv.*/conv_phase_s1_last:Ops/CudaConvTf32.*/conv_s2_odd:Ops/CudaConvTf32.*/conv_large_tile:Ops/CudaConvBf16.*/conv_s2_odd:Ops/CudaConvBf16.*/conv_phase_mid:Ops/CudaBatchNorm.*:CudaTest.BatchNormOnMisalignedTensorsTakesTheScalarPath:CudaTest.AdamMatchesCpuOverSeveralSteps'
  FAILED_TESTS=$(sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\) .*(\(Failed\|Timeout\|Exception\))$/\1/p' \
                 "$LOGS/ctest.log" | head -4 | paste -sd: -)
  for tool in memcheck racecheck; do
    filter=$SMALL
    [ $tool = memcheck ] && [ -n "$FAILED_TESTS" ] && filter=$FAILED_TESTS
    limit=$(stage_timeout 120)
    if [ "$limit" = 0 ]; then say "  compute-sanitizer $tool: skipped (the time budget is spent)"; continue; fi
    with_libs timeout "$limit" "$SAN" --tool $tool --error-exitcode 3 "$BUILD/tests/test_cuda" \
      --gtest_filter="$filter" >"$LOGS/sanitizer-$tool.log" 2>&1
    rc=$?
    summary=$(grep -m1 -E "ERROR SUMMARY|RACECHECK SUMMARY" "$LOGS/sanitizer-$tool.log")
    say "  compute-sanitizer $tool: exit $rc, ${summary:-no summary line} (filter: ${filter:0:60}...)"
    [ $rc = 3 ] && STATUS=1
  done
  say "  (sanitizers: $(($(date +%s) - TS)) s)"
fi

# ---- Nsight Compute on one layer's GEMMs (last: profilers are the least certain) -----------
# D.2 (conv 64->128, 32x32), FP32 then TF32, the kernels its correctness
# checks launch: duration, SM and memory throughput against the GPU's peak,
# registers, achieved occupancy. Hardware counters work on some machine kinds
# only (device README: Firecracker yes, gVisor no); clocks are left alone.
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
NCU_LIMIT=$(stage_timeout 120)
if skipped ncu; then
  :
elif [ -n "$NCU" ] && [ "$NCU_LIMIT" = 0 ]; then
  say "  Nsight Compute: skipped (the time budget is spent)"
elif [ -n "$NCU" ] && [ -x "$BUILD/bench/bench_cuda" ] && [ "$GPU" != "none" ]; then
  TN=$(date +%s)
  with_libs timeout "$NCU_LIMIT" "$NCU" --clock-control none --section SpeedOfLight --section LaunchStats \
    --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis --kernel-name "regex:gemm_(tf32_|staged_)?kernel" --launch-count 18 --csv --page details \
    "$BUILD/bench/bench_cuda" --layer=6 --step=0 --breakdown=0 --bf16=0 --benchmark_filter=NONE \
    >"$LOGS/ncu.log" 2>&1
  rc=$?
  say ""
  say "Nsight Compute, D.2's GEMM kernels (exit $rc, $(($(date +%s) - TN)) s; ncu.log has everything):"
  awk -f "$ROOT/tools/ncu_summary.awk" "$LOGS/ncu.log" | tee -a "$REPORT"
  [ $rc -ne 0 ] && grep -m3 -E "ERR|rror" "$LOGS/ncu.log" | sed 's/^/  /' | tee -a "$REPORT"
fi

# ---- report ----------------------------------------------------------------------------
say ""
say "full training step, DCGAN 64x64x3, f = 64, batch $BATCH (images/s, higher is better):"
say "  gannf --backend cuda (FP32, deterministic)      ${GANNF_IPS:-n/a}"
say "    the same, large tile at 1 block/SM            ${GANNF_1SM_IPS:-n/a}"
say "    the same, passes replayed as a CUDA graph      ${GANNF_GRAPH_IPS:-n/a}"
say "  PyTorch FP32 (TF32 off)                         ${TORCH32_IPS:-n/a}"
say "  gannf --backend cuda-tf32 (TF32 convolutions)   ${GANNF_TF32_IPS:-n/a}"
say "    the same, WMMA kernel only (before staging)   ${GANNF_WMMA_IPS:-n/a}"
say "  gannf --backend cuda-bf16 (BF16 convolutions)   ${GANNF_BF16_IPS:-n/a}"
say "  PyTorch autocast(bfloat16)                      ${TORCH_BF16_IPS:-n/a}"
say "  PyTorch default (TF32 convolutions)             ${TORCH_IPS:-n/a}"
# One line "  WHAT: a/bx SUFFIX" where both figures are there.
say_ratio() {  # what a b [suffix]
  [ -n "$2" ] && [ -n "$3" ] &&
    say "  $1: $(awk -v a="$2" -v b="$3" 'BEGIN {printf "%.2f", a / b}')x${4:+ $4}"
  return 0
}
say_ratio "gannf FP32 / PyTorch FP32" "$GANNF_IPS" "$TORCH32_IPS" "(target >= 1.0, stretch 1.5)"
say_ratio "gannf TF32 / PyTorch default (TF32)" "$GANNF_TF32_IPS" "$TORCH_IPS"
say_ratio "gannf FP32 / PyTorch default (TF32)" "$GANNF_IPS" "$TORCH_IPS"
say_ratio "gannf BF16 / PyTorch autocast(bfloat16)" "$GANNF_BF16_IPS" "$TORCH_BF16_IPS" "(target >= 1.0)"
say ""
say "Fashion-MNIST 64x64x1, f = 64, batch $BATCH, one epoch, end to end (images/s):"
say "  gannf-train --backend cuda (FP32)               ${FM_GANNF_IPS:-n/a}"
say "  PyTorch FP32 (TF32 off), data on the GPU        ${FM_TORCH32_IPS:-n/a}"
say "  gannf-train --backend cuda-tf32                 ${FM_GANNF_TF32_IPS:-n/a}"
say "  PyTorch default (TF32 convolutions)             ${FM_TORCH_IPS:-n/a}"
say "  gannf-train --backend cuda-bf16                 ${FM_GANNF_BF16_IPS:-n/a}"
say "  PyTorch autocast(bfloat16)                      ${FM_TORCH_BF16_IPS:-n/a}"
say_ratio "gannf FP32 / PyTorch FP32" "$FM_GANNF_IPS" "$FM_TORCH32_IPS"
say_ratio "gannf TF32 / PyTorch default (TF32)" "$FM_GANNF_TF32_IPS" "$FM_TORCH_IPS"
say_ratio "gannf BF16 / PyTorch autocast(bfloat16)" "$FM_GANNF_BF16_IPS" "$FM_TORCH_BF16_IPS"
cs() { sed -n "s/^$1=//p" "$LOGS/cluster-summary.txt" 2>/dev/null | tail -1; }
say ""
say "spot checks of honest GPU units (bench_spot_check): ${SPOT_STATE}"
say "cluster (tools/device-cluster.sh): ${CLUSTER_STATE}"
if [ -s "$LOGS/cluster-summary.txt" ] && [ "$CLUSTER_STATE" != "not run" ]; then
  CLUSTER_DL_W=$(cs CLUSTER_DL_WORST)
  say "  distributed = local with the GPU worker in the mix: $(cs CLUSTER_DL)${CLUSTER_DL_W:+ (worst tensor $CLUSTER_DL_W relative L2)}"
  say "  run ($(cs CLUSTER_SETTINGS)): $(cs CLUSTER_RUN), $(cs CLUSTER_UPDATES) updates; units: gpu-worker $(cs CLUSTER_GPU_UNITS), cpu-worker $(cs CLUSTER_CPU_UNITS)"
  say "  gpu-worker images/s: through the database $(cs CLUSTER_GPU_DB_IPS), computing $(cs CLUSTER_GPU_COMPUTE_IPS); gannf-train on the same settings $(cs CLUSTER_TRAIN_IPS)"
fi
say "device check finished in $(elapsed) s, status $STATUS; logs in $LOGS"
exit $STATUS
