-- 0024: strikes an honest machine can earn are forgiven by its work
-- (docs/security.md, "Quarantine").
--
-- Strikes never decayed. The norm check is statistical: where the
-- coordinator cannot recompute a flagged submission (spot checks off, or
-- the data not at hand) an honest one is rejected and struck, and scattered
-- rejections over a two-hour class added up to the threshold and
-- quarantined an honest login. Other rejections an honest machine can earn
-- the same way: a faulty GPU's NaN, a BN statistic past its bound.
--
-- A strike is now `forgivable` when it came from the coordinator's
-- rejection of a submission whose numbers nobody recomputed (strike(login,
-- reason, weight, true)); every `strike_forgiven_after` (10) submissions
-- of the login used since its last strike or forgiveness take one such
-- strike back (forgive(), the coordinator's, in the transaction that marks
-- them used). A login rejected more often than once in ten used
-- submissions, sustained, still reaches the threshold; one that is only
-- ever rejected is never forgiven. The harm a forgiven strike lets through
-- is nil: the rejected submission was not used, and a hostile login
-- interleaving honest work with rejected uploads costs the coordinator one
-- validation per ten units it computes for the class.
--
-- Never forgiven: a failed recomputation (a spot check, or the second
-- opinion on a norm-flagged submission: the coordinator passes its whole
-- threshold, quarantining at once), the reaper's strikes (a session holding
-- a transaction freezes the class: no machine does that by accident) and
-- submit()'s refusals (SQLSTATE 22023: no correct worker meets them).
-- strike(login, reason, weight) is 0008's call and strikes unforgivably.
--
-- login_status (0008's view, what gannf-coord quarantine list and status
-- read) gains `forgivable` and `forgiven`.

ALTER TABLE gannf.trust_settings
  ADD COLUMN strike_forgiven_after integer DEFAULT 10,  -- used submissions that forgive one strike; NULL: never
  ADD CONSTRAINT trust_settings_forgiven_after_positive CHECK (coalesce(strike_forgiven_after, 1) >= 1);

ALTER TABLE gannf.login_trust
  ADD COLUMN forgivable integer NOT NULL DEFAULT 0,  -- of its strikes, those forgive() may take back (at most `strikes`)
  ADD COLUMN used_since integer NOT NULL DEFAULT 0,  -- its submissions used since its last strike or forgiveness
  ADD COLUMN forgiven bigint NOT NULL DEFAULT 0,     -- strikes taken back, all told
  ADD CONSTRAINT login_trust_forgiveness_nonnegative CHECK (forgivable >= 0 AND used_since >= 0 AND forgiven >= 0);

-- 0008's strike(), with p_forgivable: whether the strike may be forgiven.
-- A strike of either kind starts the count of used submissions again.
-- lift_quarantine() sets strikes to 0 and leaves `forgivable`: it counts
-- as least(forgivable, strikes) everywhere.
CREATE FUNCTION gannf.strike(p_login name, p_reason text, p_weight integer, p_forgivable boolean) RETURNS boolean
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_threshold integer := (SELECT t.strike_threshold FROM gannf.trust_settings t);
  r gannf.login_trust;
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
  UPDATE gannf.login_trust SET quarantined_at = gannf.now() WHERE login = p_login;
  PERFORM gannf.drop_login_work(p_login, 'quarantined');
  PERFORM pg_notify('gannf_monitor', 'login_trust');
  RETURN true;
END
$$;

-- 0008's call (the reaper's, strike_refusals()'s): a strike never forgiven.
CREATE OR REPLACE FUNCTION gannf.strike(p_login name, p_reason text, p_weight integer DEFAULT 1) RETURNS boolean
LANGUAGE sql
SET search_path = gannf, pg_temp
AS $$
  SELECT gannf.strike(p_login, p_reason, p_weight, false)
$$;

-- The coordinator's, in the transaction that marks submissions p_used
-- 'used' (a summed submission's members each count): credits each login
-- that is not quarantined and has a forgivable strike, and takes back one
-- strike per strike_forgiven_after of its used submissions. Returns the
-- logins with a strike taken back: how many now, the strikes left.
CREATE FUNCTION gannf.forgive(p_used bigint[])
RETURNS TABLE (login text, forgiven integer, strikes integer)
LANGUAGE sql
SET search_path = gannf, pg_temp
AS $$
  WITH used AS (
    SELECT w.login, count(*)::integer AS n
      FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
     WHERE s.id = ANY (p_used) AND s.state = 'used'
     GROUP BY w.login
  ), due AS (
    SELECT t.login, u.n + t.used_since AS total, least(t.forgivable, t.strikes) AS open,
           least((u.n + t.used_since) / s.strike_forgiven_after, least(t.forgivable, t.strikes)) AS k,
           s.strike_forgiven_after AS per
      FROM gannf.login_trust t
      JOIN used u ON u.login = t.login
      CROSS JOIN gannf.trust_settings s
     WHERE s.strike_forgiven_after IS NOT NULL AND t.quarantined_at IS NULL AND least(t.forgivable, t.strikes) > 0
       FOR NO KEY UPDATE OF t
  ), done AS (
    UPDATE gannf.login_trust t
       SET strikes = t.strikes - d.k, forgivable = d.open - d.k, forgiven = t.forgiven + d.k,
           used_since = CASE WHEN d.open > d.k THEN d.total - d.k * d.per ELSE 0 END
      FROM due d
     WHERE t.login = d.login
    RETURNING t.login::text, d.k, t.strikes
  )
  SELECT * FROM done WHERE k > 0
$$;

-- 0008's view, plus the strikes forgive() may take back and those it took.
CREATE OR REPLACE VIEW gannf.login_status AS
SELECT t.login::text AS login, t.strikes, t.quarantined_at IS NOT NULL AS quarantined, t.quarantined_at,
       t.reason, t.lifted_at, least(t.forgivable, t.strikes) AS forgivable, t.forgiven
  FROM gannf.login_trust t;
