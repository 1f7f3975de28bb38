#!/usr/bin/env bash
# A PostgreSQL streaming replica (hot standby) of a tools/pg-embedded.sh
# server, for tests/test_replica.cpp (issue 17, item 2e): the recipe of
# docs/scaling.md, Weights from a read replica, on this machine.
#
#   tests/pg_replica.sh start PRIMARY_DIR DIR   replication on the primary (wal_level replica, one
#                                               restart when it was minimal), pg_basebackup -R into
#                                               DIR/data, the standby started on a socket in DIR
#   tests/pg_replica.sh stop DIR                stops the standby (fast)
#   tests/pg_replica.sh destroy DIR             stops it and deletes DIR
#
# DIR/port holds the standby's port; connect with host=DIR port=$(cat DIR/port).
# As root the server runs as $GANNF_PG_USER (postgres), as pg-embedded.sh does;
# DIR must be a short path that user can reach (a Unix socket lives there).
set -euo pipefail
die() { echo "pg_replica.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: pg_replica.sh start PRIMARY_DIR DIR | stop DIR | destroy DIR"
cmd=$1
# Every connection below names its server; a caller's service file (the
# test fixture's, which the server user cannot read) must not stand in.
unset PGSERVICE PGSERVICEFILE PGHOST PGPORT PGUSER PGDATABASE PGPASSFILE
if [ "$(id -u)" -eq 0 ]; then
  SERVER_USER=${GANNF_PG_USER:-postgres}
  as_server() { runuser -u "$SERVER_USER" -- "$@"; }
else
  SERVER_USER=$(id -un)
  as_server() { "$@"; }
fi
bindir() {  # the primary's own programs: the standby must be the same major version
  local pid=$1
  if [ -n "${GANNF_PG_BINDIR:-}" ]; then echo "$GANNF_PG_BINDIR"; return; fi
  if [ -n "$pid" ] && [ -e "/proc/$pid/exe" ]; then dirname "$(readlink -f "/proc/$pid/exe")"; return; fi
  dirname "$(command -v pg_ctl || die "pg_ctl not found; set GANNF_PG_BINDIR")"
}

case $cmd in
  start)
    [ $# -eq 3 ] || die "usage: pg_replica.sh start PRIMARY_DIR DIR"
    P=$2 DIR=$3
    SDIR=$(cat "$P/server-dir" 2>/dev/null || echo "$P")
    PPORT=$(cat "$P/port" 2>/dev/null || echo 5432)
    [ -f "$SDIR/data/postmaster.pid" ] || die "no server running in $SDIR (tools/pg-embedded.sh start $P first)"
    BIN=$(bindir "$(head -1 "$SDIR/data/postmaster.pid")")
    psqlp() { "$BIN/psql" -X -qAt -v ON_ERROR_STOP=1 -h "$SDIR" -p "$PPORT" -U postgres -d postgres "$@"; }
    # pg-embedded.sh runs wal_level minimal (no WAL senders): a standby needs replica.
    if [ "$(psqlp -c 'SHOW wal_level')" = minimal ]; then
      psqlp -c "ALTER SYSTEM SET wal_level = replica" -c "ALTER SYSTEM SET max_wal_senders = 4" >/dev/null
      as_server "$BIN/pg_ctl" restart -D "$SDIR/data" -m fast -w -t 60 -s >/dev/null || die "the primary did not restart"
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    [ "$(id -u)" -eq 0 ] && chown "$SERVER_USER" "$DIR"
    # -R: standby.signal and primary_conninfo (the primary's socket, user postgres).
    as_server "$BIN/pg_basebackup" -h "$SDIR" -p "$PPORT" -U postgres -D "$DIR/data" -R -X stream -c fast --no-sync \
      >"$DIR/basebackup.log" 2>&1 || { cat "$DIR/basebackup.log" >&2; die "pg_basebackup failed"; }
    port=$((PPORT + 1))
    as_server sh -c "cat >>'$DIR/data/postgresql.auto.conf'" <<CONF
unix_socket_directories = '$DIR'
listen_addresses = ''
port = $port
hot_standby = on
CONF
    as_server "$BIN/pg_ctl" start -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 -s >/dev/null ||
      { cat "$DIR/postgres.log" >&2; die "the standby did not start (its log above)"; }
    echo "$port" >"$DIR/port"
    echo "pg_replica.sh: standby of $SDIR (port $PPORT) running in $DIR, port $port"
    ;;
  stop|destroy)
    DIR=$2
    if [ -f "$DIR/data/postmaster.pid" ]; then
      BIN=$(bindir "$(head -1 "$DIR/data/postmaster.pid")")
      as_server "$BIN/pg_ctl" stop -D "$DIR/data" -m fast -w -t 60 -s >/dev/null || true
    fi
    if [ "$cmd" = destroy ]; then rm -rf "$DIR"; fi
    ;;
  *) die "unknown command '$cmd'" ;;
esac
