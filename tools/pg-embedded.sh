#!/usr/bin/env bash
# A private PostgreSQL cluster in a project folder, for a newcomer, the demo
# and the tests: created with initdb on first start, reached through a Unix
# socket in that folder (optionally also 127.0.0.1 on a free port), stopped
# on request. Idempotent: `start` on a running cluster and `stop` on a stopped
# one succeed and do nothing.
#
#   tools/pg-embedded.sh start  DIR [--tcp] [--port N]
#   tools/pg-embedded.sh stop   DIR [--immediate]   (--immediate: a crash, as
#                                               the server sees it; for tests)
#   tools/pg-embedded.sh status DIR            exit 0 running, 3 stopped, 4 never created
#   tools/pg-embedded.sh env    DIR [--user ROLE] [--tcp]
#   tools/pg-embedded.sh psql   DIR [psql args...]   (as the superuser, database gannf)
#   tools/pg-embedded.sh destroy DIR           stop it and delete the cluster and DIR
#
# DIR may also come from $GANNF_PG_DIR. What DIR holds:
#   data/             the cluster (PGDATA)
#   .s.PGSQL.<port>   the Unix socket (DIR is the socket directory)
#   postgres.log      the server's log
#   pg_service.conf   a libpq service file with service [gannf] (and [gannf_worker]);
#                     PGSERVICEFILE=DIR/pg_service.conf PGSERVICE=gannf connects
#   pgpass            passwords of the roles, for TCP connections (mode 0600)
#
# Roles and database (docs/architecture.md, Database; sql/roles.sql):
#   postgres       bootstrap superuser (administration and tests only)
#   gannf_coord    LOGIN; owns database gannf, and the schema once migrated
#   gannf_worker   NOLOGIN group; the privileges a worker has
#   gannf_monitor  NOLOGIN group; what the dashboard reads (roles.sql is
#                  applied again at every start, so older clusters get new roles)
#   gannf_student  LOGIN, member of gannf_worker: the local workers' login
# Schema objects are not created here: the programs apply sql/ themselves.
#
# Authentication: `trust` on the Unix socket, whose directory (DIR) is mode
# 0700, so only its owner (and root) can connect; scram-sha-256 on TCP, with
# random passwords kept in DIR/pgpass.
#
# Root: initdb and postgres refuse to run as root, so as root the server runs
# as the `postgres` system user ($GANNF_PG_USER to choose another) and DIR is
# chowned to it. If that user cannot reach DIR (a parent folder such as /root
# is not traversable), or DIR's path is too long for a Unix socket (about 100
# bytes), the server's files go to /tmp/gannf-pg-<hash of DIR> instead and DIR
# keeps only the client files, with a note in DIR/server-dir. A cluster found
# there with no such note belongs to an earlier DIR at the same path that was
# deleted (its passwords went with it): `start` removes it if it was a test
# cluster (GANNF_PG_NOSYNC=1 at its initdb), and otherwise moves it aside to
# /tmp/gannf-pg-<hash>.orphaned-<time>, saying so, and starts a fresh one.
#
# Tuning: fsync and full_page_writes stay on (a crash must not corrupt the
# weights; a lost gradient submission is made cheap in the protocol instead,
# see sql/0002). What is changed: larger wal_buffers for 25 MB blobs, WAL
# bounded by max_wal_size = 1GB with wal_level minimal (no replica), no
# parallel query workers (tiny tables; saves shared memory in
# containers), quieter logging. GANNF_PG_NOSYNC=1 passes --no-sync to initdb
# (tests: the cluster is recreated from nothing anyway).
set -euo pipefail

prog=$(basename "$0")
die() { echo "$prog: $*" >&2; exit 1; }
note() { echo "$prog: $*" >&2; }

usage() {
  echo "usage:" >&2
  sed -n '8,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
case "$cmd" in -h|--help|help) usage 0 ;; esac

dir=${GANNF_PG_DIR:-}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then dir=$1; shift; fi
[ -n "$dir" ] || die "no folder given: $prog $cmd DIR (or set GANNF_PG_DIR)"

