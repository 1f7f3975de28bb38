-- 0007: what the class's dashboard (gannf-dash, src/monitor) reads, and who
-- may read it.
--
-- 1. gannf.sample_grids: the coordinator's sample grid of each sample step,
--    the very PNG it writes to its output folder, so that the dashboard
--    shows it on any machine that reaches the database. A grid belongs to
--    its run: init --force deletes the old run's grids with its state row.
--
-- 2. Views that answer the dashboard's panels, each one cheap to ask again
--    and again: the run (with whether a coordinator holds its lock), the
--    loss history, the workers (with whether each is active), and the
--    submissions without their blobs (the leaderboard is folded from them
--    incrementally by the dashboard, so 100 000 iterations cost one small
--    query per refresh, not a GROUP BY over every submission).
--
-- 3. gannf_monitor: a NOLOGIN group that may SELECT the monitoring views of
--    0003 and here and the sample grids: no gradients, no weights, no Adam
--    state, no function that changes anything. A projector's login is a
--    member (sql/roles.sql). The same grants go to gannf_worker, so that a
--    student's own login opens the dashboard too: grants rather than
--    membership, because granting a membership needs CREATEROLE, which the
--    coordinator does not have, while the owner of a view may grant it.
--
-- 4. NOTIFY gannf_monitor (payload: the table) when the run's state row
--    changes (each commit of an iteration, a pause, the end), a grid is
--    stored, or a worker registers: the dashboard's one listener wakes then,
--    and polls only for what announces nothing (heartbeats).

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gannf_monitor') THEN
    BEGIN
      CREATE ROLE gannf_monitor NOLOGIN;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION 'role gannf_monitor does not exist, and % may not create it', current_user
        USING ERRCODE = 'undefined_object',
              HINT = 'an administrator runs sql/roles.sql once more (it is idempotent; tools/pg-embedded.sh does for the embedded server)';
    END;
  END IF;
  -- The coordinator owns the database: it may let the group connect (roles.sql
  -- does it for database gannf; this covers databases of other names).
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO gannf_monitor', current_database());
END
$$;

-- A grid's foreign key needs the run id to be a key.
ALTER TABLE gannf.training_state ADD CONSTRAINT training_state_run_id_key UNIQUE (run_id);

CREATE TABLE gannf.sample_grids (
  iteration bigint PRIMARY KEY,     -- drawn by the weights of this iteration (updates done)
  run_id uuid NOT NULL REFERENCES gannf.training_state (run_id) ON DELETE CASCADE,
  epoch integer NOT NULL,           -- from 0, as loss_history's
  png bytea NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT sample_grids_iteration_nonnegative CHECK (iteration >= 0),
  CONSTRAINT sample_grids_png_signature CHECK (substring(png FROM 1 FOR 8) = '\x89504e470d0a1a0a'::bytea),
  CONSTRAINT sample_grids_png_size CHECK (octet_length(png) <= 16777216)
);
-- PNG is compressed already: out of line, never pglz'd.
ALTER TABLE gannf.sample_grids ALTER COLUMN png SET STORAGE EXTERNAL;

-- One row while a run exists. coordinator_running: a gannf-coord holds the
-- coordinator's advisory lock (src/cluster/coordinator.cpp, key
-- 0x67616e6e66636f: classid 0x0067616e, objid 0x6e66636f) on this database;
-- pg_locks is readable by every login.
CREATE VIEW gannf.monitor_run AS
SELECT ts.run_id, ts.status, ts.iteration, ts.epoch, ts.position, ts.dataset_size, ts.lease,
       ts.started_at, ts.updated_at, ts.config,
       EXISTS (SELECT FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted
                  AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
                  AND l.classid = 6775150 AND l.objid = 1852203887 AND l.objsubid = 1) AS coordinator_running,
       gannf.now() AS db_now
  FROM gannf.training_state ts;

CREATE VIEW gannf.monitor_history AS
SELECT h.iteration, h.epoch, h.loss_d, h.loss_g, h.d_real, h.d_fake, h.d_accuracy, h.samples,
       h.submissions_used, h.submissions_rejected, h.active_workers, h.images_per_second,
       h.seconds, h.update_seconds, h.recorded_at
  FROM gannf.loss_history h;

-- "Active" as 0003's active_workers: seen within the run's lease.
CREATE VIEW gannf.monitor_workers AS
SELECT w.id, w.login::text AS login, w.name, w.backend, w.cpu_cores, w.ram_bytes, w.gpu_name,
       w.gpu_memory_bytes, w.batch_size, w.registered_at, w.last_seen,
       w.last_seen >= gannf.now() - coalesce((SELECT ts.lease FROM gannf.training_state ts),
                                             interval '5 minutes') AS active
  FROM gannf.workers w;

CREATE VIEW gannf.monitor_submissions AS
SELECT s.id, s.iteration, s.worker_id, s.state::text AS state, s.sample_count, s.compute_seconds,
       s.reject_reason, s.submitted_at
  FROM gannf.submissions s;

CREATE FUNCTION gannf.notify_monitor() RETURNS trigger
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
BEGIN
  PERFORM pg_notify('gannf_monitor', TG_TABLE_NAME);
  RETURN NULL;
END
$$;

CREATE TRIGGER training_state_notify_monitor
  AFTER INSERT OR UPDATE ON gannf.training_state
  FOR EACH STATEMENT EXECUTE FUNCTION gannf.notify_monitor();
CREATE TRIGGER sample_grids_notify_monitor
  AFTER INSERT OR UPDATE ON gannf.sample_grids
  FOR EACH STATEMENT EXECUTE FUNCTION gannf.notify_monitor();
CREATE TRIGGER workers_notify_monitor
  AFTER INSERT ON gannf.workers
  FOR EACH STATEMENT EXECUTE FUNCTION gannf.notify_monitor();

GRANT USAGE ON SCHEMA gannf TO gannf_monitor;
GRANT SELECT ON gannf.monitor_run, gannf.monitor_history, gannf.monitor_workers,
                gannf.monitor_submissions, gannf.sample_grids,
                gannf.active_workers, gannf.training_progress, gannf.work_unit_status,
                gannf.leaderboard, gannf.stalled_units
  TO gannf_monitor, gannf_worker;
-- The views read the test clock: a view's caller needs EXECUTE on the
-- functions it calls, and gannf.now() reads its table with the caller's
-- rights (it is not SECURITY DEFINER). The clock holds one interval.
GRANT EXECUTE ON FUNCTION gannf.now() TO gannf_monitor, gannf_worker;
GRANT SELECT ON gannf.clock TO gannf_monitor, gannf_worker;
