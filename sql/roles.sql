-- Roles and database for gannf: run once by an administrator of the server,
--   psql -v ON_ERROR_STOP=1 -d postgres -f sql/roles.sql
-- (tools/pg-embedded.sh runs it for the embedded cluster). Idempotent.
-- Unlike the numbered migrations, roles and databases belong to the whole
-- server, so the programs (which run as gannf_coord) cannot create them.
--
--   gannf_coord   LOGIN. Owns database gannf and, once `gannf-coord` has
--                 applied the migrations, schema gannf and everything in it.
--                 Never a superuser: the worker-facing functions are
--                 SECURITY DEFINER and run with their owner's rights.
--   gannf_worker  NOLOGIN group. What a worker may do: EXECUTE the worker
--                 functions, SELECT published weights and training state,
--                 and read what the dashboard shows (as gannf_monitor).
--   gannf_monitor NOLOGIN group. What the dashboard (gannf-dash) reads: the
--                 monitoring views and the sample grids; no gradients, no
--                 weights. For a projector's login of its own:
--                   CREATE ROLE projector LOGIN PASSWORD '…' IN ROLE gannf_monitor;
--
-- One login per student, so that the database knows who submitted what
-- (the worker functions take the caller's identity from session_user). The
-- instructor admits each one with one call, as gannf_coord, in database gannf:
--   SELECT gannf_admin.admit_student('alice', 'password');
-- (below: a login with a small CONNECTION LIMIT and the settings of a
-- worker login). `CREATE ROLE alice LOGIN … IN ROLE gannf_worker` by hand
-- still works, without those limits; the coordinator's reaper
-- (gannf.reap(), sql/0008) bounds such a login's sessions all the same.

SET client_min_messages = warning;   -- re-runs: no "already exists" / "already a member" notices

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gannf_coord') THEN
    CREATE ROLE gannf_coord LOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gannf_worker') THEN
    CREATE ROLE gannf_worker NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gannf_monitor') THEN
    CREATE ROLE gannf_monitor NOLOGIN;
  END IF;
END
$$;

SELECT 'CREATE DATABASE gannf OWNER gannf_coord'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'gannf')
\gexec

-- Only these roles (and members of the groups) may connect.
REVOKE CONNECT, TEMPORARY ON DATABASE gannf FROM PUBLIC;
GRANT CONNECT ON DATABASE gannf TO gannf_coord, gannf_worker, gannf_monitor;

-- The size of pg_wal in `gannf-coord status` (the view gannf.storage, sql/0010).
GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_waldir() TO gannf_coord;
-- The reaper (gannf.reap(), sql/0008, run by the coordinator) sees every
-- session's state and ends worker logins' sessions that hold a transaction
-- or a statement too long. pg_signal_backend cannot signal superusers.
GRANT pg_read_all_stats, pg_signal_backend TO gannf_coord;
-- The coordinator holds its iteration's transaction open while it computes
-- the update: no idle or statement timeout for it, whatever the database's
-- defaults are.
ALTER ROLE gannf_coord SET idle_in_transaction_session_timeout = 0;
ALTER ROLE gannf_coord SET statement_timeout = 0;

\connect gannf
SET client_min_messages = warning;

