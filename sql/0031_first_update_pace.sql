-- 0031: a run's first update is judged by the coordinator's own time for
-- a unit (docs/security.md, "The first update").
--
-- A unit is late past hold_factor × its images (or its claim's) × a pace:
-- the update's own once a unit of it is in, before that the last update's
-- (0023, 0026). The first update of a run has neither, so nothing of it was
-- ever late: a login that claimed all its units the moment it was made and
-- never submitted held the run for the hold bound (heartbeat(): at least 2
-- minutes; 68 for a claim of 1024 images with no history) or, sending no
-- heartbeat, for the lease (5 minutes). A claim flood did that by accident:
-- 315 s for 100 updates against 10 s alone, in 3 of 6 runs. As many
-- logins as the update has units, one unit each, did it as well.
--
-- 1. training_state.coordinator_pace: the coordinator's own seconds per
--    image of a unit on its CPU back end (a whole GAN step, forward and
--    backward; gannf-coord run measures it at its start: src/cluster/
--    spot_check.h, cpu_seconds_per_image). NULL until measured, and in runs
--    whose coordinator does not measure it: then the first update is judged
--    as before.
-- 2. update_pace(k, false) is 0023's, and where it has nothing -- no unit
--    of the run was ever in -- coordinator_pace × first_pace_slack (5): the
--    first update's units are judged by the rules of every other update (a
--    login holding several of its units; every unit held and none in, once
--    per unit: 0026) at that pace. update_pace(k, true), the pace per image
--    of a claim, stays NULL there: a unit is judged by its own images, not
--    its claim's. Judged by its claim's (this file's first form, slack
--    10), a claim of the whole update, 4 units of 256 images, was allowed
--    4 × 10 × 1024 × 13.94 ms = 571 s on a 2-core coordinator, past the
--    lease (bench/first_update.sh: the first update took 333 s). And a
--    gannf-worker's claims are of one unit until the coordinator has
--    measured it (--sum-units auto).
-- 3. late_bound() is 0023's, at least first_late_floor (1 minute) while no
--    unit of the run was ever in. A student's first unit downloads the
--    weights after its claim, and its upload is the class's first: time the
--    coordinator's own step knows nothing of.
--
-- So an honest machine loses its unit of the first update only when it is
-- more than first_pace_slack × hold_factor (20) times slower than the
-- coordinator's CPU per image, and over first_late_floor; it loses that
-- one unit (a unit taken off someone is judged again only once a unit of
-- the update is in: 0026), and gives way for held_give_way_for. A login
-- holding the whole first update holds it that long, not the lease.

ALTER TABLE gannf.training_state
  ADD COLUMN coordinator_pace interval,  -- the coordinator's CPU time per image of a unit (NULL: not measured)
  ADD CONSTRAINT training_state_coordinator_pace_positive CHECK (coordinator_pace > '0');

ALTER TABLE gannf.trust_settings
  ADD COLUMN first_pace_slack real NOT NULL DEFAULT 5,
  ADD COLUMN first_late_floor interval NOT NULL DEFAULT '1 minute',
  ADD CONSTRAINT trust_settings_first_pace_sane CHECK (first_pace_slack >= 1 AND first_late_floor > '0');

-- Whether a unit of the run up to update p_iteration was ever in: what the
-- paces of 0023 need.
CREATE FUNCTION gannf.run_has_pace(p_iteration bigint) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM gannf.work_units k
                  WHERE k.iteration <= p_iteration AND k.state IN ('submitted', 'done'))
$$;

-- As 0023, and before any unit of the run is in, per image of a unit, the
-- coordinator's pace × first_pace_slack (NULL where it was not measured,
-- and per image of a claim).
CREATE OR REPLACE FUNCTION gannf.update_pace(p_iteration bigint, p_by_claim boolean) RETURNS interval
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT coalesce(
    (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY c.held / CASE WHEN p_by_claim THEN c.images ELSE c.own END)
       FROM (SELECT u.submitted_at - u.claimed_at AS held, u.sample_count AS own,
                    sum(u.sample_count) OVER (PARTITION BY u.worker_id, u.claimed_at) AS images
               FROM gannf.work_units u
              WHERE u.iteration = (SELECT max(k.iteration) FROM gannf.work_units k
                                    WHERE k.iteration <= p_iteration AND k.state IN ('submitted', 'done'))
                AND u.state IN ('submitted', 'done') AND u.submitted_at >= u.claimed_at) c),
    (SELECT r.coordinator_pace * s.first_pace_slack
       FROM gannf.training_state r CROSS JOIN gannf.trust_settings s
      WHERE NOT p_by_claim AND NOT gannf.run_has_pace(p_iteration)))
$$;

-- As 0023, at least first_late_floor while no unit of the run is in.
CREATE OR REPLACE FUNCTION gannf.late_bound(u gannf.work_units, p_unit_pace interval, p_claim_pace interval) RETURNS interval
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT greatest(CASE WHEN gannf.run_has_pace(u.iteration) THEN t.late_floor
                       ELSE greatest(t.late_floor, t.first_late_floor) END,
                  t.hold_factor * greatest(u.sample_count * p_unit_pace,
                                           gannf.claim_images(u) * p_claim_pace))
    FROM gannf.trust_settings t
$$;
