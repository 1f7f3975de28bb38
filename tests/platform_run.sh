# Sourced by the platform tests (container_test.sh, notebook_test.sh): a
# private PostgreSQL with TCP on loopback, a tiny run made by the host's
# gannf-coord and its coordinator running one update in the background, for a
# worker started elsewhere (an image, a notebook) to join as gannf_student.
# Needs: repo, dir, coord, and a function fail.
#
#   platform_run_start SEED   sets port, sock, password (gannf_student's), coord_pid
#   platform_run_wait         the coordinator's exit: 0 once the update is done
#   platform_used NAME        the number of the worker NAME's used submissions
#   platform_run_cleanup      the coordinator and the database go
pg=$dir/pg

platform_run_start() {
  GANNF_PG_NOSYNC=1 "$repo/tools/pg-embedded.sh" start "$pg" --tcp > "$dir/pg.log" 2>&1 || fail "pg-embedded.sh start"
  port=$(sed -n 's/^port=//p' "$pg/pg_service.conf" | head -1)
  sock=$(sed -n 's/^host=//p' "$pg/pg_service.conf" | head -1)
  password=$(awk -F: '$4 == "gannf_student" {print $5; exit}' "$pg/pgpass")
  [ -n "$port" ] && [ -n "$sock" ] && [ -n "$password" ] || fail "no port, socket or gannf_student password in $pg"
  local db="host=$sock port=$port dbname=gannf user=gannf_coord"
  "$coord" init --db "$db" --dataset synthetic:32 --image-size 32 --channels 1 --latent-dim 16 \
    --ngf 8 --ndf 8 --images-per-unit 8 --units-per-update 2 --seed "$1" --no-cache --quiet \
    > "$dir/coord-init.log" 2>&1 || fail "gannf-coord init"
  "$coord" run --db "$db" --output-dir "$dir/out" --iterations 1 --sample-interval 0 \
    --checkpoint-interval 0 > "$dir/coord-run.log" 2>&1 &
  coord_pid=$!
}

platform_run_wait() {
  local rc=0
  wait "$coord_pid" || rc=$?
  coord_pid=
  [ $rc = 0 ] || fail "gannf-coord run exited with $rc"
}

platform_used() {
  "$repo/tools/pg-embedded.sh" psql "$pg" -tAc "SELECT count(*) FROM gannf.submissions s
    JOIN gannf.workers w ON w.id = s.worker_id WHERE w.name = '$1' AND s.state = 'used'"
}

platform_run_cleanup() {
  [ -n "${coord_pid:-}" ] && kill "$coord_pid" 2>/dev/null
  "$repo/tools/pg-embedded.sh" destroy "$pg" > /dev/null 2>&1 || true
}
