-- 0025: the hold bound judges a claim as a whole, at the worker's pace per
-- image of a claim (docs/security.md, settings and "Stragglers: the quorum").
--
-- A claim of N units (gannf-worker --sum-units N: one summed upload) is
-- computed and sent as a whole. 0023 judged it so for the late rule; the
-- hold bound (heartbeat(), 0008/0021) still judged each unit by its own
-- images, at a pace it measured per unit:
--
-- 1. A worker that went from single units to a claim of 4 was allowed
--    hold_factor × one unit's images × its pace -- the time its claim takes
--    -- and was taken back as it finished, wherever that was over the
--    2-minute floor.
-- 2. Each unit of a summed claim counted the claim's whole time against its
--    own images, so the worker's pace read N times slower than it was, and
--    its next unit alone could be held N times longer: a way for a login to
--    stretch its own hold bound.
--
-- Now hold_bound(worker, images) measures the worker's time per image of a
-- claim (each of its claims among its last 20 accepted units once: claim to
-- its last submission ÷ the claim's images), and heartbeat() passes the
-- images of the unit's claim (claim_images(), 0023: the units one claim()
-- gave it that it still holds). A claim's units share one bound; the
-- heartbeat takes off the unit it was called for, and the others at their
-- own heartbeats (taking them all off in one call would lock them in the
-- order of the caller's choosing, against the coordinator's).

CREATE OR REPLACE FUNCTION gannf.hold_bound(p_worker bigint, p_images integer) RETURNS interval
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT greatest(t.hold_floor,
                  t.hold_factor * p_images * coalesce(m.per_image, t.hold_default_per_image))
    FROM gannf.trust_settings t
    LEFT JOIN LATERAL (
      SELECT sum(c.took) / nullif(sum(c.images), 0) AS per_image
        FROM (SELECT max(u.submitted_at) - u.claimed_at AS took, sum(u.sample_count) AS images
                FROM (SELECT s.work_unit_id FROM gannf.submissions s
                       WHERE s.worker_id = p_worker AND s.state IN ('pending', 'used')
                       ORDER BY s.id DESC LIMIT 20) recent
                JOIN gannf.work_units u ON u.id = recent.work_unit_id
               WHERE u.worker_id = p_worker AND u.submitted_at >= u.claimed_at
               GROUP BY u.claimed_at) c) m ON true
$$;

-- As 0021, with the bound of the unit's whole claim.
CREATE OR REPLACE FUNCTION gannf.heartbeat(p_worker bigint, p_unit bigint DEFAULT NULL, p_attempt integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_until timestamptz;
  v_lease interval;
  u gannf.work_units;
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  IF p_unit IS NULL THEN
    RETURN NULL;
  END IF;
  v_lease := (gannf.current_run()).lease;
  SELECT * INTO u FROM gannf.work_units c
   WHERE c.id = p_unit AND c.state = 'claimed' AND c.worker_id = p_worker AND c.attempt = p_attempt
     FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF v_now > u.claimed_at + gannf.hold_bound(p_worker, gannf.claim_images(u)::integer) THEN
    PERFORM gannf.take_off(ARRAY[p_unit]);
    RETURN NULL;
  END IF;
  UPDATE gannf.work_units SET visible_at = v_now + v_lease WHERE id = p_unit
  RETURNING visible_at INTO v_until;
  RETURN v_until;
END
$$;

-- As 0023 (the hold bound's take_off), recording the bound of each unit's claim.
CREATE OR REPLACE FUNCTION gannf.take_off(p_ids bigint[]) RETURNS bigint
LANGUAGE sql
SET search_path = gannf, pg_temp
AS $$
  SELECT gannf.take_off(array_agg(u.id), 'hold bound',
                        array_agg(gannf.hold_bound(u.worker_id, gannf.claim_images(u)::integer)))
    FROM gannf.work_units u
   WHERE u.id = ANY (p_ids) AND u.state = 'claimed'
$$;
