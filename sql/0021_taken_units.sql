-- 0021: a unit taken off its holder is not served back to it
-- (docs/security.md, "Stragglers: the quorum").
--
-- A unit leaves its holder's hands without a result in three ways: the hold
-- bound (heartbeat(), 0008), a lease that passed (claim() gives the unit to
-- whoever asks next) and an update that closed without it (the robust rules'
-- quorum: the coordinator serves the iteration's open units again in the
-- next). Units are served lowest id first, and a unit served again keeps its
-- id, the lowest: the holder's next claim got it back, and its images waited
-- again for as long as the holder cared to hold them -- to the end of the run,
-- when no other unit is left to close an update and the class waited for the
-- hold bound each time.
--
--   work_units.taken_from  the logins the unit was taken off, each once
--
-- claim() does not give a unit to a login it was taken off (a lapsed lease
-- counts as taken off the holder's login before anyone claims the unit)
-- while a login it was not taken off is present (present_workers: seen in
-- the last 90 s, not left) and not quarantined. Where none is -- a class of
-- one, the others gone home -- the holder's login may have it again, so a
-- unit never waits for nobody. A login is named, not a worker, so that a new
-- worker name does not reset it; colluding logins each lose the unit in
-- turn. No strike: an honest laptop that slept mid-unit looks the same.
--
--   login_taken  the last time a unit was taken off each login, and the
--                login's latest submission then
--
-- A login a unit was taken off holds one unit at a time until submit() has
-- accepted a submission of it after that (one the coordinator then rejects
-- is a strike): a holder of several units at once (more
-- than the quorum can spare; 0022 takes them off once late) is down to one
-- after the first time, which the quorum's grace covers. An honest laptop
-- that slept sends its next unit and has its cap back.

ALTER TABLE gannf.work_units ADD COLUMN taken_from name[] NOT NULL DEFAULT '{}';

CREATE TABLE gannf.login_taken (
  login name PRIMARY KEY,
  taken_at timestamptz NOT NULL,
  last_submission bigint NOT NULL   -- the login's latest submission id when it was taken off (0: none)
);

-- A unit was taken off each of p_logins just now (NULLs and an empty or
-- NULL array: nothing).
CREATE FUNCTION gannf.note_taken(p_logins name[]) RETURNS void
LANGUAGE sql
SET search_path = gannf, pg_temp
AS $$
  INSERT INTO gannf.login_taken AS t (login, taken_at, last_submission)
  SELECT l, gannf.now(),
         coalesce((SELECT max(s.id) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                    WHERE w.login = l), 0)
    FROM (SELECT DISTINCT l FROM unnest(coalesce(p_logins, '{}')) l WHERE l IS NOT NULL) x
  ON CONFLICT (login) DO UPDATE SET taken_at = EXCLUDED.taken_at, last_submission = EXCLUDED.last_submission
$$;

-- Whether p_login holds one unit at a time: a unit was taken off it and it
-- has had no submission accepted (pending or used) since.
CREATE FUNCTION gannf.held_to_one(p_login name) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT EXISTS (
    SELECT 1 FROM gannf.login_taken t
     WHERE t.login = p_login
       AND NOT EXISTS (SELECT 1 FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
                        WHERE w.login = p_login AND s.id > t.last_submission AND s.state IN ('pending', 'used')))
$$;

-- p_taken plus the login of worker p_worker, once (unchanged when the
-- worker is unknown).
CREATE FUNCTION gannf.plus_holder(p_taken name[], p_worker bigint) RETURNS name[]
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT CASE WHEN w.login IS NULL OR w.login = ANY (p_taken) THEN p_taken ELSE p_taken || w.login END
    FROM (SELECT (SELECT x.login FROM gannf.workers x WHERE x.id = p_worker) AS login) w
$$;

-- The logins unit u has been taken off, its present holder included when it
-- is claimed: a claimed unit offered to claim() is one whose lease passed.
CREATE FUNCTION gannf.taken_off_logins(u gannf.work_units) RETURNS name[]
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT CASE WHEN u.state = 'claimed' THEN gannf.plus_holder(u.taken_from, u.worker_id) ELSE u.taken_from END
$$;

-- Whether p_login may be given a unit taken off the logins p_taken: yes
-- unless it is one of them and a login that is not, and is not quarantined,
-- is present.
CREATE FUNCTION gannf.may_take_back(p_login name, p_taken name[]) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT NOT (p_login = ANY (p_taken))
      OR NOT EXISTS (SELECT 1 FROM gannf.present_workers p
                      WHERE NOT (p.login = ANY (p_taken))
                        AND NOT EXISTS (SELECT 1 FROM gannf.login_trust t
                                         WHERE t.login = p.login AND t.quarantined_at IS NOT NULL))
$$;

-- Takes those of units p_ids that are claimed off their holders: available
-- again at once, each holder's login in taken_from and login_taken. The
-- one way a unit is taken off (the hold bound, an update closed without it,
-- 0022's late units); returns how many.
CREATE FUNCTION gannf.take_off(p_ids bigint[]) RETURNS bigint
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_taken bigint;
  v_holders name[];
BEGIN
  WITH taken AS (
    UPDATE gannf.work_units u
       SET state = 'available', visible_at = gannf.now(), taken_from = gannf.taken_off_logins(u)
     WHERE u.id = ANY (p_ids) AND u.state = 'claimed'
    RETURNING u.worker_id  -- unchanged: the holder
  )
  SELECT count(*), array_agg(w.login) INTO v_taken, v_holders
    FROM taken t LEFT JOIN gannf.workers w ON w.id = t.worker_id;
  PERFORM gannf.note_taken(v_holders);
  RETURN v_taken;
END
$$;

-- The coordinator's, when update p_iteration closes: its units not done
-- (available, or claimed: an update closed at the quorum, taken off their
-- holders) are served again in the next update, against the new weights.
-- Returns how many. Their holders learn it from heartbeat (NULL) or submit
-- (iteration_closed).
CREATE FUNCTION gannf.carry_over(p_iteration bigint) RETURNS bigint
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_moved bigint;
BEGIN
  PERFORM gannf.take_off(ARRAY(SELECT u.id FROM gannf.work_units u
                                WHERE u.iteration = p_iteration AND u.state = 'claimed'));
  UPDATE gannf.work_units
     SET iteration = p_iteration + 1, state = 'available', visible_at = '-infinity'
   WHERE iteration = p_iteration AND state IN ('available', 'claimed');
  GET DIAGNOSTICS v_moved = ROW_COUNT;
  RETURN v_moved;
END
$$;

-- As 0008, plus: a unit handed back at the hold bound is taken off its
-- holder's login (taken_from, login_taken).
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
  IF v_now > u.claimed_at + gannf.hold_bound(p_worker, u.sample_count) THEN
    PERFORM gannf.take_off(ARRAY[p_unit]);
    RETURN NULL;
  END IF;
  UPDATE gannf.work_units SET visible_at = v_now + v_lease WHERE id = p_unit
  RETURNING visible_at INTO v_until;
  RETURN v_until;
END
$$;

-- As 0020, plus: no unit for a login it was taken off while another login
-- may have it (may_take_back); a lapsed lease taken over is taken off its
-- holder's login; a login held_to_one() holds one unit at a time. The units
-- are chosen (and locked) first, then claimed.
CREATE OR REPLACE FUNCTION gannf.claim(p_worker bigint, p_max_units integer DEFAULT 1)
RETURNS TABLE (unit_id bigint, attempt integer, iteration bigint, epoch integer,
               first_index bigint, sample_count integer, lease_until timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  ts gannf.training_state := gannf.current_run();
  cfg gannf.trust_settings;
  v_held integer;
  v_this_iteration integer;
  v_room integer;
  v_ids bigint[];
  v_lapsed name[];
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  IF p_max_units IS NULL OR p_max_units < 1 OR p_max_units > 64 THEN
    RAISE EXCEPTION 'max_units must be between 1 and 64, not %', p_max_units
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM gannf.check_not_quarantined(session_user);
  PERFORM gannf.check_backend_accepted((SELECT w.backend FROM gannf.workers w WHERE w.id = p_worker));
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  IF ts.status <> 'running' THEN
    RETURN;
  END IF;
  -- One login's claims one at a time, so that its counts stay exact.
  PERFORM pg_advisory_xact_lock(hashtext('gannf.claim'), hashtext(session_user::text));
  SELECT * INTO cfg FROM gannf.trust_settings;
  SELECT count(*) FILTER (WHERE c.state = 'claimed' AND c.visible_at > v_now),
         count(*) FILTER (WHERE c.iteration = ts.iteration AND c.claimed_at IS NOT NULL
                            AND (c.state IN ('submitted', 'done') OR (c.state = 'claimed' AND c.visible_at > v_now)))
    INTO v_held, v_this_iteration
    FROM gannf.work_units c JOIN gannf.workers w ON w.id = c.worker_id
   WHERE w.login = session_user AND c.state IN ('claimed', 'submitted', 'done')
     AND (c.state = 'claimed' OR c.iteration = ts.iteration);
  v_room := least(p_max_units, cfg.max_held_units - v_held,
                  coalesce(cfg.max_units_per_iteration - v_this_iteration, p_max_units));
  IF v_room > 1 - v_held AND gannf.held_to_one(session_user) THEN
    v_room := 1 - v_held;
  END IF;
  IF v_room < 1 THEN
    RETURN;
  END IF;
  SELECT array_agg(c.id ORDER BY c.id), array_agg(w.login) FILTER (WHERE c.state = 'claimed')
    INTO v_ids, v_lapsed
    FROM (SELECT c.id, c.state, c.worker_id
            FROM gannf.work_units c
           WHERE c.state IN ('available', 'claimed')
             AND c.iteration = ts.iteration
             AND c.visible_at <= v_now
             AND ((c.state = 'available' AND NOT (session_user = ANY (c.taken_from)))  -- the usual case, without a call
                  OR gannf.may_take_back(session_user, gannf.taken_off_logins(c)))
           ORDER BY c.id
           LIMIT v_room
             FOR UPDATE SKIP LOCKED) c
    LEFT JOIN gannf.workers w ON w.id = c.worker_id;
  IF v_ids IS NULL THEN
    RETURN;
  END IF;
  PERFORM gannf.note_taken(v_lapsed);  -- lapsed leases taken over: taken off their holders
  RETURN QUERY
  WITH claimed AS (
    UPDATE gannf.work_units u
       SET state = 'claimed', worker_id = p_worker, attempt = u.attempt + 1,
           claimed_at = v_now, visible_at = v_now + ts.lease, taken_from = gannf.taken_off_logins(u)
     WHERE u.id = ANY (v_ids)
    RETURNING u.id, u.attempt, u.iteration, u.epoch, u.first_index, u.sample_count, u.visible_at)
  SELECT * FROM claimed c ORDER BY c.id;  -- lowest id first, as 0020 answered (summed submissions list units ascending)
END
$$;
