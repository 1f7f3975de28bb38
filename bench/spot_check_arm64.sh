#!/usr/bin/env bash
# Honest arm64 units against this machine's spot check (docs/security.md,
# "Other machines' kernels"): an arm64 worker (a Mac's container, a Raspberry
# Pi, an arm64 server) computes its units with arm64's OpenBLAS kernels and
# GCC's arm64 code; the coordinator recomputes them here. Under
# qemu-user-static, so the figure is about the kernels' arithmetic, not
# their speed.
#   1. bench_spot_check here trains the reference DCGAN for S local steps and
#      writes the weights (--save);
#   2. the arm64 bench_spot_check (tools/cross-arm64.sh --build-only) computes
#      N units of I images for those weights under qemu (--weights-from,
#      --save), 1 thread, OPENBLAS_CORETYPE=T when given (armv8, the generic
#      kernels qemu gets, or e.g. NEOVERSEN1);
#   3. bench_spot_check here checks them with 2 threads and 1 (--against).
# Exit status: bench_spot_check's (1: an honest unit failed).
# Under qemu a unit of 16 images took about 80 s, one of 64 about 330 s (2-core
# development machine, AMD EPYC).
#
#   bench/spot_check_arm64.sh [-b BUILD_DIR] [--arm-build DIR] [--units N] [--images I]
#                             [--micro-batch M] [--train-steps S] [--coretype T] [--work DIR]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
BUILD=build ARM_BUILD=build-arm64 UNITS=24 IMAGES=16 MICRO=8 STEPS=5 CORETYPE="" WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    -b) BUILD=$2; shift 2 ;;
    --arm-build) ARM_BUILD=$2; shift 2 ;;
    --units) UNITS=$2; shift 2 ;;
    --images) IMAGES=$2; shift 2 ;;
    --micro-batch) MICRO=$2; shift 2 ;;
    --train-steps) STEPS=$2; shift 2 ;;
    --coretype) CORETYPE=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "spot_check_arm64.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$BUILD/bench/bench_spot_check
[ -x "$HERE" ] || { echo "spot_check_arm64.sh: no $HERE: cmake --build $BUILD --target bench_spot_check" >&2; exit 1; }
GANNF_TARGETS=bench_spot_check bash "$ROOT/tools/cross-arm64.sh" --build-only "$ARM_BUILD" | tail -1
ARM=$ARM_BUILD/bench/bench_spot_check
sysroot=${GANNF_ARM64_SYSROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/gannf/arm64-sysroot}
lib=$sysroot/usr/lib/aarch64-linux-gnu
[ -n "$WORK" ] || WORK=$(mktemp -d)
mkdir -p "$WORK"
SIZES=(--images "$IMAGES" --micro-batch "$MICRO" --worker-threads 1)

echo "spot_check_arm64.sh: 1. the weights, $STEPS local steps here ($WORK/weights)"
"$HERE" --units 1 --train-steps "$STEPS" "${SIZES[@]}" --save "$WORK/weights" | grep -v "^wrote"
echo "spot_check_arm64.sh: 2. $UNITS arm64 units of $IMAGES images under qemu (${CORETYPE:-default} kernels)"
t0=$SECONDS
env ${CORETYPE:+OPENBLAS_CORETYPE=$CORETYPE} OMP_NUM_THREADS=1 QEMU_LD_PREFIX=/usr/aarch64-linux-gnu \
  LD_LIBRARY_PATH="$lib/openblas-openmp:$lib:$sysroot/lib/aarch64-linux-gnu" \
  qemu-aarch64-static "$ARM" --units "$UNITS" "${SIZES[@]}" --weights-from "$WORK/weights" --save "$WORK/arm64" |
  grep -E "^this process|^wrote"
echo "spot_check_arm64.sh:    under qemu in $((SECONDS - t0)) s"
echo "spot_check_arm64.sh: 3. checked here"
"$HERE" --units "$UNITS" "${SIZES[@]}" --against "$WORK/arm64" --checker-threads 2,1
