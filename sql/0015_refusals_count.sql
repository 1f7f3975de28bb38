-- 0015: refusals count (issue 12). Every refusal of submit() raises (sql/0008),
-- so that a refused call left in an open transaction holds nothing; but the
-- raise also rolled back anything submit() could record, so a login whose
-- submissions the database refused (forged losses, wrong sizes, a micro-batch
-- larger than the unit: SQLSTATE 22023, which no correct worker meets) was
-- refused forever without a strike. Now:
--
-- gannf.refusal_counters  one row per login that registered a worker: a
--   sequence of its own, which submit()'s refusals advance, and `counted`,
--   how many of them the coordinator has turned into strikes. A sequence is
--   the one thing PostgreSQL does not roll back, so the count survives the
--   raise, the client's ROLLBACK and a transaction left open; setval() and
--   the abort that follows hold no lock past the call.
-- gannf.count_refusal(login)  advances the login's counter with setval() of
--   the last value + 1 rather than nextval(): nextval() WAL-logs 32 values
--   ahead, which a server crash would turn into 32 refusals never made;
--   setval() logs the exact value. Two refusals of one login in the same
--   instant may count once (a read then a set): an undercount, never more.
-- gannf.strike_refusals()  the coordinator's, every 2 s (coordinator.cpp,
--   reap()): one strike per new refusal, as for a rejection, so that
--   trust_settings.strike_threshold refusals quarantine the login.
-- gannf.submit()  0014's body, with one EXCEPTION clause at its end: on
--   invalid_parameter_value it counts the refusal and re-raises the same
--   error. Other refusals do not count: ZG002-ZG004 (closed iteration, lost
--   lease, a retry after a lost reply) happen to honest workers, ZG001 is
--   the quarantine itself, 42501 is checked before anything else.

CREATE TABLE gannf.refusal_counters (
  login name PRIMARY KEY,
  seq regclass NOT NULL,              -- advanced by count_refusal(); never rolled back
  counted bigint NOT NULL DEFAULT 0   -- refusals already struck
);

-- The login's counter, made on its first registered worker (a trigger on
-- gannf.workers: register_worker's body stays 0008's). The sequence is owned
-- by the schema's owner, as submit() (SECURITY DEFINER) runs.
CREATE FUNCTION gannf.ensure_refusal_counter(p_login name) RETURNS void
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_seq text := 'refusals_' || md5(p_login::text);   -- any login fits 63 bytes this way
BEGIN
  IF EXISTS (SELECT 1 FROM gannf.refusal_counters c WHERE c.login = p_login) THEN
    RETURN;
  END IF;
  EXECUTE format('CREATE SEQUENCE IF NOT EXISTS gannf.%I', v_seq);
  INSERT INTO gannf.refusal_counters (login, seq) VALUES (p_login, format('gannf.%I', v_seq)::regclass)
  ON CONFLICT (login) DO NOTHING;
END
$$;

CREATE FUNCTION gannf.workers_refusal_counter() RETURNS trigger
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
BEGIN
  PERFORM gannf.ensure_refusal_counter(NEW.login);
  RETURN NULL;
END
$$;

CREATE TRIGGER workers_refusal_counter AFTER INSERT ON gannf.workers
  FOR EACH ROW EXECUTE FUNCTION gannf.workers_refusal_counter();

SELECT gannf.ensure_refusal_counter(w.login) FROM (SELECT DISTINCT login FROM gannf.workers) w;

CREATE FUNCTION gannf.count_refusal(p_login name) RETURNS void
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_seq regclass := (SELECT c.seq FROM gannf.refusal_counters c WHERE c.login = p_login);
BEGIN
  IF v_seq IS NOT NULL THEN
    PERFORM setval(v_seq, coalesce(pg_sequence_last_value(v_seq), 0) + 1);
  END IF;
END
$$;

-- Strikes for the refusals since the last call: one each (a weight of at
-- most the threshold, which is enough). Returns the logins struck.
CREATE FUNCTION gannf.strike_refusals()
RETURNS TABLE (login name, refusals bigint, quarantined boolean)
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  r record;
  v_last bigint;
  v_threshold integer := coalesce((SELECT t.strike_threshold FROM gannf.trust_settings t), 5);
BEGIN
  FOR r IN SELECT c.login, c.seq, c.counted FROM gannf.refusal_counters c ORDER BY c.login FOR UPDATE LOOP
    v_last := coalesce(pg_sequence_last_value(r.seq), 0);
    CONTINUE WHEN v_last = r.counted;
    UPDATE gannf.refusal_counters c SET counted = v_last WHERE c.login = r.login;
    CONTINUE WHEN v_last < r.counted;   -- the sequence was reset by hand: start again from it
    login := r.login;
    refusals := v_last - r.counted;
    quarantined := gannf.strike(r.login,
                                format('%s submission(s) refused by the database (a call no correct worker makes, SQLSTATE 22023)',
                                       refusals),
                                least(refusals, v_threshold)::integer);
    RETURN NEXT;
  END LOOP;
