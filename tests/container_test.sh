#!/usr/bin/env bash
# Label `container` (tests/platforms.cmake): builds the CPU worker image with
# containers/build.sh and runs a worker from it against a private PostgreSQL
# on the host, over TCP on loopback (--network host), as a student would:
# `podman run … gannf-worker --db postgresql://LOGIN@HOST/gannf`, the
# password from the environment. The host's gannf-coord runs a one-update run;
# the test passes when the coordinator finishes it with the container's two
# submissions used.
# With ARCH (arm64 on an amd64 machine) the image is built for that CPU
# (cross-compiled, containers/build.sh) and its worker runs under
# qemu-user-static (binfmt_misc), still against the host's coordinator.
#
#   container_test.sh REPO BUILD_DIR GANNF_COORD [ARCH]
set -euo pipefail
repo=$1 build=$2 coord=$3
arch=${4:-$(dpkg --print-architecture)}
dir=$build/container-test-$arch
rm -rf "$dir"; mkdir -p "$dir"
fail() { echo "container_test: FAILED: $*" >&2; for f in "$dir"/*.log; do echo "--- $f"; tail -30 "$f"; done >&2; exit 1; }
source "$(dirname "$0")/platform_run.sh"
trap platform_run_cleanup EXIT

image=localhost/gannf-worker:cpu-$arch
t0=$SECONDS
"$repo/containers/build.sh" cpu --arch "$arch" > "$dir/build.log" 2>&1 || fail "containers/build.sh cpu --arch $arch"
echo "container_test: image built in $((SECONDS - t0)) s: $(tail -1 "$dir/build.log")"
read -r -a popts <<< "${GANNF_PODMAN_OPTS:---storage-driver vfs}"
built=$(podman "${popts[@]}" image inspect --format '{{.Architecture}}' "$image")
[ "$built" = "$arch" ] || fail "$image is built for '$built', not $arch"

platform_run_start 41

# The student's command; PGPASSWORD passed by name, so its value is on no
# command line. Where podman cannot start containers (some VMs and CI
# sandboxes: no cgroup controllers or rlimits of their own), the same image
# runs through buildah's chroot isolation instead, with the host's network, as
# the image's user: the same files, libraries and command, said in the log.
export PGPASSWORD=$password
limit=300
[ "$arch" = "$(dpkg --print-architecture)" ] || limit=900   # under qemu: several times slower
worker=(gannf-worker --db "postgresql://gannf_student@127.0.0.1:$port/gannf" --name in-a-container
        --threads 1 --batch-size 4 --no-cache --exit-when-done --poll-interval 0.2)
if podman "${popts[@]}" run --rm "$image" true > "$dir/podman-probe.log" 2>&1; then
  echo "container_test: podman run"
  timeout $limit podman "${popts[@]}" run --rm --network host -e PGPASSWORD "$image" "${worker[@]}" \
    > "$dir/worker.log" 2>&1 || fail "the worker in the container exited with $?"
else
  echo "container_test: podman run cannot start containers here ($(tail -1 "$dir/podman-probe.log")); using buildah run --isolation chroot"
  ctr=$(buildah "${popts[@]}" from --pull-never --name gannf-container-test-$$ "$image")
  buildah "${popts[@]}" config --env PGPASSWORD="$PGPASSWORD" "$ctr"
  rc=0
  timeout $limit buildah "${popts[@]}" run --isolation chroot "$ctr" -- "${worker[@]}" > "$dir/worker.log" 2>&1 || rc=$?
  buildah "${popts[@]}" rm "$ctr" > /dev/null
  [ $rc = 0 ] || fail "the worker in the container exited with $rc"
fi
platform_run_wait
used=$(platform_used in-a-container)
[ "$used" = 2 ] || fail "expected the container's 2 submissions used, found '$used'"
echo "container_test: passed in $((SECONDS - t0)) s (worker: $(grep -c . "$dir/worker.log") log lines)"
