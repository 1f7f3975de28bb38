-- 0023: a late unit is judged by its claim, the pace by the last update
-- that has one, and the class sees what was taken off whom and why
-- (docs/security.md, "Stragglers: the quorum").
--
-- 1. A claim of several units (gannf-worker --sum-units N: one summed
--    upload) is computed and sent as a whole, so each of its units is held
--    for the time of all of them. 0022 judged each unit by its own images:
--    its pace (claim to submission ÷ the unit's images) counted a summed
--    claim N times too slow, and its bound (hold_factor × the unit's
--    images × that pace) gave the claim the time of one unit. An honest
--    worker summing 4 units beside workers sending one at a time was late
--    at 4 units' time, just as it finished, every time it had its cap back.
--    Now a claimed unit is late past hold_factor × the greater of two
--    times: 0022's (its images × the update's median time per image of a
--    unit, claim to submission ÷ the unit's images: about what a claim of
--    the class takes) and its claim's images × the update's median time
--    per image of a claim (claim to submission ÷ the images of the whole
--    claim: the units one claim() gave one worker, the same worker and
--    claimed_at). The first alone was 0022's rule; the second alone would
--    take the unit of a slow laptop off as late where the coordinator's
--    units per claim (--sum-units auto, 0018) give fast machines 4 units
--    each so that every claim takes as long: the fast machines' units make
--    the median per image theirs. A claim's units are taken off together.
--    The cost: a login may hold a claim of N units N times as long as one
--    unit -- once, as a login a unit was taken off holds one unit at a time
--    until a submission of it is accepted (0021).
--
-- 2. Nothing was late before a unit of the update was in, so a login that
--    claimed every unit of an update the moment it was made (its cap, 4, is
--    the default update's 4 units) held the update for the hold bound: 2
--    minutes, 17 for a login that never submitted. The pace is now the
--    update's own once a unit of it is in, before that the latest earlier
--    update's that has one, for the units of a login that holds more than
--    one of the update's (take_off_late_logins() says why only those); the
--    first update of a run has no pace, and the hold bound alone decides.
--
-- 3. What was taken off whom, and why, is seen: login_taken counts the
--    units taken off each login (`units`), and keeps the last one's reason
--    (`why`: 'late', 'hold bound', 'lease' -- its lease passed and another
--    worker took it over --, 'closed' -- its update closed at the quorum
--    without it) and, for 'late' and 'hold bound', the time it had been
--    allowed (`bound`). The view monitor_logins (0013: what the dashboard
--    and every login read) lists the logins with either row, with these
--    columns and `held_to_one`; a worker reads its login's row to tell its
--    student why the unit went. The coordinator's take_off_late_logins(k)
--    names the logins whose units it took off.
--
-- take_off(ids, why, bounds) does 0021's take_off(ids) and records the
-- reason and the times allowed, which its callers computed;
-- take_off(ids) is the hold bound's (heartbeat(), 0021, is its one caller
-- after this file: carry_over() and take_off_late() are restated below), and
-- note_taken(logins) a lapsed lease's (claim(), 0021).

ALTER TABLE gannf.login_taken
  ADD COLUMN units bigint NOT NULL DEFAULT 1,   -- units taken off the login, all told
  ADD COLUMN why text,                          -- the last one's reason (NULL: before 0023)
  ADD COLUMN bound interval,                    -- how long it had been allowed ('late', 'hold bound')
  ADD CONSTRAINT login_taken_why_known CHECK (why IN ('late', 'hold bound', 'lease', 'closed'));

-- The images of the claim unit u belongs to: the units one claim() gave
-- its worker at once that it still holds.
CREATE FUNCTION gannf.claim_images(u gannf.work_units) RETURNS bigint
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT coalesce(sum(x.sample_count), u.sample_count)
    FROM gannf.work_units x
   WHERE x.iteration = u.iteration AND x.worker_id = u.worker_id AND x.claimed_at = u.claimed_at
     AND x.state = 'claimed'
$$;

-- The time per image of update p_iteration's submitted units, the lower
-- median (a minority that submits slowly cannot stretch it): with
-- p_by_claim each unit at its claim's (claim to submission ÷ the images of
-- all the claim's units), otherwise at its own (÷ its own images, 0022's).
-- Before a unit of the update is in, the latest earlier update's that has
-- one; NULL when none has.
CREATE FUNCTION gannf.update_pace(p_iteration bigint, p_by_claim boolean) RETURNS interval
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY c.held / CASE WHEN p_by_claim THEN c.images ELSE c.own END)
    FROM (SELECT u.submitted_at - u.claimed_at AS held, u.sample_count AS own,
                 sum(u.sample_count) OVER (PARTITION BY u.worker_id, u.claimed_at) AS images
            FROM gannf.work_units u
           WHERE u.iteration = (SELECT max(k.iteration) FROM gannf.work_units k
                                 WHERE k.iteration <= p_iteration AND k.state IN ('submitted', 'done'))
             AND u.state IN ('submitted', 'done') AND u.submitted_at >= u.claimed_at) c
