# Sourced by the bench scripts that need a PostgreSQL of their own
# (bench/cpu_hog.sh, bench/first_update.sh); ROOT is the repository.
#
# private_pg_start NAME [PREFIX ...]: a fresh folder /tmp/gannf-NAME.XXXXXX
# ($PG) and in it a private server (tools/pg-embedded.sh, TCP, no fsync),
# started with PREFIX before it (e.g. taskset -c 0). Sets port and sock (its
# socket folder) and exports PGPASSFILE. On exit the processes in "${pids[@]}"
# are killed and the server and folder removed.
private_pg_start() {
  local name=$1
  shift
  PG=$(mktemp -d "/tmp/gannf-$name.XXXXXX")
  pids=()
  trap private_pg_cleanup EXIT
  GANNF_PG_NOSYNC=1 "$@" "$ROOT/tools/pg-embedded.sh" start "$PG/pg" --tcp > "$PG/pg.log" 2>&1 ||
    { cat "$PG/pg.log"; exit 1; }
  port=$(sed -n 's/^port=//p' "$PG/pg/pg_service.conf" | head -1)
  sock=$(sed -n 's/^host=//p' "$PG/pg/pg_service.conf" | head -1)
  export PGPASSFILE=$PG/pg/pgpass
}

private_pg_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$ROOT/tools/pg-embedded.sh" destroy "$PG/pg" > /dev/null 2>&1 || true
  rm -rf "$PG"
}