tcp=0
port=""
env_user=gannf_coord
stop_mode=fast
psql_args=()
while [ $# -gt 0 ]; do
  case "$cmd:$1" in
    start:--tcp|env:--tcp) tcp=1 ;;
    start:--port) [ $# -ge 2 ] || die "--port needs a value"; port=$2; tcp=1; shift ;;
    stop:--immediate) stop_mode=immediate ;;
    env:--user) [ $# -ge 2 ] || die "--user needs a value"; env_user=$2; shift ;;
    psql:*) psql_args+=("$1") ;;
    *) die "unknown argument for $cmd: $1" ;;
  esac
  shift
done

case "$cmd" in
  start|stop|status|env|psql|destroy) ;;
  *) echo "$prog: unknown command '$cmd'" >&2; usage ;;
esac
if [ ! -d "$dir" ]; then
  case "$cmd" in
    start|destroy) mkdir -p "$dir" ;;
    stop) note "not running (no $dir)"; exit 0 ;;
    status) echo "not created ($dir)"; exit 4 ;;
    *) die "no cluster in $dir: $prog start $dir" ;;
  esac
fi
DIR=$(cd "$dir" && pwd -P)

# --- who runs the server --------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
  SERVER_USER=${GANNF_PG_USER:-postgres}
  id -u "$SERVER_USER" >/dev/null 2>&1 ||
    die "running as root, and the user '$SERVER_USER' that should run the server does not exist (apt-get install postgresql creates it; or set GANNF_PG_USER)"
  as_server() { runuser -u "$SERVER_USER" -- "$@"; }
else
  SERVER_USER=$(id -un)
  as_server() { "$@"; }
fi