$$;

-- How long claimed unit u may be held: hold_factor × the greater of its
-- images × p_unit_pace and its claim's images × p_claim_pace (update_pace()
-- without and with p_by_claim), at least late_floor.
CREATE FUNCTION gannf.late_bound(u gannf.work_units, p_unit_pace interval, p_claim_pace interval) RETURNS interval
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT greatest(t.late_floor, t.hold_factor * greatest(u.sample_count * p_unit_pace,
                                                         gannf.claim_images(u) * p_claim_pace))
    FROM gannf.trust_settings t
$$;

-- A unit was taken off each of p_logins just now, for p_why; p_bounds, in
-- step with p_logins, the time each had been allowed (NULL: none). A login
-- named twice lost two units.
DROP FUNCTION gannf.note_taken(name[]);
CREATE FUNCTION gannf.note_taken(p_logins name[], p_why text DEFAULT 'lease', p_bounds interval[] DEFAULT NULL)
RETURNS void
LANGUAGE sql
SET search_path = gannf, pg_temp
AS $$
  INSERT INTO gannf.login_taken AS t (login, taken_at, last_submission, units, why, bound)
  SELECT x.l, gannf.now(),
         coalesce((SELECT max(s.id) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                    WHERE w.login = x.l), 0),
         x.n, p_why, x.bound
    FROM (SELECT z.l, count(*) AS n, max(z.b) AS bound
            FROM unnest(coalesce(p_logins, '{}'), p_bounds) AS z(l, b)
           WHERE z.l IS NOT NULL
           GROUP BY z.l) x
  ON CONFLICT (login) DO UPDATE
    SET taken_at = EXCLUDED.taken_at, last_submission = EXCLUDED.last_submission,
        units = t.units + EXCLUDED.units, why = EXCLUDED.why, bound = EXCLUDED.bound
$$;

-- 0021's take_off(p_ids), recording p_why ('late', 'hold bound',
-- 'closed') and, from p_bounds (in step with p_ids; NULL: none), the time
-- each unit had been allowed.
CREATE FUNCTION gannf.take_off(p_ids bigint[], p_why text, p_bounds interval[] DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_taken bigint;
  v_holders name[];
  v_bounds interval[];
BEGIN
  WITH taken AS (
    UPDATE gannf.work_units u
       SET state = 'available', visible_at = gannf.now(), taken_from = gannf.taken_off_logins(u)
      FROM unnest(p_ids, p_bounds) AS h(id, bound)
     WHERE u.id = h.id AND u.state = 'claimed'
    RETURNING u.worker_id, h.bound  -- worker_id unchanged: the holder
  )
  SELECT count(*), array_agg(w.login), array_agg(t.bound) INTO v_taken, v_holders, v_bounds
    FROM taken t LEFT JOIN gannf.workers w ON w.id = t.worker_id;
  PERFORM gannf.note_taken(v_holders, p_why, v_bounds);
  RETURN v_taken;
END
$$;

-- The hold bound's (heartbeat(), 0021): as 0021, recording why and each
-- unit's hold_bound().
CREATE OR REPLACE FUNCTION gannf.take_off(p_ids bigint[]) RETURNS bigint
LANGUAGE sql
SET search_path = gannf, pg_temp
AS $$
  SELECT gannf.take_off(array_agg(u.id), 'hold bound', array_agg(gannf.hold_bound(u.worker_id, u.sample_count)))
    FROM gannf.work_units u
   WHERE u.id = ANY (p_ids) AND u.state = 'claimed'
$$;

-- As 0021, recording why ('closed').
CREATE OR REPLACE FUNCTION gannf.carry_over(p_iteration bigint) RETURNS bigint
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_moved bigint;
BEGIN
  PERFORM gannf.take_off(ARRAY(SELECT u.id FROM gannf.work_units u
                                WHERE u.iteration = p_iteration AND u.state = 'claimed'), 'closed');
  UPDATE gannf.work_units
     SET iteration = p_iteration + 1, state = 'available', visible_at = '-infinity'
   WHERE iteration = p_iteration AND state IN ('available', 'claimed');
  GET DIAGNOSTICS v_moved = ROW_COUNT;
  RETURN v_moved;
END
$$;

-- The coordinator's, while it waits for update p_iteration: takes off every
-- claimed unit of it held past late_bound() at update_pace()'s, in id order,
-- skipping a unit whose submission is being stored (submit_summed() locks
-- several units too), and answers per holder's login the units taken off
-- and the longest time one had been allowed. Nothing when no update has a
-- pace yet. By an earlier update's pace (none of this one's units is in),
-- only the units of a login holding more than one of the update's: the
-- class's machines may have changed since (the GPUs gone home, a new
-- class), and a pace no machine present can keep would take every unit off
-- every holder before any is done, again and again; a login holding one
-- unit -- a login a unit was taken off holds no more -- is judged once a
-- unit of the update is in.
CREATE FUNCTION gannf.take_off_late_logins(p_iteration bigint)
RETURNS TABLE (login text, units bigint, bound_seconds float8)
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_own boolean := EXISTS (SELECT 1 FROM gannf.work_units k
                            WHERE k.iteration = p_iteration AND k.state IN ('submitted', 'done'));
  v_unit_pace interval := gannf.update_pace(p_iteration, false);
  v_claim_pace interval := gannf.update_pace(p_iteration, true);
  v_ids bigint[];
  v_logins name[];
  v_bounds interval[];
