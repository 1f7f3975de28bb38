#!/usr/bin/env bash
# Installs every Debian 12 package gannf needs to build, test and run.
# Idempotent: packages already present are left alone. Uses sudo when not root.
#   tools/setup.sh --platforms   also what the container, notebook and arm64
#                                tests need (.ci/platforms, docs/platforms.md)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libopenblas-openmp-dev        # sgemm; the OpenMP flavour shares libgomp's threads with our kernels
  libgtest-dev libgmock-dev libbenchmark-dev
  libstb-dev zlib1g-dev
  nlohmann-json3-dev libyaml-cpp-dev
  libcli11-dev                  # the programs' and benchmarks' command lines
  libpq-dev libzstd-dev postgresql postgresql-contrib openssl
  libcpp-httplib-dev libjs-chart.js   # gannf-dash: its web server, and the charts it serves itself
  chromium                      # gannf-dash's tests drive a real headless browser
  dataset-fashion-mnist
  iproute2 gnuplot-nox          # bench/campus.sh: network namespaces, tc tbf, its plot
)
if [ "${1:-}" = "--platforms" ]; then
  PACKAGES+=(buildah podman debootstrap qemu-user-static crossbuild-essential-arm64
             python3-nbclient python3-ipykernel)
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: not root and no sudo; install as root: apt-get install ${PACKAGES[*]}" >&2; exit 1; }
  SUDO=sudo
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
