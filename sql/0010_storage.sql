-- 0010: bounded storage, and a view of where the bytes are.
--
-- Each iteration the coordinator inserts new weights and Adam state (logged,
-- ~3 x the parameters in float32) and deletes the ones two iterations old;
-- workers insert gradients (unlogged, ~1 x the parameters per unit) that are
-- deleted once used. A DELETE leaves the rows' TOAST chunks in place until a
-- VACUUM marks them reusable, and autovacuum's default trigger (20% of the
-- table dead) is never met by a table whose live part is a few rows: the
-- tables grew by the whole deleted volume every iteration (issue 13: 13 GB
-- after 2 700 iterations).
--
-- The coordinator now runs a plain VACUUM of the three tables after every
-- commit (Coordinator::run, vacuum_storage): what the previous iterations
-- deleted becomes free space that the next inserts reuse, so each table's
-- file stays at about four iterations' worth (docs/operations.md, Storage,
-- gives the bound and the measurement). Plain VACUUM takes no lock that a
-- reader or submit() waits for. The settings below are the backstop for when
-- no coordinator runs: autovacuum then reacts to a handful of dead rows
-- instead of 20% of the table, at full speed.

ALTER TABLE gannf.weights SET (
  autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 8, autovacuum_vacuum_cost_delay = 0,
  toast.autovacuum_vacuum_scale_factor = 0, toast.autovacuum_vacuum_threshold = 1000,
  toast.autovacuum_vacuum_cost_delay = 0);
ALTER TABLE gannf.optimizer_state SET (
  autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 8, autovacuum_vacuum_cost_delay = 0,
  toast.autovacuum_vacuum_scale_factor = 0, toast.autovacuum_vacuum_threshold = 1000,
  toast.autovacuum_vacuum_cost_delay = 0);
ALTER TABLE gannf.submission_blobs SET (
  autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 8, autovacuum_vacuum_cost_delay = 0,
  toast.autovacuum_vacuum_scale_factor = 0, toast.autovacuum_vacuum_threshold = 1000,
  toast.autovacuum_vacuum_cost_delay = 0);

-- The server's WAL in bytes, or NULL where this role may not list pg_wal
-- (pg_ls_waldir() is for superusers and those granted it: sql/roles.sql
-- grants it to gannf_coord).
CREATE FUNCTION gannf.wal_bytes() RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
  v bigint;
BEGIN
  IF NOT has_function_privilege('pg_catalog.pg_ls_waldir()', 'EXECUTE') THEN
    RETURN NULL;
  END IF;
  EXECUTE 'SELECT coalesce(sum(size), 0)::bigint FROM pg_catalog.pg_ls_waldir()' INTO v;
  RETURN v;
END
$$;

-- Bytes on disk by table of schema gannf (heap, TOAST and indexes), largest
-- first, then the database as a whole and the server's WAL. What
-- `gannf-coord status` prints under "storage".
CREATE VIEW gannf.storage AS
SELECT name, total_bytes, table_bytes, toast_bytes, index_bytes
FROM (
  SELECT c.relname::text AS name,
         pg_total_relation_size(c.oid) AS total_bytes,
         pg_relation_size(c.oid) AS table_bytes,
         coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast_bytes,
         pg_indexes_size(c.oid) AS index_bytes,
         0 AS part
  FROM pg_class c
  WHERE c.relnamespace = 'gannf'::regnamespace AND c.relkind IN ('r', 'm')
  UNION ALL
  SELECT 'database ' || current_database(), pg_database_size(current_database()), NULL, NULL, NULL, 1
  UNION ALL
  SELECT 'WAL (whole server)', gannf.wal_bytes(), NULL, NULL, NULL, 2
) s
ORDER BY part, total_bytes DESC NULLS LAST, name;
