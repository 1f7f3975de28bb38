-- 0018: unit counts chosen by the coordinator from each worker's measured
-- speed and link (issue 17, item 2d; docs/scaling.md, "Units per claim").
--
-- A worker started with `--sum-units auto` reports, after each accepted
-- submission, what it measured: the units it computed, their compute
-- seconds, the seconds and bytes of the upload, and of its last weights
-- download (gannf.report_timing). After each update the coordinator shares
-- the next update's units among the present workers so that each would
-- finish its share at about the same time (src/cluster/unit_counts.h) and
-- writes each worker's count to workers.units_hint; report_timing answers
-- with it, and the worker claims (and sums) that many at once.
--
-- The figures are hostile input like everything a worker sends: range-checked
-- here, and they can only move the worker's own hint, which is advice. What a
-- login may claim is bounded by claim()'s caps (trust_settings.max_held_units,
-- max_units_per_iteration) whatever its hint, as before: a worker that lies
-- gets no unit it could not have asked claim() for directly.

ALTER TABLE gannf.workers
  ADD COLUMN units_hint integer NOT NULL DEFAULT 1,
  ADD COLUMN timing_units integer,
  ADD COLUMN timing_compute_seconds real,     -- of timing_units units
  ADD COLUMN timing_upload_seconds real,      -- one submission
  ADD COLUMN timing_upload_bytes bigint,
  ADD COLUMN timing_download_seconds real,    -- the weights, its last download
  ADD COLUMN timing_download_bytes bigint,
  ADD COLUMN timing_at timestamptz,
  ADD CONSTRAINT workers_units_hint_sane CHECK (units_hint BETWEEN 1 AND 64);

CREATE FUNCTION gannf.report_timing(
  p_worker bigint, p_units integer, p_compute_seconds real, p_upload_seconds real, p_upload_bytes bigint,
  p_download_seconds real, p_download_bytes bigint)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_hint integer;
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
   WHERE id = p_worker
  RETURNING units_hint INTO v_hint;
  RETURN v_hint;
END
$$;

REVOKE ALL ON FUNCTION gannf.report_timing(bigint, integer, real, real, bigint, real, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gannf.report_timing(bigint, integer, real, real, bigint, real, bigint) TO gannf_worker;
