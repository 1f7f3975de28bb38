-- 0003: monitoring views: the questions the reference project's dashboard
-- answers, as plain SQL (psql, the dashboard in src/monitor, or anything
-- else that speaks PostgreSQL). Readable by the coordinator (the owner);
-- grant SELECT on them to a monitoring login if you want one.
--
-- "Active" means seen (register, heartbeat, claim, submit, release) within
-- the run's lease, or within 5 minutes when there is no run yet.

CREATE VIEW gannf.active_workers AS
SELECT w.id, w.login, w.name, w.backend, w.cpu_cores, w.ram_bytes, w.gpu_name,
       w.gpu_memory_bytes, w.batch_size, w.registered_at, w.last_seen,
       extract(epoch FROM gannf.now() - w.last_seen)::real AS seconds_since_seen,
       (SELECT u.id FROM gannf.work_units u
         WHERE u.worker_id = w.id AND u.state = 'claimed'
         ORDER BY u.id LIMIT 1) AS current_unit
  FROM gannf.workers w
 WHERE w.last_seen >= gannf.now()
       - coalesce((SELECT ts.lease FROM gannf.training_state ts), interval '5 minutes');

-- One row: where the run is.
CREATE VIEW gannf.training_progress AS
SELECT ts.run_id, ts.status, ts.iteration, ts.epoch, ts.position, ts.dataset_size,
       (100.0 * ts.position / ts.dataset_size)::real AS epoch_percent,
       ts.started_at, ts.updated_at,
       (SELECT count(*) FROM gannf.active_workers)::integer AS active_workers,
       lh.loss_d, lh.loss_g, lh.d_accuracy, lh.recorded_at AS last_update_at,
       (SELECT sum(h.samples) / nullif(extract(epoch FROM max(h.recorded_at) - min(h.recorded_at)), 0)
          FROM gannf.loss_history h
         WHERE h.recorded_at >= gannf.now() - interval '5 minutes')::real AS images_per_second,
       (SELECT count(*) FROM gannf.work_units u
         WHERE u.iteration = ts.iteration AND u.state IN ('available', 'claimed'))::integer AS open_units,
       (SELECT count(*) FROM gannf.submissions s
         WHERE s.iteration = ts.iteration AND s.state = 'pending')::integer AS pending_submissions
  FROM gannf.training_state ts
  LEFT JOIN LATERAL (SELECT * FROM gannf.loss_history h ORDER BY h.iteration DESC LIMIT 1) lh ON true;

-- Units by iteration and state.
CREATE VIEW gannf.work_unit_status AS
SELECT u.iteration, u.state, count(*)::integer AS units,
       sum(u.sample_count)::bigint AS samples,
       max(u.attempt) AS max_attempt,
       count(*) FILTER (WHERE u.state = 'claimed' AND u.visible_at < gannf.now())::integer AS expired_leases
  FROM gannf.work_units u
 GROUP BY u.iteration, u.state;

-- Who contributed most: accepted submissions (pending or used), images, and
-- rejections, per worker.
CREATE VIEW gannf.leaderboard AS
SELECT rank() OVER (ORDER BY coalesce(sum(s.sample_count) FILTER (WHERE s.state IN ('pending', 'used')), 0) DESC)::integer AS rank,
       w.id AS worker_id, w.login, w.name, w.backend, w.gpu_name,
       count(s.id) FILTER (WHERE s.state IN ('pending', 'used'))::integer AS units,
       coalesce(sum(s.sample_count) FILTER (WHERE s.state IN ('pending', 'used')), 0)::bigint AS images,
       count(s.id) FILTER (WHERE s.state = 'rejected')::integer AS rejected,
       avg(s.compute_seconds)::real AS mean_compute_seconds,
       max(s.submitted_at) AS last_submission,
       w.last_seen
  FROM gannf.workers w
  LEFT JOIN gannf.submissions s ON s.worker_id = w.id
 GROUP BY w.id;

-- Claimed units whose lease has passed (the holder vanished or is slow):
-- the next claim takes them over.
CREATE VIEW gannf.stalled_units AS
SELECT u.id AS unit_id, u.iteration, u.epoch, u.first_index, u.sample_count, u.attempt,
       u.worker_id, w.login, w.name AS worker_name, u.claimed_at,
       u.visible_at AS lease_until,
       extract(epoch FROM gannf.now() - u.visible_at)::real AS seconds_overdue,
       w.last_seen AS worker_last_seen
  FROM gannf.work_units u
  JOIN gannf.workers w ON w.id = u.worker_id
 WHERE u.state = 'claimed' AND u.visible_at < gannf.now();