END
$$;

-- As 0014, plus the EXCEPTION clause at the end (see above).
CREATE OR REPLACE FUNCTION gannf.submit(
  p_worker bigint, p_unit bigint, p_attempt integer, p_iteration bigint, p_sample_count integer,
  p_g_layout_hash bigint, p_g_elements bigint, p_g_grad bytea, p_g_checksum bigint,
  p_g_bn_count bigint, p_g_bn_stats bytea, p_g_bn_checksum bigint,
  p_d_layout_hash bigint, p_d_elements bigint, p_d_grad bytea, p_d_checksum bigint,
  p_d_bn_count bigint, p_d_bn_stats bytea, p_d_bn_checksum bigint,
  p_loss_d real DEFAULT NULL, p_loss_g real DEFAULT NULL,
  p_d_real real DEFAULT NULL, p_d_fake real DEFAULT NULL, p_d_accuracy real DEFAULT NULL,
  p_compute_seconds real DEFAULT NULL, p_micro_batch integer DEFAULT NULL)
RETURNS TABLE (status text, submission_id bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
SET plan_cache_mode = force_generic_plan
SET work_mem = '4MB'
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_current bigint;
  u gannf.work_units;
  v_live gannf.submissions;
  v_id bigint;
  v_checked integer := 0;
  wt record;
  v_format text;
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  PERFORM gannf.check_not_quarantined(session_user);

  -- Sizes first. No published weights of p_iteration: pruned (closed long
  -- ago) or never published. The gradients' bytes follow the run's format.
  SELECT coalesce(ts.config->'wire'->>'blob_format', 'f32') INTO v_format FROM gannf.training_state ts;
  FOR wt IN
    SELECT w.network, w.layout_hash, w.element_count, w.bn_count,
           CASE w.network WHEN 'G' THEN p_g_layout_hash ELSE p_d_layout_hash END AS got_hash,
           CASE w.network WHEN 'G' THEN p_g_elements ELSE p_d_elements END AS got_elements,
           CASE w.network WHEN 'G' THEN octet_length(p_g_grad) ELSE octet_length(p_d_grad) END AS grad_bytes,
           CASE w.network WHEN 'G' THEN p_g_bn_count ELSE p_d_bn_count END AS got_bn,
           CASE w.network WHEN 'G' THEN octet_length(p_g_bn_stats) ELSE octet_length(p_d_bn_stats) END AS bn_bytes
      FROM gannf.weights w
     WHERE w.iteration = p_iteration
  LOOP
    v_checked := v_checked + 1;
    IF wt.got_hash IS DISTINCT FROM wt.layout_hash
       OR wt.got_elements IS DISTINCT FROM wt.element_count
       OR NOT gannf.grad_bytes_fit(v_format, wt.grad_bytes, wt.element_count)
       OR wt.got_bn IS NULL
       OR wt.bn_bytes IS DISTINCT FROM 4 * wt.got_bn
       OR (wt.bn_count = 0 AND wt.got_bn <> 0)
       OR (wt.bn_count > 0 AND (wt.got_bn % wt.bn_count <> 0
                                OR wt.got_bn / wt.bn_count NOT BETWEEN 1 AND p_sample_count)) THEN
      RAISE EXCEPTION 'network % does not match the published weights of iteration %', wt.network, p_iteration
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('submitted: layout hash %s, %s elements in %s bytes, %s BN values in %s bytes; '
                              'published: %s, %s (gradients in %s), %s per forward pass',
                              wt.got_hash, wt.got_elements, wt.grad_bytes, wt.got_bn, wt.bn_bytes,
                              wt.layout_hash, wt.element_count, v_format, wt.bn_count),
              HINT = 'the worker runs a different architecture or configuration than the coordinator';
    END IF;
  END LOOP;
  IF v_checked <> 2 THEN
    SELECT ts.iteration INTO v_current FROM gannf.training_state ts;
    IF v_checked = 0 AND p_iteration < v_current THEN
      RAISE EXCEPTION 'iteration % is closed (current %)', p_iteration, v_current
        USING ERRCODE = 'ZG002', HINT = 'drop the unit; it is served again against the new weights';
    END IF;
    RAISE EXCEPTION 'iteration % has no published weights for both networks', p_iteration
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  PERFORM gannf.check_real('loss_d', p_loss_d, -1e4, 1e4);
  PERFORM gannf.check_real('loss_g', p_loss_g, -1e4, 1e4);
  PERFORM gannf.check_real('d_real', p_d_real, 0, 1);
  PERFORM gannf.check_real('d_fake', p_d_fake, 0, 1);
  PERFORM gannf.check_real('d_accuracy', p_d_accuracy, 0, 1);
  PERFORM gannf.check_real('compute_seconds', p_compute_seconds, 0, 86400);
  IF p_micro_batch IS NOT NULL AND p_micro_batch NOT BETWEEN 1 AND p_sample_count THEN
    RAISE EXCEPTION 'micro-batch of % images for a unit of %', p_micro_batch, p_sample_count
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'pass the micro-batch the unit was computed in: at most its sample count';
  END IF;

  -- Serialises with the coordinator closing the iteration (it locks this row
  -- FOR UPDATE first): a submit either commits before the close and is seen
  -- by it, or reads the new iteration after it and is refused. Held only by
  -- an accepted submit: every refusal below raises, which releases it.
  SELECT ts.iteration INTO v_current FROM gannf.training_state ts FOR SHARE;
  IF NOT FOUND THEN
    PERFORM gannf.current_run();   -- raises with the hint
  END IF;

  SELECT * INTO u FROM gannf.work_units WHERE id = p_unit FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no work unit %', p_unit USING ERRCODE = 'invalid_parameter_value';
  END IF;

  SELECT * INTO v_live FROM gannf.submissions s
   WHERE s.work_unit_id = p_unit AND s.state IN ('pending', 'used');
  IF FOUND THEN
    IF v_live.worker_id = p_worker AND v_live.attempt = p_attempt THEN
      RAISE EXCEPTION 'unit % attempt % is in already', p_unit, p_attempt
        USING ERRCODE = 'ZG004', DETAIL = format('submission %s', v_live.id),
              HINT = 'a retry after a lost reply: the first submission stands';
    END IF;
    RAISE EXCEPTION 'unit % is not held by worker % attempt % (another result came first)', p_unit, p_worker, p_attempt
      USING ERRCODE = 'ZG003', HINT = 'drop the unit';
  END IF;

  IF p_iteration > v_current THEN
    RAISE EXCEPTION 'iteration % is not published yet (current %)', p_iteration, v_current
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_iteration < v_current OR u.iteration <> p_iteration THEN
    RAISE EXCEPTION 'iteration % is closed (current %)', p_iteration, v_current
      USING ERRCODE = 'ZG002', HINT = 'drop the unit; it is served again against the new weights';
  END IF;

  IF u.state <> 'claimed' OR u.worker_id <> p_worker OR u.attempt <> p_attempt THEN
    RAISE EXCEPTION 'unit % is not held by worker % attempt %', p_unit, p_worker, p_attempt
      USING ERRCODE = 'ZG003', HINT = 'its lease passed or it was released: drop it';
  END IF;

  IF p_sample_count IS DISTINCT FROM u.sample_count THEN
    RAISE EXCEPTION 'sample count % does not match work unit % (% samples)',
      p_sample_count, p_unit, u.sample_count USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('synchronous_commit', 'off', true);

  INSERT INTO gannf.submissions (work_unit_id, iteration, attempt, worker_id, sample_count,
                                 micro_batch, loss_d, loss_g, d_real, d_fake, d_accuracy,
                                 compute_seconds, submitted_at)
  VALUES (p_unit, p_iteration, p_attempt, p_worker, p_sample_count, p_micro_batch,
          p_loss_d, p_loss_g, p_d_real, p_d_fake, p_d_accuracy, p_compute_seconds, v_now)
  RETURNING id INTO v_id;

  INSERT INTO gannf.submission_blobs (submission_id, network, layout_hash, element_count, grad,
                                      grad_checksum, bn_count, bn_stats, bn_checksum)
  VALUES (v_id, 'G', p_g_layout_hash, p_g_elements, p_g_grad, p_g_checksum,
          p_g_bn_count, p_g_bn_stats, p_g_bn_checksum),
         (v_id, 'D', p_d_layout_hash, p_d_elements, p_d_grad, p_d_checksum,
          p_d_bn_count, p_d_bn_stats, p_d_bn_checksum);

  UPDATE gannf.work_units SET state = 'submitted', submitted_at = v_now WHERE id = p_unit;
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  PERFORM pg_notify('gannf_submission', p_iteration::text);

  RETURN QUERY SELECT 'accepted'::text, v_id;
EXCEPTION WHEN invalid_parameter_value THEN
  -- 0015: a call no correct worker makes counts against the login, by a
  -- counter that the abort below (or the client's ROLLBACK) does not undo.
  PERFORM gannf.count_refusal(session_user);
  RAISE;
END
$$;
