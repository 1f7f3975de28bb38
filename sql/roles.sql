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
-- (the worker functions take the caller's identity from session_user):
--   CREATE ROLE alice LOGIN PASSWORD '…' IN ROLE gannf_worker;

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
