-- 0027: the coordinator's units per claim live in a table of their own, so
-- that a busy worker gets them (docs/scaling.md, "Units per claim").
--
-- 0018 kept each worker's count in workers.units_hint, and the coordinator
-- wrote it after each update with FOR UPDATE SKIP LOCKED, so that a worker
-- holding its own row in an open transaction could not stall it. But every
-- call a worker makes -- claim, submit, heartbeat, report_timing -- updates
-- its row (last_seen), and a fast worker makes them back to back just after
-- each commit, which is when the coordinator writes the counts: its row was
-- skipped at update after update. Measured (Summed.AutoUnitCounts..., the
-- coordinator printing the rows it wrote): the fast worker's row was skipped
-- at 3 updates running in one local run of three, and at all 5 in a CI run,
-- where it never left one unit per claim.
--
-- Now the counts are rows of gannf.unit_hints, which only the coordinator
-- writes (it owns the table; workers have no privilege on it) and which
-- report_timing() only reads: no worker's call takes a lock the
-- coordinator's write waits for or skips. A worker with no row claims one
-- unit, as before. report_timing() is 0018's with the new read.

CREATE TABLE gannf.unit_hints (
  worker_id bigint PRIMARY KEY REFERENCES gannf.workers (id) ON DELETE CASCADE,
  units integer NOT NULL CONSTRAINT unit_hints_sane CHECK (units BETWEEN 1 AND 64)
);

INSERT INTO gannf.unit_hints (worker_id, units)
SELECT id, units_hint FROM gannf.workers WHERE units_hint <> 1;

ALTER TABLE gannf.workers DROP COLUMN units_hint;

CREATE OR REPLACE FUNCTION gannf.report_timing(
  p_worker bigint, p_units integer, p_compute_seconds real, p_upload_seconds real, p_upload_bytes bigint,
  p_download_seconds real, p_download_bytes bigint)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  IF p_units IS NULL OR p_units NOT BETWEEN 1 AND 64 THEN
    RAISE EXCEPTION 'units must be 1 to 64, not %', p_units USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_compute_seconds IS NULL OR p_upload_seconds IS NULL OR p_download_seconds IS NULL THEN
    RAISE EXCEPTION 'every timing is required' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM gannf.check_real('compute_seconds', p_compute_seconds, 0, 86400);
  PERFORM gannf.check_real('upload_seconds', p_upload_seconds, 0, 86400);
  PERFORM gannf.check_real('download_seconds', p_download_seconds, 0, 86400);
  IF p_upload_bytes IS NULL OR p_upload_bytes NOT BETWEEN 0 AND 2147483647
     OR p_download_bytes IS NULL OR p_download_bytes NOT BETWEEN 0 AND 2147483647 THEN
    RAISE EXCEPTION 'byte counts must be 0 to 2147483647' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE gannf.workers
     SET timing_units = p_units, timing_compute_seconds = p_compute_seconds,
         timing_upload_seconds = p_upload_seconds, timing_upload_bytes = p_upload_bytes,
         timing_download_seconds = p_download_seconds, timing_download_bytes = p_download_bytes,
         timing_at = gannf.now(), last_seen = gannf.now()
   WHERE id = p_worker;
  RETURN coalesce((SELECT h.units FROM gannf.unit_hints h WHERE h.worker_id = p_worker), 1);
END
$$;
