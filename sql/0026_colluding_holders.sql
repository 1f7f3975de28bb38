-- 0026: logins that hold every unit of an update between them no longer
-- freeze it (docs/security.md, "Stragglers: the quorum").
--
-- 0023 judged a unit by the last update's pace, before a unit of this one
-- is in, only where its login held several of the update's units. As many
-- logins as an update has units (4 by default), each claiming one the
-- moment the update was made and never submitting, held it for the hold
-- bound: 2 minutes, 17 for logins that never submitted. And once those
-- units were taken off, the same logins could claim them back from one
-- another (a unit goes back only to the logins it was not taken off).
--
-- 1. While no unit of the update is in and none is left to claim, a unit
--    that was never taken off anyone (taken_from empty: as the update made
--    it) is judged by the last update's pace whoever holds it. Once per
--    unit: a unit taken off someone is judged again only once a unit of
--    the update is in. So a class whose machines cannot keep the last
--    update's pace (the GPUs gone home) loses one round of those units, not
--    every round, and the update's own pace takes over as before.
-- 2. A login a unit was taken off, until a submission of it is accepted
--    (held_to_one(), 0021) and for at most `held_give_way_for` (5 minutes)
--    after the last take-off, waits `held_claim_delay` (2 s) before it may
--    claim a unit that became claimable -- made by an update, taken off
--    someone, or its lease passed -- while a login that does not wait, and
--    is not quarantined, has a worker present. Those workers are woken by
--    the same NOTIFY and claim within a second; the waiting logins get what
--    is left. A class of waiting logins alone claims at once. So colluders,
--    taken off once, are served after the class for 5 minutes, at every
--    update, unless they submit work that is accepted; an honest laptop
--    that was late waits 2 s a unit meanwhile -- and, where the class's
--    other machines are idle and take every unit within 2 s, gets none for
--    those 5 minutes (the class has no need of it then; the window keeps
--    that from lasting the class).
--
-- work_units.open_since: when an available unit became available (its
-- insert, a take-off, a rejection, a carry-over to the next update; a
-- trigger, so every path sets it); NULL for units made before 0026.
-- claim() is 0021's with point 2, take_off_late_logins() 0023's with
-- point 1.

ALTER TABLE gannf.trust_settings
  ADD COLUMN held_claim_delay interval NOT NULL DEFAULT '2 seconds',
  ADD COLUMN held_give_way_for interval NOT NULL DEFAULT '5 minutes',
  ADD CONSTRAINT trust_settings_held_claim_delay_nonnegative CHECK (held_claim_delay >= '0' AND held_give_way_for >= '0');

ALTER TABLE gannf.work_units ADD COLUMN open_since timestamptz;
ALTER TABLE gannf.work_units ALTER COLUMN open_since SET DEFAULT gannf.now();

CREATE FUNCTION gannf.work_units_open_since() RETURNS trigger
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
BEGIN
  NEW.open_since := gannf.now();
  RETURN NEW;
END
$$;

CREATE TRIGGER work_units_open_since
  BEFORE UPDATE ON gannf.work_units
  FOR EACH ROW
  WHEN (NEW.state = 'available' AND (OLD.state <> 'available' OR OLD.iteration <> NEW.iteration))
  EXECUTE FUNCTION gannf.work_units_open_since();

-- Since when unit u may be claimed: an available unit since it became
-- available (or its visible_at, if later); a claimed one once its lease
-- passed.
CREATE FUNCTION gannf.claimable_since(u gannf.work_units) RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT CASE WHEN u.state = 'available' THEN greatest(coalesce(u.open_since, '-infinity'), u.visible_at)
              ELSE u.visible_at END
$$;

-- Whether login p_login waits (point 2 above): it is held to one unit, and
-- a unit was taken off it within held_give_way_for.
CREATE FUNCTION gannf.waits(p_login name) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM gannf.login_taken k CROSS JOIN gannf.trust_settings s
                  WHERE k.login = p_login AND k.taken_at >= gannf.now() - s.held_give_way_for)
     AND gannf.held_to_one(p_login)
$$;

-- Whether login p_login gives way now: it waits, and a worker of a login
-- that does not, and is not quarantined, is present.
CREATE FUNCTION gannf.gives_way(p_login name) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT gannf.waits(p_login)
     AND EXISTS (SELECT 1 FROM (SELECT DISTINCT p.login FROM gannf.present_workers p WHERE p.login <> p_login) o
                  WHERE NOT EXISTS (SELECT 1 FROM gannf.login_trust t
                                     WHERE t.login = o.login AND t.quarantined_at IS NOT NULL)
                    AND NOT gannf.waits(o.login))
$$;

-- As 0021, plus: a login that gives_way() is offered only units claimable
-- for held_claim_delay already.
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
  v_open_before timestamptz := 'infinity';
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
  IF gannf.gives_way(session_user) THEN
    v_open_before := v_now - cfg.held_claim_delay;
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
             AND (v_open_before = 'infinity' OR gannf.claimable_since(c) <= v_open_before)
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

-- As 0023, plus point 1 above: before a unit of the update is in, and while
-- none is left to claim, a unit never taken off anyone is judged by the
-- last update's pace whoever holds it.
CREATE OR REPLACE FUNCTION gannf.take_off_late_logins(p_iteration bigint)
RETURNS TABLE (login text, units bigint, bound_seconds float8)
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_own boolean := EXISTS (SELECT 1 FROM gannf.work_units k
                            WHERE k.iteration = p_iteration AND k.state IN ('submitted', 'done'));
  -- Asked only while nothing of the update is in (its one use).
  v_all_held boolean := NOT v_own AND NOT EXISTS (SELECT 1 FROM gannf.work_units k
                                                   WHERE k.iteration = p_iteration
                                                     AND (k.state = 'available'
                                                          OR (k.state = 'claimed' AND k.visible_at <= gannf.now())));
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
             AND (v_own
                  OR (v_all_held AND cardinality(u.taken_from) = 0)
                  OR (SELECT count(*) FROM gannf.work_units x JOIN gannf.workers h ON h.id = x.worker_id
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