-- BEGIN what no login of database gannf may do but the coordinator
-- (tests/test_trust_db.cpp runs this section in each test's database).
-- Both are granted to PUBLIC by PostgreSQL, so a student's login had them:
--   advisory locks: a session-level lock outlives every statement and
--     transaction, so none of the reaper's bounds ends it. A login that took
--     the coordinator's key (src/cluster/coordinator.cpp) kept a restarted
--     gannf-coord out ("a gannf-coord is running against this database")
--     and had its NOTIFYs trusted as the coordinator's by every worker; one
--     that took the migrations' key (src/cluster/migrate.cpp) made every
--     gannf-coord start wait for it for ever. The worker functions still
--     take their transaction-level locks: they run as gannf_coord.
--   large objects: lo_creat(), lo_create() and lo_from_bytea() store data
--     that stays after the session (pg_largeobject has no quota): 500 MB a
--     statement, until the server's disk is full.
DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace
              AND p.proname ~ '^pg_(try_)?advisory_(xact_)?lock(_shared)?$' LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO gannf_coord', f);
  END LOOP;
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace
              AND p.proname IN ('lo_creat', 'lo_create', 'lo_from_bytea') LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
END
$$;
-- END
-- gannf_admin.admit_student(login, password = NULL, connection_limit = 4):
-- creates the student's login (or updates one that is already a plain
-- worker login) with
--   CONNECTION LIMIT   a worker uses 2 (its loop and its upload); 4 lets a
--                      student run two machines. Connections for the
--                      coordinator are kept by arithmetic, not by a setting
--                      (PostgreSQL 15 reserves connections for superusers
--                      only): the sum of the worker logins' limits must stay
--                      at least 10 below max_connections, or this refuses.
--   temp_file_limit    64MB: only a superuser may change it (SUSET), so the
--                      login cannot raise it.
--   statement_timeout, idle_in_transaction_session_timeout, lock_timeout,
--   work_mem           defaults the login could SET otherwise (USERSET);
--                      the reaper ends what overstays anyway.
--   log_min_messages, log_min_error_statement
--                      panic: nothing of the login's sessions reaches the
--                      server's log (SUSET, so the login cannot lower
--                      them). PostgreSQL logs every failing statement with
--                      its whole text, and many errors quote the value that
--                      failed: a student's loop of failing 1 MB statements
--                      wrote 40-50 MB a second to the log of the development
--                      machine's server, whose disk it shares with the
--                      database. The class loses nothing it needs: the
--                      worker prints its own errors, the coordinator counts
--                      refusals and says why it rejects.
-- SECURITY DEFINER, owned by the administrator who runs this file, so that
-- gannf_coord needs no CREATEROLE (which could grant itself far more). It
-- touches only logins that are plain members of gannf_worker.
-- BEGIN gannf_admin: plain worker logins, and shutting one out
-- (tests/test_trust_runs.cpp runs this section in each test's database).
CREATE SCHEMA IF NOT EXISTS gannf_admin;
REVOKE ALL ON SCHEMA gannf_admin FROM PUBLIC;
GRANT USAGE ON SCHEMA gannf_admin TO gannf_coord;

-- A plain worker login: a member of gannf_worker and of nothing else, with
-- no attribute beyond LOGIN -- the only roles admit_student and this
-- file's last section touch.
CREATE OR REPLACE FUNCTION gannf_admin.plain_worker_login(p_role oid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT NOT (r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls)
     AND pg_has_role(r.oid, 'gannf_worker', 'MEMBER')
     AND NOT EXISTS (SELECT FROM pg_auth_members m WHERE m.member = r.oid AND m.roleid <> 'gannf_worker'::regrole)
    FROM pg_roles r WHERE r.oid = p_role
$fn$;
REVOKE ALL ON FUNCTION gannf_admin.plain_worker_login(oid) FROM PUBLIC;

-- gannf_admin.shut_out(login): NOLOGIN for a plain worker login, so that it
-- cannot connect again; true when it could log in until now. The
-- coordinator calls it when the login's own SQL (statements no gannf-worker
-- sends) has kept the server's CPU busy (src/cluster/cpu_watch.h), then ends
-- the login's sessions: PostgreSQL bounds no session's CPU, and a login
-- whose sessions are only ended comes back. SECURITY DEFINER, as
-- admit_student, so gannf_coord needs no CREATEROLE; it refuses any role
-- that is more than a plain worker login. admit_student(login) lets it in
-- again (its password unchanged).
CREATE OR REPLACE FUNCTION gannf_admin.shut_out(p_login text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  r pg_roles;
BEGIN
  SELECT * INTO r FROM pg_roles WHERE rolname = p_login;
  IF NOT FOUND OR NOT gannf_admin.plain_worker_login(r.oid) THEN
    RAISE EXCEPTION 'role % is not a plain worker login; shut_out leaves it alone', p_login
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT r.rolcanlogin THEN
    RETURN false;
  END IF;
  EXECUTE format('ALTER ROLE %I NOLOGIN', p_login);
  RETURN true;
END
$fn$;
REVOKE ALL ON FUNCTION gannf_admin.shut_out(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gannf_admin.shut_out(text) TO gannf_coord;
-- END

-- Nothing of the login's sessions in the server's log (admit_student's
-- log_min_messages, below). Runs as the administrator: both settings are
-- superuser-only.
CREATE OR REPLACE FUNCTION gannf_admin.keep_out_of_log(p_login text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  EXECUTE format('ALTER ROLE %I SET log_min_messages = %L', p_login, 'panic');
  EXECUTE format('ALTER ROLE %I SET log_min_error_statement = %L', p_login, 'panic');
END
$fn$;
REVOKE ALL ON FUNCTION gannf_admin.keep_out_of_log(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION gannf_admin.admit_student(p_login text, p_password text DEFAULT NULL,
                                                     p_connection_limit integer DEFAULT 4)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  r pg_roles;
  v_reserve constant integer := 10;
  v_max integer := current_setting('max_connections')::integer;
  v_sum bigint;
BEGIN
  IF p_login IS NULL OR p_login !~ '^[a-z_][a-z0-9_]{0,62}$' OR p_login LIKE 'pg\_%' OR p_login LIKE 'gannf\_%' AND p_login <> 'gannf_student' THEN
    RAISE EXCEPTION 'login "%" is not a student login name (lower-case letters, digits and _, at most 63; not pg_* or gannf_*)', p_login
      USING ERRCODE = 'invalid_name';
  END IF;
  IF p_connection_limit IS NULL OR p_connection_limit NOT BETWEEN 1 AND 64 THEN
    RAISE EXCEPTION 'connection limit must be 1 to 64, not %', p_connection_limit
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT * INTO r FROM pg_roles WHERE rolname = p_login;
  IF FOUND THEN
    IF NOT gannf_admin.plain_worker_login(r.oid) THEN
      RAISE EXCEPTION 'role % exists and is not a plain worker login; admit_student leaves it alone', p_login
        USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('ALTER ROLE %I LOGIN CONNECTION LIMIT %s', p_login, p_connection_limit);
  ELSE
    EXECUTE format('CREATE ROLE %I LOGIN CONNECTION LIMIT %s IN ROLE gannf_worker', p_login, p_connection_limit);
  END IF;
  IF p_password IS NOT NULL THEN
    EXECUTE format('ALTER ROLE %I PASSWORD %L', p_login, p_password);
  END IF;
  EXECUTE format('ALTER ROLE %I SET temp_file_limit = %L', p_login, '64MB');
  EXECUTE format('ALTER ROLE %I SET work_mem = %L', p_login, '4MB');
  EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', p_login, '2min');
  EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', p_login, '10s');
  EXECUTE format('ALTER ROLE %I SET lock_timeout = %L', p_login, '30s');
  PERFORM gannf_admin.keep_out_of_log(p_login);
  SELECT sum(ro.rolconnlimit) INTO v_sum FROM pg_roles ro
   WHERE ro.rolcanlogin AND ro.rolconnlimit > 0 AND pg_has_role(ro.oid, 'gannf_worker', 'MEMBER');
  IF v_sum > v_max - v_reserve THEN
    RAISE EXCEPTION 'the worker logins'' connection limits add up to %, and max_connections is %', v_sum, v_max
      USING ERRCODE = 'configuration_limit_exceeded',
            HINT = format('keep them at least %s below max_connections, so the coordinator always gets in: lower the limit (admit_student(login, NULL, n)) or raise max_connections', v_reserve);
  END IF;
END
$fn$;
REVOKE ALL ON FUNCTION gannf_admin.admit_student(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gannf_admin.admit_student(text, text, integer) TO gannf_coord;

-- BEGIN worker logins kept out of the server's log
-- Logins made before admit_student set the log settings above, or by hand
-- (CREATE ROLE … IN ROLE gannf_worker): the same two settings, each time
-- this file runs (gannf-coord warns at start while a worker login lacks
-- them). Only plain worker logins, as admit_student: a role that is
-- anything more keeps its logging.
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT ro.rolname FROM pg_roles ro
            WHERE ro.rolcanlogin AND gannf_admin.plain_worker_login(ro.oid) LOOP
    PERFORM gannf_admin.keep_out_of_log(r.rolname);
  END LOOP;
END
$$;
-- END
