-- 0016: an update's cost does not grow with the run (issue 13; docs/operations.md,
-- "What an update costs as the run grows").
--
-- Done units, used submissions and loss rows stay for the whole run (the
-- leaderboard, the rejection reasons, the curves): a two-hour class leaves
-- tens of thousands. Every statement an update makes must find its few rows
-- without reading those. Before this file, four did read them (seen with
-- EXPLAIN on a run at iteration 10 000, and counted by
-- tests/test_ops_cost.cpp: about 108 000 rows read per update there):
--
-- 1. The coordinator's epoch progress summed the sample counts of the
--    epoch's done units, a sequential scan of work_units. Now a table holds
--    the sum per epoch, kept by triggers on work_units, and the coordinator
--    reads one row.
-- 2. The coordinator's counts of the open iteration's units (while it waits
--    for submissions, and before each update) filter work_units on the
--    iteration alone, which no index had (0001's claim index covers only
--    available and claimed units): an index on the iteration.
-- 3. claim() counts the units a login holds and has had in this iteration
--    (0008): `state = 'claimed' OR iteration = current`, which became a
--    sequential scan. With the iteration index and one of claimed units by
--    holder, the two arms are two small index scans.
-- 4. The start's count of the iteration's rejected submissions, and
--    heartbeat's hold bound (a worker's last 20 submissions: 0001's index
--    on worker_id alone gives all of them, or the primary key backwards
--    passes everyone else's): indexes on submissions by iteration and by
--    (worker, id).
--
-- The blob pruning (the coordinator's DELETE of settled submissions' blobs)
-- now looks each blob's submission up by its key instead of joining, so its
-- plan cannot turn into a scan of every submission (src/cluster/coordinator.cpp).

CREATE INDEX work_units_iteration_idx ON gannf.work_units (iteration);
CREATE INDEX work_units_claimed_idx ON gannf.work_units (worker_id) WHERE state = 'claimed';
CREATE INDEX submissions_iteration_idx ON gannf.submissions (iteration);
CREATE INDEX submissions_worker_recent_idx ON gannf.submissions (worker_id, id);

