-- 0022: units held far longer than the update's others took are taken off
-- their holders (docs/security.md, "Stragglers: the quorum").
--
-- The quorum (an update closes once 60% of its units are in, at least 3,
-- and the rest are as late again) cannot be reached while one login holds
-- more units than the update can do without: 2 of the default 4. The update
-- then waited for the hold bound (heartbeat(), 0008: at least 2 minutes; for
-- a login that never submitted, 4 × 1 s per image, 17 minutes for a unit of
-- 256 images), and the holder claimed the next update's units the moment
-- they were made: one login held the class to an update per hold bound.
--
--   trust_settings.late_floor  a unit is never late before this (5 s)
--
-- gannf.take_off_late(k), the coordinator's, called while it waits for
-- update k: a unit claimed for longer than hold_factor (4) × its images ×
-- the update's median time per image (claim to submission of the units
-- already submitted, the lower median: a minority that submits slowly
-- cannot stretch it), and at least late_floor, is taken off its holder --
-- available again at once, its holder's login recorded (0021: served to
-- another login while one is present, and the holder held to one unit at a
-- time until its next accepted submission). Nothing is late before a unit of the
-- update has been submitted. The rule applies to every aggregation rule:
-- whoever computes a unit, its result is the same, so the exact mean keeps
-- distributed = local. No strike (a slow laptop beside fast ones looks the
-- same); its unit goes to someone faster.

ALTER TABLE gannf.trust_settings ADD COLUMN late_floor interval NOT NULL DEFAULT '5 seconds';
ALTER TABLE gannf.trust_settings ADD CONSTRAINT trust_settings_late_floor_positive CHECK (late_floor > '0');

CREATE FUNCTION gannf.take_off_late(p_iteration bigint) RETURNS bigint
LANGUAGE sql
SET search_path = gannf, pg_temp
AS $$
  WITH per_image AS (
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY (u.submitted_at - u.claimed_at) / u.sample_count) AS t
      FROM gannf.work_units u
     WHERE u.iteration = p_iteration AND u.state IN ('submitted', 'done') AND u.submitted_at >= u.claimed_at
  )
  SELECT gannf.take_off(ARRAY(
    -- In id order, and skipping a unit whose submission is being stored:
    -- submit_summed() locks several units too.
    SELECT u.id
      FROM gannf.work_units u, per_image m, gannf.trust_settings t
     WHERE m.t IS NOT NULL AND u.iteration = p_iteration AND u.state = 'claimed'
       AND gannf.now() > u.claimed_at + greatest(t.late_floor, t.hold_factor * u.sample_count * m.t)
     ORDER BY u.id
       FOR UPDATE OF u SKIP LOCKED))
$$;
