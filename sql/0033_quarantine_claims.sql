-- 0033: a worker the login registers while it is being quarantined gets
-- no unit.
--
-- strike() locks the login's worker rows before it quarantines (0029): a
-- claim in flight on one of them commits first, and drop_login_work() sees
-- and hands back what it claimed; a claim after waits for the row and then
-- sees the quarantine. A worker the login registered after that lock has a
-- row strike() never locked: its claim() read "not quarantined" (the
-- quarantine not committed yet) and committed after drop_login_work() had
-- read the login's units. A quarantined login held a unit until its lease
-- lapsed, and its gannf-worker computed it for nothing. Found by
-- Trust.ConcurrentCallsOfOneLoginLeaveTheRunWhole (test_trust_db.cpp, seed
-- 1009: "a quarantined login holds a unit", early in the run, while the
-- login could still register workers); Trust.AWorkerRegisteredDuringAQuarantineGetsNoUnit
-- makes it at will (the claim was granted before).
--
-- claim() takes the login's own lock -- one login's claims one at a time
-- (0008: pg_advisory_xact_lock on 'gannf.claim' and the login) -- and then
-- checks the quarantine again. strike() now takes that lock too, after the
-- worker rows and before it quarantines: a claim of any worker of the
-- login either committed before (drop_login_work() hands it back) or waits
-- for the strike's commit and is refused (ZG001). Waited for at most 2 s
-- as the rows are: a claim left in a transaction a session keeps open
-- holds it (the reaper ends that session; its unit is late or lapses).
--
-- Body: 0029's strike(), with the lock added.

CREATE OR REPLACE FUNCTION gannf.strike(p_login name, p_reason text, p_weight integer, p_forgivable boolean) RETURNS boolean
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_threshold integer := (SELECT t.strike_threshold FROM gannf.trust_settings t);
  r gannf.login_trust;
  v_lock_timeout text;
BEGIN
  IF p_login IS NULL OR p_weight IS NULL OR p_weight < 1 OR p_forgivable IS NULL THEN
    RAISE EXCEPTION 'strike(%, %, %, %): a login, a weight of at least 1 and whether it may be forgiven',
      p_login, p_reason, p_weight, p_forgivable
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO gannf.login_trust AS t (login, strikes, reason, forgivable)
  VALUES (p_login, p_weight, p_reason, CASE WHEN p_forgivable THEN p_weight ELSE 0 END)
  ON CONFLICT (login) DO UPDATE
    SET strikes = t.strikes + EXCLUDED.strikes, reason = EXCLUDED.reason,
        forgivable = least(t.forgivable, t.strikes) + EXCLUDED.forgivable, used_since = 0
  RETURNING * INTO r;
  IF r.quarantined_at IS NOT NULL THEN
    RETURN true;
  END IF;
  IF r.strikes < coalesce(v_threshold, 5) THEN
    RETURN false;
  END IF;
  -- The login's worker rows, which every worker function locks before it
  -- checks the quarantine again and touches a unit (sql/0029), then the
  -- login's claim lock, which claim() takes before it checks again
  -- (workers registered since hold no row locked here): the calls in
  -- flight commit first, and drop_login_work() below sees what they
  -- claimed or submitted; the calls after see the quarantine. A session of
  -- the login that keeps a transaction open holding either is not waited
  -- for past 2 s (the reaper ends it; the coordinator's close refuses what
  -- slips past).
  v_lock_timeout := current_setting('lock_timeout');
  PERFORM set_config('lock_timeout', '2s', true);
  BEGIN
    PERFORM 1 FROM gannf.workers w WHERE w.login = p_login ORDER BY w.id FOR UPDATE;
  EXCEPTION WHEN lock_not_available THEN
    NULL;
  END;
  BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gannf.claim'), hashtext(p_login::text));
  EXCEPTION WHEN lock_not_available THEN
    NULL;
  END;
  PERFORM set_config('lock_timeout', v_lock_timeout, true);
  UPDATE gannf.login_trust SET quarantined_at = gannf.now() WHERE login = p_login;
  PERFORM gannf.drop_login_work(p_login, 'quarantined');
  PERFORM pg_notify('gannf_monitor', 'login_trust');
  RETURN true;
END
$$;
