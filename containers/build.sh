#!/usr/bin/env bash
# Builds gannf's container images with buildah, from Debian's own packages:
# the Debian 12 base is made with debootstrap (no registry needed), and the
# images are built on it from containers/Containerfile.*.
#
#   containers/build.sh base   [--arch amd64|arm64]   the Debian 12 base image
#   containers/build.sh cpu    [--arch amd64|arm64]   gannf-worker, CPU back end (for
#                          another CPU: cross-compiled, only apt under qemu)
#   containers/build.sh cuda                          gannf-worker, CUDA back end (amd64)
#   containers/build.sh dev                           .devcontainer's image (CPU variant)
#
# Images: localhost/gannf-debian12:ARCH, localhost/gannf-worker:cpu-ARCH (and
# :cpu for this machine's own CPU),
# localhost/gannf-worker:cuda, localhost/gannf-dev:cpu. Run one with
#   podman run --rm --network host localhost/gannf-worker:cpu-amd64 gannf-worker --db URL
#
# Environment:
#   GANNF_PODMAN_OPTS   storage options for buildah/podman; default
#                       "--storage-driver vfs" (works inside containers and
#                       VMs without overlay support)
#   GANNF_ISOLATION     buildah's --isolation (default chroot: needs no user
#                       namespaces; use oci on a normal desktop)
#   GANNF_MIRROR        Debian mirror for debootstrap (http://deb.debian.org/debian)
#   GANNF_CACHE         where the debootstrap trees are kept (/var/tmp/gannf-containers)
#   GANNF_JOBS          parallel compile jobs inside the build (nproc)
#   GANNF_CUDA_ARCHS    GPU architectures of the CUDA image (75-real;80-real;86-real;89-real;90)
set -euo pipefail

usage() { sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
die() { echo "containers/build.sh: $*" >&2; exit 1; }

what=${1:-}
[ -n "$what" ] || { usage; exit 2; }
shift
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs amd64 or arm64}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$what" in -h|--help) usage; exit 0 ;; base|cpu|cuda|dev) ;; *) die "unknown image '$what': base, cpu, cuda or dev" ;; esac
case "$arch" in amd64|arm64) ;; *) die "--arch: amd64 or arm64, not '$arch'" ;; esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
read -r -a popts <<< "${GANNF_PODMAN_OPTS:---storage-driver vfs}"
isolation=${GANNF_ISOLATION:-chroot}
mirror=${GANNF_MIRROR:-http://deb.debian.org/debian}
cache=${GANNF_CACHE:-/var/tmp/gannf-containers}
jobs=${GANNF_JOBS:-$(nproc)}

for t in buildah podman; do
  command -v $t >/dev/null || die "$t is missing: apt-get install buildah podman debootstrap qemu-user-static"
done

has_image() { podman "${popts[@]}" image exists "$1"; }

# An image for another CPU runs its RUN steps through qemu-user-static, which
# the kernel calls through binfmt_misc; register it where it is not yet.
need_binfmt() {
  [ "$arch" = "$(dpkg --print-architecture)" ] && return 0
  local q=qemu-aarch64
  [ -e /proc/sys/fs/binfmt_misc/$q ] && return 0
  [ -e /proc/sys/fs/binfmt_misc/register ] ||
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
    die "binfmt_misc is not mounted and cannot be: arm64 images need qemu-user-static registered"
  [ -f /usr/lib/binfmt.d/$q.conf ] || die "/usr/lib/binfmt.d/$q.conf missing: apt-get install qemu-user-static"
  cat /usr/lib/binfmt.d/$q.conf > /proc/sys/fs/binfmt_misc/register ||
    die "cannot register $q with binfmt_misc (needs root)"
  echo "build.sh: registered $q with binfmt_misc"
}

build_base() {
  local arch=${1:-$arch}
  local tag=localhost/gannf-debian12:$arch
  if has_image "$tag"; then echo "build.sh: $tag exists"; return; fi
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
  need_binfmt
  local root=$cache/debian12-$arch
  if [ ! -f "$root/.complete" ]; then
    rm -rf "$root"; mkdir -p "$root"
    echo "build.sh: debootstrap bookworm ($arch) into $root — a few minutes"
    debootstrap --variant=minbase --arch="$arch" bookworm "$root" "$mirror" \
      > "$cache/debootstrap-$arch.log" 2>&1 ||
      { tail -20 "$cache/debootstrap-$arch.log" >&2; die "debootstrap failed (log: $cache/debootstrap-$arch.log)"; }
    # The same suites as a stock Debian 12 image, security updates included.
    cat > "$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
    # Images carry no package cache or lists: each build step fetches its own.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    touch "$root/.complete"
  fi
  echo "build.sh: importing $tag"
  tar --exclude=./.complete -C "$root" -c . |
    podman "${popts[@]}" import --arch "$arch" --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
}

build_image() {
  local file=$1 tag=$2; shift 2
  echo "build.sh: building $tag from $(basename "$file")"
  local t0=$SECONDS
  buildah "${popts[@]}" bud --isolation "$isolation" --layers=false --arch "$arch" \
    --build-arg BASE=localhost/gannf-debian12:$arch --build-arg JOBS="$jobs" "$@" \
    -f "$file" -t "$tag" "$repo"
  echo "build.sh: $tag built in $((SECONDS - t0)) s, $(podman "${popts[@]}" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
}

case "$what" in
  base) build_base ;;
  cpu)
    # The build stage runs on this machine's CPU and cross-compiles for
    # another (Containerfile.cpu): it needs this machine's base image too.
    host=$(dpkg --print-architecture)
    build_base
    [ "$arch" = "$host" ] || build_base "$host"
    build_image "$here/Containerfile.cpu" "localhost/gannf-worker:cpu-$arch" \
      --build-arg BUILD_BASE=localhost/gannf-debian12:$host --build-arg BUILDPLATFORM=linux/$host \
      --build-arg TARGETPLATFORM=linux/$arch --build-arg TARGETARCH=$arch
    # The name the hand-outs use (README, Join the class) for this machine's CPU.
    if [ "$arch" = "$(dpkg --print-architecture)" ]; then
      podman "${popts[@]}" tag "localhost/gannf-worker:cpu-$arch" localhost/gannf-worker:cpu
    fi ;;
  cuda)
    [ "$arch" = amd64 ] || die "the CUDA image is built for amd64 only"
    build_base
    # The host's CUDA toolkit, where there is one, is mounted into the build
    # stage (no download from NVIDIA); otherwise the Containerfile fetches nvcc.
    mount=()
    if [ -x /usr/local/cuda/bin/nvcc ]; then
      mount=(--volume "$(realpath /usr/local/cuda):/usr/local/cuda:ro")
      echo "build.sh: using the host's CUDA toolkit, $(realpath /usr/local/cuda)"
    fi
    build_image "$here/Containerfile.cuda" localhost/gannf-worker:cuda "${mount[@]}" \
      --build-arg CUDA_ARCHS="${GANNF_CUDA_ARCHS:-75-real;80-real;86-real;89-real;90}" ;;
  dev)
    build_base
    build_image "$here/Containerfile.dev" localhost/gannf-dev:cpu --build-arg CUDA=0 ;;
esac
