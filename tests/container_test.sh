#!/usr/bin/env bash
# Label `container` (tests/platforms.cmake): builds the CPU worker image with
# containers/build.sh and runs a worker from it against a private PostgreSQL
# on the host, over TCP on loopback (--network host), as a student would:
# `podman run … gannf-worker --db postgresql://LOGIN@HOST/gannf`, the
# password from the environment. The host's gannf-coord runs a one-update run;
# the test passes when the coordinator finishes it with the container's two
# submissions used.
#
#   container_test.sh REPO BUILD_DIR GANNF_COORD
set -euo pipefail
repo=$1 build=$2 coord=$3
dir=$build/container-test
pg=$dir/pg
rm -rf "$dir"; mkdir -p "$dir"
fail() { echo "container_test: FAILED: $*" >&2; for f in "$dir"/*.log; do echo "--- $f"; tail -30 "$f"; done >&2; exit 1; }
cleanup() { [ -n "${coord_pid:-}" ] && kill "$coord_pid" 2>/dev/null; "$repo/tools/pg-embedded.sh" destroy "$pg" >/dev/null 2>&1 || true; }
trap cleanup EXIT

arch=$(dpkg --print-architecture)
image=localhost/gannf-worker:cpu-$arch
t0=$SECONDS
"$repo/containers/build.sh" cpu > "$dir/build.log" 2>&1 || fail "containers/build.sh cpu"
echo "container_test: image built in $((SECONDS - t0)) s: $(tail -1 "$dir/build.log")"
read -r -a popts <<< "${GANNF_PODMAN_OPTS:---storage-driver vfs}"

GANNF_PG_NOSYNC=1 "$repo/tools/pg-embedded.sh" start "$pg" --tcp > "$dir/pg.log" 2>&1 || fail "pg-embedded.sh start"
port=$(sed -n 's/^port=//p' "$pg/pg_service.conf" | head -1)
sock=$(sed -n 's/^host=//p' "$pg/pg_service.conf" | head -1)
password=$(awk -F: '$4 == "gannf_student" {print $5; exit}' "$pg/pgpass")
[ -n "$port" ] && [ -n "$sock" ] && [ -n "$password" ] || fail "no port, socket or gannf_student password in $pg"
coord_db="host=$sock port=$port dbname=gannf user=gannf_coord"

"$coord" init --db "$coord_db" --dataset synthetic:32 --image-size 32 --channels 1 --latent-dim 16 \
  --ngf 8 --ndf 8 --images-per-unit 8 --units-per-update 2 --seed 41 --no-cache --quiet \
  > "$dir/coord-init.log" 2>&1 || fail "gannf-coord init"
"$coord" run --db "$coord_db" --output-dir "$dir/out" --iterations 1 --sample-interval 0 \
  --checkpoint-interval 0 > "$dir/coord-run.log" 2>&1 &
coord_pid=$!

# The student's command; PGPASSWORD passed by name, so its value is on no
# command line. Where podman cannot start containers (some VMs and CI
# sandboxes: no cgroup controllers or rlimits of their own), the same image
# runs through buildah's chroot isolation instead, with the host's network, as
# the image's user: the same files, libraries and command, said in the log.
export PGPASSWORD=$password
worker=(gannf-worker --db "postgresql://gannf_student@127.0.0.1:$port/gannf" --name in-a-container
        --threads 1 --batch-size 4 --no-cache --exit-when-done --poll-interval 0.2)
if podman "${popts[@]}" run --rm "$image" true > "$dir/podman-probe.log" 2>&1; then
  echo "container_test: podman run"
  timeout 300 podman "${popts[@]}" run --rm --network host -e PGPASSWORD "$image" "${worker[@]}" \
    > "$dir/worker.log" 2>&1 || fail "the worker in the container exited with $?"
else
  echo "container_test: podman run cannot start containers here ($(tail -1 "$dir/podman-probe.log")); using buildah run --isolation chroot"
  ctr=$(buildah "${popts[@]}" from --pull-never --name gannf-container-test-$$ "$image")
  buildah "${popts[@]}" config --env PGPASSWORD="$PGPASSWORD" "$ctr"
  rc=0
  timeout 300 buildah "${popts[@]}" run --isolation chroot "$ctr" -- "${worker[@]}" > "$dir/worker.log" 2>&1 || rc=$?
  buildah "${popts[@]}" rm "$ctr" > /dev/null
  [ $rc = 0 ] || fail "the worker in the container exited with $rc"
fi
wait "$coord_pid" || fail "gannf-coord run exited with $?"
coord_pid=
used=$("$repo/tools/pg-embedded.sh" psql "$pg" -tAc "SELECT count(*) FROM gannf.submissions s
  JOIN gannf.workers w ON w.id = s.worker_id WHERE w.name = 'in-a-container' AND s.state = 'used'")
[ "$used" = 2 ] || fail "expected the container's 2 submissions used, found '$used'"
echo "container_test: passed in $((SECONDS - t0)) s (worker: $(grep -c . "$dir/worker.log") log lines)"