BEGIN
  IF v_unit_pace IS NULL THEN
    RETURN;
  END IF;
  SELECT array_agg(l.id ORDER BY l.id), array_agg(l.login ORDER BY l.id), array_agg(l.bound ORDER BY l.id)
    INTO v_ids, v_logins, v_bounds
    FROM (SELECT u.id, w.login, b.bound
            FROM gannf.work_units u LEFT JOIN gannf.workers w ON w.id = u.worker_id
                 CROSS JOIN LATERAL (SELECT gannf.late_bound(u, v_unit_pace, v_claim_pace) AS bound) b
           WHERE u.iteration = p_iteration AND u.state = 'claimed'
             AND gannf.now() > u.claimed_at + b.bound
             AND (v_own OR (SELECT count(*) FROM gannf.work_units x JOIN gannf.workers h ON h.id = x.worker_id
                             WHERE x.iteration = p_iteration AND x.state = 'claimed' AND h.login = w.login) > 1)
           ORDER BY u.id
             FOR UPDATE OF u SKIP LOCKED) l;
  IF v_ids IS NULL THEN
    RETURN;
  END IF;
  PERFORM gannf.take_off(v_ids, 'late', v_bounds);
  RETURN QUERY
    SELECT z.l::text, count(*), max(extract(epoch FROM z.b))::float8
      FROM unnest(v_logins, v_bounds) AS z(l, b)
     GROUP BY z.l
     ORDER BY z.l;
END
$$;

-- As 0022 (how many units), by take_off_late_logins().
CREATE OR REPLACE FUNCTION gannf.take_off_late(p_iteration bigint) RETURNS bigint
LANGUAGE sql
SET search_path = gannf, pg_temp
AS $$ SELECT coalesce(sum(l.units), 0)::bigint FROM gannf.take_off_late_logins(p_iteration) l $$;

-- 0013's view, plus the logins units were taken off (login_taken): how
-- many, when last, why, the time it had been allowed, and whether the login
-- holds one unit at a time now (0021's held_to_one(), written out: a view
-- reads its tables with its owner's rights, a function it calls with the
-- reader's).
CREATE OR REPLACE VIEW gannf.monitor_logins AS
SELECT coalesce(t.login, k.login)::text AS login, coalesce(t.strikes, 0) AS strikes,
       coalesce(t.quarantined_at IS NOT NULL, false) AS quarantined, t.quarantined_at,
       coalesce(k.units, 0) AS units_taken, k.taken_at, k.why AS taken_why, k.bound AS taken_bound,
       k.login IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                          WHERE w.login = k.login AND s.id > k.last_submission
                            AND s.state IN ('pending', 'used')) AS held_to_one
  FROM gannf.login_trust t
  FULL JOIN gannf.login_taken k ON k.login = t.login;

-- 0016's look, its logins with 0023's columns, and 'logins_taken' saying so
-- (the rest unchanged).
CREATE OR REPLACE FUNCTION gannf.monitor_look(p_history_after bigint, p_grid_after bigint, p_submission_after bigint,
                                              p_limit integer, p_whole boolean)
RETURNS json
LANGUAGE plpgsql STABLE
SET search_path = gannf, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN json_build_object(
    'now', extract(epoch FROM gannf.now())::float8,
    'logins_taken', true,  -- the logins' rows carry 0023's columns
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
                                                         coalesce(extract(epoch FROM t.quarantined_at)::float8, 0),
                                                         t.units_taken,
                                                         coalesce(extract(epoch FROM t.taken_at)::float8, 0),
                                                         t.taken_why, extract(epoch FROM t.taken_bound)::float8,
                                                         t.held_to_one)
                                        ORDER BY t.login), '[]')
                 FROM gannf.monitor_logins t) END);
END
$$;