-- Images of done units per epoch: what the coordinator's "epoch 2/5 41.3%"
-- counts. Kept by the triggers below for every way a unit becomes done or
-- stops being done (an UPDATE of its state; units inserted done, as the
-- benchmarks' made-up history; deleted units, as init --force).
CREATE TABLE gannf.epoch_done (
  epoch integer PRIMARY KEY,
  samples bigint NOT NULL,
  CONSTRAINT epoch_done_samples_nonnegative CHECK (samples >= 0)
);
INSERT INTO gannf.epoch_done (epoch, samples)
SELECT epoch, sum(sample_count) FROM gannf.work_units WHERE state = 'done' GROUP BY epoch;

-- An UPDATE first: an upsert checks the row it would insert, and a
-- negative change would fail the CHECK before the conflict is seen.
CREATE FUNCTION gannf.epoch_done_add(p_epoch integer, p_samples bigint) RETURNS void
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
BEGIN
  UPDATE gannf.epoch_done SET samples = samples + p_samples WHERE epoch = p_epoch;
  IF NOT FOUND THEN
    INSERT INTO gannf.epoch_done AS e (epoch, samples) VALUES (p_epoch, p_samples)
    ON CONFLICT (epoch) DO UPDATE SET samples = e.samples + EXCLUDED.samples;
  END IF;
END
$$;

-- A row trigger limited to updates that touch a done row: claims and
-- heartbeats, the frequent updates, never fire it.
CREATE FUNCTION gannf.epoch_done_on_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
BEGIN
  IF OLD.state = 'done' THEN
    PERFORM gannf.epoch_done_add(OLD.epoch, -OLD.sample_count);
  END IF;
  IF NEW.state = 'done' THEN
    PERFORM gannf.epoch_done_add(NEW.epoch, NEW.sample_count);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER work_units_epoch_done_update
  AFTER UPDATE OF state, epoch, sample_count ON gannf.work_units
  FOR EACH ROW WHEN (OLD.state = 'done' OR NEW.state = 'done')
  EXECUTE FUNCTION gannf.epoch_done_on_update();

-- Inserts and deletes come in bulk (a made-up history; init --force): one
-- sum per statement from its transition table.
CREATE FUNCTION gannf.epoch_done_on_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
BEGIN
  PERFORM gannf.epoch_done_add(a.epoch, a.samples)
     FROM (SELECT epoch, sum(sample_count)::bigint AS samples FROM added WHERE state = 'done' GROUP BY epoch) a;
  RETURN NULL;
END
$$;

CREATE FUNCTION gannf.epoch_done_on_delete() RETURNS trigger
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
BEGIN
  PERFORM gannf.epoch_done_add(g.epoch, -g.samples)
     FROM (SELECT epoch, sum(sample_count)::bigint AS samples FROM gone WHERE state = 'done' GROUP BY epoch) g;
  RETURN NULL;
END
$$;

CREATE TRIGGER work_units_epoch_done_insert
  AFTER INSERT ON gannf.work_units REFERENCING NEW TABLE AS added
  FOR EACH STATEMENT EXECUTE FUNCTION gannf.epoch_done_on_insert();
CREATE TRIGGER work_units_epoch_done_delete
  AFTER DELETE ON gannf.work_units REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION gannf.epoch_done_on_delete();

-- The dashboard's look (src/monitor/monitor.cpp) in one statement: what is
-- new since its last one (loss rows, grids, submissions after the given
-- cursors, at most p_limit of each, oldest first), the run, and with
-- p_whole what it reads whole (the workers, the logins, whether a
-- coordinator holds its lock: most of a look's cost, which the dashboard
-- asks for every few seconds and when a worker registers, not at every
-- commit), as one JSON document of positional rows (the real columns as text, which the reader turns into the same
-- float4 the column holds). One statement is one snapshot, as 0007's views read in one
-- transaction were, and one round trip whose plans PL/pgSQL keeps for the
-- session: the server's CPU per look, which every update shares with the
-- dashboard, is what issue 14 bounds (docs/dashboard.md). The caller's
-- rights: what gannf_monitor and worker logins read through 0007 and 0013.
CREATE FUNCTION gannf.monitor_look(p_history_after bigint, p_grid_after bigint, p_submission_after bigint,
                                   p_limit integer, p_whole boolean)
RETURNS json
LANGUAGE plpgsql STABLE
SET search_path = gannf, pg_temp
-- One plan for the session: with custom plans (the default, as `id > $3`
-- looks unselective to a generic estimate) every look planned this
-- statement and its views again, which cost more than running it. The
-- generic plan walks the keys' indexes from the cursors (seen with EXPLAIN).
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN json_build_object(
    'now', extract(epoch FROM gannf.now())::float8,
    'run', (SELECT json_build_array(r.run_id, r.status, CASE WHEN p_whole THEN r.coordinator_running END,
                                    r.iteration, r.epoch, r.position,
                                    r.dataset_size, extract(epoch FROM r.lease)::float8,
                                    extract(epoch FROM r.started_at)::float8,
                                    extract(epoch FROM r.updated_at)::float8, r.config)
              FROM gannf.monitor_run r),
    'history', (SELECT coalesce(json_agg(json_build_array(h.iteration, h.epoch, h.loss_d::text, h.loss_g::text,
                                                          h.d_real::text, h.d_fake::text, h.d_accuracy::text,
                                                          h.samples, h.submissions_used, h.submissions_rejected,
                                                          h.active_workers, h.images_per_second::text,
                                                          h.seconds::text, h.update_seconds::text,
                                                          extract(epoch FROM h.recorded_at)::float8)
                                         ORDER BY h.iteration), '[]')
                  FROM (SELECT * FROM gannf.monitor_history WHERE iteration > p_history_after
                         ORDER BY iteration LIMIT p_limit) h),
    'grids', (SELECT coalesce(json_agg(json_build_array(g.iteration, g.epoch,
                                                        extract(epoch FROM g.recorded_at)::float8,
                                                        octet_length(g.png)::bigint) ORDER BY g.iteration), '[]')
                FROM (SELECT * FROM gannf.sample_grids WHERE iteration > p_grid_after
                       ORDER BY iteration LIMIT p_limit) g),
    'submissions', (SELECT coalesce(json_agg(json_build_array(s.id, s.iteration, s.worker_id, s.state,
                                                              s.sample_count, s.compute_seconds::text, s.reject_reason,
                                                              extract(epoch FROM s.submitted_at)::float8)
                                             ORDER BY s.id), '[]')
                      FROM (SELECT * FROM gannf.monitor_submissions WHERE id > p_submission_after
                             ORDER BY id LIMIT p_limit) s),
    'workers', CASE WHEN p_whole THEN (SELECT coalesce(json_agg(json_build_array(w.id, w.login, w.name, w.backend, w.cpu_cores,
                                                          w.ram_bytes, w.gpu_name, w.gpu_memory_bytes,
                                                          w.batch_size, extract(epoch FROM w.registered_at)::float8,
                                                          extract(epoch FROM w.last_seen)::float8, w.present,
                                                          w.strikes, w.quarantined) ORDER BY w.id), '[]')
                  FROM gannf.monitor_workers w) END,
    'logins', CASE WHEN p_whole THEN (SELECT coalesce(json_agg(json_build_array(t.login, t.strikes, t.quarantined,
                                                         coalesce(extract(epoch FROM t.quarantined_at)::float8, 0))
                                        ORDER BY t.login), '[]')
                 FROM gannf.monitor_logins t) END);
END
$$;

REVOKE ALL ON FUNCTION gannf.monitor_look(bigint, bigint, bigint, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gannf.monitor_look(bigint, bigint, bigint, integer, boolean) TO gannf_monitor, gannf_worker;