# --- where the server's files go -------------------------------------------
server_dir_usable() {  # $1: candidate; can the server user own a socket there?
  local cand=$1
  [ $(( ${#cand} + 20 )) -le 107 ] || return 1   # sun_path holds 107 bytes + NUL
  if [ "$(id -u)" -eq 0 ]; then
    as_server test -x "$(dirname "$cand")" 2>/dev/null || return 1
  fi
  return 0
}

if [ -f "$DIR/server-dir" ]; then
  SDIR=$(cat "$DIR/server-dir")
elif server_dir_usable "$DIR"; then
  SDIR=$DIR
else
  SDIR=/tmp/gannf-pg-$(printf %s "$DIR" | md5sum | cut -c1-12)
fi
DATA=$SDIR/data
LOG=$SDIR/postgres.log
SERVICE_FILE=$DIR/pg_service.conf
PASSFILE=$DIR/pgpass
PORT_FILE=$DIR/port
BOOT_MARK=$DATA/gannf-bootstrap.done

# --- the PostgreSQL binaries (not on PATH on Debian) ------------------------
find_bindir() {
  local want="" d
  [ -f "$DATA/PG_VERSION" ] && want=$(cat "$DATA/PG_VERSION")
  if [ -n "${GANNF_PG_BINDIR:-}" ]; then echo "$GANNF_PG_BINDIR"; return; fi
  if [ -n "$want" ] && [ -x "/usr/lib/postgresql/$want/bin/initdb" ]; then
    echo "/usr/lib/postgresql/$want/bin"; return
  fi
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  return 1
}
need_bindir() {
  BIN=$(find_bindir) ||
    die "PostgreSQL server programs (initdb, pg_ctl, postgres) not found — run tools/setup.sh (Debian: apt-get install postgresql), or set GANNF_PG_BINDIR"
}

is_running() {
  [ -f "$DATA/PG_VERSION" ] || return 1
  as_server "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

current_port() { if [ -f "$PORT_FILE" ]; then cat "$PORT_FILE"; else echo 5432; fi; }

free_port() {  # a TCP port on 127.0.0.1 that nobody listens on right now
  local p i
  for i in $(seq 1 50); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free TCP port found on 127.0.0.1"
}

superuser_psql() {  # psql as the bootstrap superuser over the socket
  "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SDIR" -p "$(current_port)" -U postgres "$@"
}

write_client_files() {
  local port=$1
  umask 077
  cat >"$SERVICE_FILE" <<EOF
# Written by tools/pg-embedded.sh: PGSERVICEFILE=$SERVICE_FILE PGSERVICE=gannf
[gannf]
host=$SDIR
port=$port
dbname=gannf
user=gannf_coord
passfile=$PASSFILE

[gannf_worker]
host=$SDIR
port=$port
dbname=gannf
user=gannf_student
passfile=$PASSFILE
EOF
}

apply_roles() {  # sql/roles.sql is idempotent: a cluster made before a role was added gets it
  local roles_sql
  roles_sql=$(cd "$(dirname "$0")/.." && pwd)/sql/roles.sql
  [ -f "$roles_sql" ] || die "missing $roles_sql"
  superuser_psql -d postgres -f "$roles_sql" >/dev/null
}

bootstrap() {  # roles, database and passwords; once per cluster
  apply_roles
  superuser_psql -d postgres >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gannf_student') THEN
    CREATE ROLE gannf_student LOGIN IN ROLE gannf_worker;
  END IF;
END $$;
SQL
  umask 077
  : >"$PASSFILE.new"
  local role pw
  for role in postgres gannf_coord gannf_student; do
    pw=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
    superuser_psql -d postgres -c "ALTER ROLE $role PASSWORD '$pw'" >/dev/null
    echo "*:*:*:$role:$pw" >>"$PASSFILE.new"
  done
  mv "$PASSFILE.new" "$PASSFILE"
  as_server touch "$BOOT_MARK"
}

init_cluster() {
  note "creating a PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') cluster in $DATA"
  mkdir -p "$SDIR"
  if [ "$(id -u)" -eq 0 ]; then chown "$SERVER_USER" "$SDIR"; fi
  chmod 700 "$SDIR"
  local nosync=()
  [ "${GANNF_PG_NOSYNC:-0}" = 1 ] && nosync=(--no-sync)
  if ! as_server "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 "${nosync[@]}" >"$SDIR/initdb.log" 2>&1; then
    cat "$SDIR/initdb.log" >&2
    die "initdb failed (log above)"
  fi
  as_server sh -c "cat >>'$DATA/postgresql.conf'" <<EOF

# --- gannf (tools/pg-embedded.sh) ---
unix_socket_directories = '$SDIR'
unix_socket_permissions = 0700
# 25 MB gradient blobs: WAL in bigger steps. WAL on disk stays near
# max_wal_size (docs/operations.md, Storage); no replica reads it, so the
# minimal level (and no WAL senders, which that level requires).
wal_buffers = 16MB
max_wal_size = 1GB
min_wal_size = 80MB
checkpoint_timeout = 15min
wal_level = minimal
max_wal_senders = 0
# Tiny tables, many connections: no parallel workers.
max_parallel_workers_per_gather = 0
max_connections = 200
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  rm -f "$SDIR/initdb.log"
  if [ "${GANNF_PG_NOSYNC:-0}" = 1 ]; then as_server touch "$SDIR/throwaway"; fi
}

# A cluster in the /tmp fallback that no DIR/server-dir points at: left by an
# earlier DIR at the same path, deleted since (e.g. a fresh clone where an
# earlier one was). Using it would serve the old data, with passwords nobody
# has any more.
adopt_no_orphan() {
  [ "$SDIR" != "$DIR" ] && [ ! -f "$DIR/server-dir" ] && [ -e "$SDIR" ] || return 0
  if is_running; then as_server "$BIN/pg_ctl" stop -D "$DATA" -m immediate -w -t 60 -s >/dev/null || true; fi
  if [ -f "$SDIR/throwaway" ]; then
    rm -rf "$SDIR"
    note "removed the test cluster an earlier $DIR left in $SDIR"
  else
    local aside
    aside=$SDIR.orphaned-$(date +%Y%m%d-%H%M%S)
    mv "$SDIR" "$aside"
    note "$SDIR held a cluster of an earlier $DIR that was deleted since; moved it to $aside (its data is there; delete it when nobody needs it) and starting a fresh one"
  fi
}

do_start() {
  need_bindir
  adopt_no_orphan
  if [ "$SDIR" != "$DIR" ] && [ ! -f "$DIR/server-dir" ]; then
    note "$DIR is not usable as the server's folder (not reachable by '$SERVER_USER', or too long a path for a socket); using $SDIR"
    echo "$SDIR" >"$DIR/server-dir"
  fi
  if [ "$SDIR" = "$DIR" ] && [ "$(id -u)" -eq 0 ]; then chown "$SERVER_USER" "$DIR"; chmod 700 "$DIR"; fi
  if is_running; then
    if [ -f "$BOOT_MARK" ]; then apply_roles; else bootstrap; fi
    write_client_files "$(current_port)"
    note "already running ($DATA, port $(current_port))"
    return 0
  fi
  [ -f "$DATA/PG_VERSION" ] || init_cluster

  local p listen attempt
  for attempt in 1 2 3 4 5; do
    if [ "$tcp" = 1 ]; then
      p=${port:-$(free_port)}; listen=127.0.0.1
    else
      p=${port:-5432}; listen=""
    fi
    echo "$p" >"$PORT_FILE"
    if as_server "$BIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 -s \
         -o "-c listen_addresses='$listen' -p $p" >/dev/null 2>&1; then
      break
    fi
    if [ "$tcp" = 1 ] && [ -z "$port" ] && grep -q "could not bind" "$LOG" 2>/dev/null; then
      continue  # someone took the port between the probe and the bind
    fi
    tail -n 20 "$LOG" >&2 || true
    die "the server did not start (log: $LOG)"
  done
  is_running || die "the server did not start (log: $LOG)"
  if [ -f "$BOOT_MARK" ]; then apply_roles; else bootstrap; fi
  write_client_files "$p"
  local where="socket $SDIR"
  [ "$tcp" = 1 ] && where="$where, 127.0.0.1:$p"
  note "running ($where); eval \"\$($0 env $DIR)\" to use it"
}

do_stop() {
  need_bindir
  if ! is_running; then note "not running"; return 0; fi
  as_server "$BIN/pg_ctl" stop -D "$DATA" -m "$stop_mode" -w -t 60 -s >/dev/null ||
    die "pg_ctl stop failed (log: $LOG)"
  if [ "$stop_mode" = immediate ]; then note "stopped (immediate: the server recovers at its next start)"; else note "stopped"; fi
}

# Only a folder this script made: a cluster, or the client files of one.
do_destroy() {
  need_bindir
  if [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/pg_service.conf" ] && [ ! -f "$DIR/server-dir" ] &&
     [ ! -f "$DIR/data/PG_VERSION" ] && [ ! -f "$DIR/port" ]; then
    die "$DIR does not look like a folder of $prog (no data/, pg_service.conf or server-dir): not deleting it"
  fi
  if is_running; then as_server "$BIN/pg_ctl" stop -D "$DATA" -m immediate -w -t 60 -s >/dev/null || true; fi
  local what=$DIR
  if [ "$SDIR" != "$DIR" ]; then rm -rf "$SDIR"; what="$DIR and $SDIR"; fi
  rm -rf "$DIR"
  note "destroyed: deleted $what"
}

do_status() {
  need_bindir
  if [ ! -f "$DATA/PG_VERSION" ]; then echo "not created ($DATA)"; exit 4; fi
  if is_running; then echo "running (data $DATA, socket $SDIR, port $(current_port))"; exit 0; fi
  echo "stopped (data $DATA)"; exit 3
}

do_env() {
  [ -f "$SERVICE_FILE" ] || die "no cluster started in $DIR yet: $prog start $DIR"
  local host=$SDIR
  [ "$tcp" = 1 ] && host=127.0.0.1
  cat <<EOF
export PGHOST='$host'
export PGPORT='$(current_port)'
export PGDATABASE='gannf'
export PGUSER='$env_user'
export PGPASSFILE='$PASSFILE'
EOF
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  env) do_env ;;
  destroy) do_destroy ;;
  psql) need_bindir; is_running || die "not running: $prog start $DIR"
        exec "$BIN/psql" -X -h "$SDIR" -p "$(current_port)" -U postgres -d gannf ${psql_args[@]+"${psql_args[@]}"} ;;
  *) usage ;;
esac
