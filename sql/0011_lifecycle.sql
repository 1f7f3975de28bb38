-- 0011: the run's life cycle from any terminal (gannf-coord stop | pause |
-- resume, docs/operations.md Life cycle), and which workers are present.
--
-- 1. training_state.status gains 'stopped': the run was stopped by
--    `gannf-coord stop` or reached its coordinator's --iterations bound.
--    Workers claim nothing (claim() serves only 'running'); `gannf-coord run`
--    carries it on. 'paused' is `gannf-coord pause`: the coordinator stays up
--    and closes no iteration, workers wait; `resume` or `run` ends it.
--    Whether a coordinator is running at all is not a status but its
--    advisory lock (monitor_run.coordinator_running, sql/0007).
--
-- 2. gannf.leave(worker): a worker that exits says so, so that it stops
--    counting as present at once rather than when its lease would pass.
--    Any later call of the same worker (claim, heartbeat ...) moves
--    last_seen past left_at, so a restarted worker is present again.
--
-- 3. gannf.present_workers: workers seen (register, heartbeat, claim,
--    submit, release) within 90 s and not left since. An idle worker polls
--    at least every 5 s and a busy one beats at least every 30 s, so 90 s
--    is three missed beats; the lease (minutes) would count a dead worker
--    as present far too long.

ALTER TABLE gannf.training_state DROP CONSTRAINT training_state_status_known;
ALTER TABLE gannf.training_state ADD CONSTRAINT training_state_status_known
  CHECK (status IN ('running', 'paused', 'stopped', 'finished'));

ALTER TABLE gannf.workers ADD COLUMN left_at timestamptz;

CREATE FUNCTION gannf.leave(p_worker bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  UPDATE gannf.workers SET left_at = gannf.now() WHERE id = p_worker;
END
$$;

REVOKE ALL ON FUNCTION gannf.leave(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gannf.leave(bigint) TO gannf_worker;

CREATE VIEW gannf.present_workers AS
SELECT w.id, w.login, w.name, w.backend, w.last_seen,
       extract(epoch FROM gannf.now() - w.last_seen)::real AS seconds_since_seen,
       (SELECT u.id FROM gannf.work_units u
         WHERE u.worker_id = w.id AND u.state = 'claimed'
         ORDER BY u.id LIMIT 1) AS current_unit
  FROM gannf.workers w
 WHERE w.last_seen >= gannf.now() - interval '90 seconds'
   AND (w.left_at IS NULL OR w.left_at < w.last_seen);

GRANT SELECT ON gannf.present_workers TO gannf_monitor, gannf_worker;

-- 4. The --iterations bound of the coordinator running (or last run), for
--    status's "iteration N of M" and its ETA; NULL: no bound.
ALTER TABLE gannf.training_state ADD COLUMN iteration_bound bigint;
