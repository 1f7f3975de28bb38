-- 0030: the coordinator's rejection of a submission takes the lock order
-- of the worker functions (sql/0029): the login's worker rows before its
-- units. gannf-coord rejected a submission that failed its checks on
-- arrival in one transaction: the unit served again, the submission
-- marked, then strike(), which locks the login's worker rows FOR UPDATE
-- when it quarantines. A submit() of the same login for that unit -- a
-- stale retry, or any unit id a student names -- holds its worker's row
-- FOR KEY SHARE and waits for the unit: each waited for the other until
-- PostgreSQL ended the submit with 40P01, an error no worker function
-- documents. Found by Trust.AStudentCallingAnythingInAnyOrderBesideARealClassLeavesTheRunWhole
-- (test_trust_runs.cpp: the worker-login fuzzer beside a real gannf-coord;
-- 2 of 12 seeds on a loaded machine before). Now gannf-coord's rejection
-- on arrival calls lock_login_workers() first, as strike() does before it
-- quarantines: a submission in flight commits first, and one that comes
-- after waits for the rejection. Not in the close: no submit() is in
-- flight there (the state row), and a first form that locked there too
-- deadlocked with the login's claims and releases (which hold their
-- worker's row and wait for a row the close has written; found by the same
-- fuzzer with transactions kept across calls). A session that keeps a
-- transaction open holding its worker's row is not waited for past 2 s
-- (the reaper ends it; the close refuses what slips past).
CREATE FUNCTION gannf.lock_login_workers(p_login name) RETURNS void
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_lock_timeout text := current_setting('lock_timeout');
BEGIN
  PERFORM set_config('lock_timeout', '2s', true);
  BEGIN
    PERFORM 1 FROM gannf.workers w WHERE w.login = p_login ORDER BY w.id FOR UPDATE;
  EXCEPTION WHEN lock_not_available THEN
    NULL;
  END;
  PERFORM set_config('lock_timeout', v_lock_timeout, true);
END
$$;
-- The coordinator's, as strike(): no worker login may call it (0004's
-- default privileges already keep it from PUBLIC; said here for the reader).
REVOKE ALL ON FUNCTION gannf.lock_login_workers(name) FROM PUBLIC;
