-- 0032: every statement that locks several units locks them in id order.
--
-- claim() (FOR UPDATE SKIP LOCKED, ORDER BY id), submit_summed() (its
-- units strictly ascending, one at a time) and take_off_late_logins()
-- (ORDER BY id, SKIP LOCKED) did. release_held(), drop_login_work(),
-- take_off() and carry_over() updated their units in the order their scan
-- met the rows, which follows where each row's last version lies in the
-- table, not its id: a unit handed back and claimed again lies after the
-- units claimed since. One statement holding unit b and waiting for unit
-- a, and another holding a and waiting for b, waited for each other until
-- PostgreSQL ended one with 40P01 after deadlock_timeout (1 s) -- an error
-- no worker function documents, and the coordinator's call when it was
-- the one ended. Found by Trust.ConcurrentCallsOfTwoLoginsLeaveTheRunWhole
-- (test_trust_db.cpp), once on CI: release_held() ended with 40P01;
-- Trust.EveryFunctionLocksSeveralRowsInOneOrder now makes each case at
-- will (it failed for release_held() and drop_login_work() before).
--
-- lock_units(ids) locks the units named (FOR NO KEY UPDATE, what an UPDATE
-- of a unit takes: a submission's foreign key check, FOR KEY SHARE, still
-- passes) in id order and answers their ids; each function then updates
-- only those. Which units a function takes is decided as before, from the
-- statement's snapshot; a unit that changed meanwhile is rechecked by the
-- UPDATE's own conditions, as before.
--
-- note_taken() writes its logins' rows of login_taken in login order too:
-- a claim that takes lapsed units off several logins, and the
-- coordinator's take_off_late() beside it, each wrote theirs in the order
-- their GROUP BY met them.
--
-- Bodies: release_held() is 0005's, drop_login_work() 0008's, take_off()
-- and carry_over() 0023's, note_taken() 0023's, each with the lock added
-- (or the ORDER BY) and nothing else changed.

CREATE FUNCTION gannf.lock_units(p_ids bigint[]) RETURNS bigint[]
LANGUAGE sql
SET search_path = gannf, pg_temp
AS $$
  -- The locking clause sits above the sort: rows are locked in id order.
  SELECT coalesce(array_agg(l.id ORDER BY l.id), '{}')
    FROM (SELECT u.id FROM gannf.work_units u
           WHERE u.id = ANY (p_ids)
           ORDER BY u.id
             FOR NO KEY UPDATE) l
$$;
-- The coordinator's and the SECURITY DEFINER functions': no worker login
-- may call it (0004's default privileges keep it from PUBLIC already).
REVOKE ALL ON FUNCTION gannf.lock_units(bigint[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION gannf.release_held(p_worker bigint)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_ids bigint[];
  v_n integer;
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  v_ids := gannf.lock_units(ARRAY(SELECT c.id FROM gannf.work_units c
                                   WHERE c.worker_id = p_worker AND c.state = 'claimed'));
  UPDATE gannf.work_units u
     SET state = 'available', visible_at = v_now
   WHERE u.id = ANY (v_ids) AND u.worker_id = p_worker AND u.state = 'claimed';
  GET DIAGNOSTICS v_n = ROW_COUNT;
  RETURN v_n;
END
$$;

CREATE OR REPLACE FUNCTION gannf.drop_login_work(p_login name, p_reason text) RETURNS void
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_ids bigint[];
BEGIN
  v_ids := gannf.lock_units(ARRAY(
    SELECT u.id FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id
     WHERE w.login = p_login AND u.state = 'claimed'
    UNION
    SELECT u.id FROM gannf.work_units u
      JOIN gannf.submissions s ON s.work_unit_id = u.id
      JOIN gannf.workers w ON w.id = s.worker_id
     WHERE w.login = p_login AND s.state = 'pending' AND u.state = 'submitted'));
  UPDATE gannf.work_units u SET state = 'available', visible_at = v_now
    FROM gannf.workers w
   WHERE u.id = ANY (v_ids) AND w.id = u.worker_id AND w.login = p_login AND u.state = 'claimed';
  UPDATE gannf.work_units u SET state = 'available', visible_at = v_now
    FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
   WHERE u.id = ANY (v_ids) AND s.work_unit_id = u.id AND w.login = p_login AND s.state = 'pending'
     AND u.state = 'submitted';
  UPDATE gannf.submissions s SET state = 'rejected', reject_reason = p_reason
    FROM gannf.workers w
   WHERE w.id = s.worker_id AND w.login = p_login AND s.state = 'pending';
END
$$;

CREATE OR REPLACE FUNCTION gannf.take_off(p_ids bigint[], p_why text, p_bounds interval[] DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_taken bigint;
  v_holders name[];
  v_bounds interval[];
BEGIN
  PERFORM gannf.lock_units(p_ids);
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

-- The update's open units (available and claimed) locked first, all in id
-- order: take_off() then finds the claimed ones locked.
CREATE OR REPLACE FUNCTION gannf.carry_over(p_iteration bigint) RETURNS bigint
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_ids bigint[];
  v_moved bigint;
BEGIN
  v_ids := gannf.lock_units(ARRAY(SELECT u.id FROM gannf.work_units u
                                   WHERE u.iteration = p_iteration AND u.state IN ('available', 'claimed')));
  PERFORM gannf.take_off(ARRAY(SELECT u.id FROM gannf.work_units u
                                WHERE u.id = ANY (v_ids) AND u.iteration = p_iteration AND u.state = 'claimed'),
                         'closed');
  UPDATE gannf.work_units
     SET iteration = p_iteration + 1, state = 'available', visible_at = '-infinity'
   WHERE id = ANY (v_ids) AND iteration = p_iteration AND state IN ('available', 'claimed');
  GET DIAGNOSTICS v_moved = ROW_COUNT;
  RETURN v_moved;
END
$$;

CREATE OR REPLACE FUNCTION gannf.note_taken(p_logins name[], p_why text DEFAULT 'lease', p_bounds interval[] DEFAULT NULL)
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
   ORDER BY x.l
  ON CONFLICT (login) DO UPDATE
    SET taken_at = EXCLUDED.taken_at, last_submission = EXCLUDED.last_submission,
        units = t.units + EXCLUDED.units, why = EXCLUDED.why, bound = EXCLUDED.bound
$$;
