#!/usr/bin/env bash
# Cross-compiles gannf for linux/arm64 and runs its unit, gradcheck and parity
# tests under qemu-user-static (docs/platforms.md, arm64).
#
#   tools/cross-arm64.sh [--build-only] [BUILD_DIR]      (default build-arm64)
#
# --build-only: build, run no test (e.g. GANNF_TARGETS=bench_spot_check, to
# measure the spot check against arm64's kernels: docs/security.md).
#
# What it needs (Debian 12, as root or with sudo; installed when missing):
#   crossbuild-essential-arm64 qemu-user-static, and dpkg's arm64 architecture
#   (dpkg --add-architecture arm64; apt-get update) to download arm64 packages.
# The arm64 libraries are NOT installed into the system: installing a -dev
# package for a second architecture makes apt remove the host's copy of the
# ones that are not co-installable (libpq-dev, libyaml-cpp-dev). They are
# unpacked into a sysroot instead, GANNF_ARM64_SYSROOT
# (default ~/.cache/gannf/arm64-sysroot), with `apt-get download` + `dpkg -x`.
# Only what the unit, gradcheck and parity tests build on is fetched; the
# cluster programs are built for arm64 by the container image
# (containers/build.sh cpu --arch arm64).
#
# Environment: GANNF_ARM64_SYSROOT (above); GANNF_JOBS (build jobs, nproc);
# GANNF_CTEST_ARGS (extra ctest arguments, e.g. "-R Gemm");
# GANNF_TARGETS (build only these targets, e.g. "test_kernels test_model": a
# few minutes instead of the whole cross build; the tests of test binaries not
# built are left out, the *_smoke tests too -- their programs are not built).
# Example: GANNF_TARGETS="test_kernels test_model" GANNF_CTEST_ARGS="-R Fused" tools/cross-arm64.sh
set -euo pipefail
prog=cross-arm64.sh
die() { echo "$prog: $*" >&2; exit 1; }
case "${1:-}" in -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
build_only=0
if [ "${1:-}" = --build-only ]; then build_only=1; shift; fi

repo=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath -m "${1:-$repo/build-arm64}")
sysroot=${GANNF_ARM64_SYSROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/gannf/arm64-sysroot}
jobs=${GANNF_JOBS:-$(nproc)}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

t0=$SECONDS
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(crossbuild-essential-arm64)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "$prog: installing ${need[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "$prog: adding dpkg architecture arm64 (package lists only; nothing is installed for it)"
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
fi

# The arm64 packages the tests' build links or includes (headers of
# architecture-independent packages come along: the find root is the sysroot).
PACKAGES=(
  libopenblas-openmp-dev:arm64 libopenblas0-openmp:arm64 libopenblas-dev:arm64 libgfortran5:arm64
  libgtest-dev:arm64 libgmock-dev:arm64
  zlib1g:arm64 zlib1g-dev:arm64 libstb0:arm64 libstb-dev:arm64
  nlohmann-json3-dev libcli11-dev   # architecture all: headers only
)
stamp="$sysroot/.packages"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${PACKAGES[*]}" ]; then
  echo "$prog: unpacking ${#PACKAGES[@]} arm64 packages into $sysroot"
  rm -rf "$sysroot"; mkdir -p "$sysroot/debs"
  (cd "$sysroot/debs" && apt-get download -qq "${PACKAGES[@]}" 2>&1) ||
    die "apt-get download failed: is arm64 in 'dpkg --print-foreign-architectures' and apt-get update done?"
  for deb in "$sysroot"/debs/*.deb; do dpkg -x "$deb" "$sysroot"; done
  # Absolute symbolic links in the packages point into the host's /; make
  # them relative to the sysroot.
  find "$sysroot/usr" -type l | while read -r l; do
    t=$(readlink "$l")
    case "$t" in /*) ln -sfn "$sysroot$t" "$l" ;; esac
  done
  rm -rf "$sysroot/debs"
  echo "${PACKAGES[*]}" > "$stamp"
fi

# pkg-config (cpp-httplib's flags) must read the sysroot's .pc files, not
# the host's.
export PKG_CONFIG_LIBDIR="$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig:$sysroot/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$sysroot"

# The logs go inside the build directory: next to it they would be untracked
# files in the checkout.
mkdir -p "$build"
echo "$prog: configuring $build"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$repo/cmake/aarch64-linux-gnu.cmake" -DGANNF_ARM64_SYSROOT="$sysroot" \
  -DGANNF_CUDA=OFF "${launcher[@]}" > "$build/cross-configure.log" 2>&1 ||
  { tail -30 "$build/cross-configure.log" >&2; die "configure failed (log: $build/cross-configure.log)"; }
grep -E "✓|✗" "$build/cross-configure.log" || true

# Everything the configuration found the libraries for (the cluster areas are
# not: no libpq or yaml-cpp in the sysroot), so that every test ctest lists
# below has its binary -- or, with GANNF_TARGETS, only those.
read -r -a targets <<< "${GANNF_TARGETS:-}"
skip=() target_args=()
for t in "${targets[@]}"; do target_args+=(--target "$t"); done
if [ ${#targets[@]} -gt 0 ]; then
  skip=(-E '_NOT_BUILT$|_smoke$')
  echo "$prog: building ${targets[*]} only (-j$jobs; log $build/cross-build.log)"
else
  echo "$prog: building (-j$jobs; log $build/cross-build.log)"
fi
cmake --build "$build" -j"$jobs" "${target_args[@]}" > "$build/cross-build.log" 2>&1 ||
  { grep -E "error|Error" "$build/cross-build.log" | head -30 >&2; die "build failed (log: $build/cross-build.log)"; }
[ -e "$build/tests/test_kernels" ] && file "$build/tests/test_kernels" | sed 's/^/  /'
t1=$SECONDS

# Tests that start the programs (gannf-info, gannf-eval) exec arm64 binaries
# themselves: the kernel hands those to qemu through binfmt_misc, and qemu
# finds the arm64 loader and libraries through these two variables.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  cat /usr/lib/binfmt.d/qemu-aarch64.conf | $SUDO tee /proc/sys/fs/binfmt_misc/register > /dev/null ||
    echo "$prog: cannot register qemu-aarch64 with binfmt_misc: the tests that run programs will fail" >&2
fi
lib=$sysroot/usr/lib/aarch64-linux-gnu
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
export LD_LIBRARY_PATH=$lib/openblas-openmp:$lib:$sysroot/lib/aarch64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

if [ $build_only = 1 ]; then
  echo "$prog: built (--build-only) in ${t1}s; run its programs with"
  echo "  QEMU_LD_PREFIX=$QEMU_LD_PREFIX LD_LIBRARY_PATH=$LD_LIBRARY_PATH qemu-aarch64-static PROGRAM"
  exit 0
fi
echo "$prog: running the unit, gradcheck and parity tests under qemu-aarch64"
read -r -a extra <<< "${GANNF_CTEST_ARGS:-}"
# emu (the CUDA emulator) is also labelled unit, and is not built here.
ctest --test-dir "$build" -L 'unit|gradcheck|parity' -LE emu --output-on-failure \
  --timeout 1800 -j"$jobs" "${skip[@]}" "${extra[@]}"
echo "$prog: done — build ${t1}s (sysroot, configure, compile), tests $((SECONDS - t1))s"
