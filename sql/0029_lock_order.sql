-- 0029: one lock order for every worker function. heartbeat(), release(),
-- release_held(), claim() and leave() lock the worker's row (last_seen)
-- before its units; submit() and submit_summed() locked the unit first and
-- the worker's row last. Two sessions working one worker id at once -- a
-- student's own, or two gannf-workers started under one name, where the new
-- one's release_held() hands back what the old one still uploads -- waited
-- for each other until PostgreSQL ended one with 40P01 after
-- deadlock_timeout (1 s), holding the unit and the state row FOR SHARE
-- meanwhile. Found by Trust.ConcurrentCallsOfOneLoginLeaveTheRunWhole
-- (test_trust_db.cpp: four sessions of one login calling at random; submit
-- against release_held, 2 of 16 runs). Now both take the state row FOR
-- SHARE, then the worker's row (FOR KEY SHARE, which the other functions'
-- updates of last_seen do not wait for: a gannf-worker's heartbeat or claim
-- on its loop's connection never waits for its upload), then the units: the
-- order of the close (the state row FOR UPDATE, then units, then
-- submissions) and of every other worker function. They no longer set the
-- worker's last_seen: that is an update of the row, which the same worker's
-- heartbeat and claim would wait for; those calls set it (a gannf-worker
-- claims after every unit and heartbeats while it computes).
-- 
-- The same order closes a race with the quarantine, found by the same test
-- (2 runs of 32; 5 of 20 when its sessions also kept transactions across
-- calls): claim() and submit() checked the quarantine first and
-- wrote later, so a claim or a submission in flight when strike()
-- quarantined the login committed after its drop_login_work() had run: a
-- quarantined login held a unit (until its lease lapsed) or had a pending
-- submission, which the close would use. strike() now locks the login's
-- worker rows FOR UPDATE before it quarantines (waiting at most 2 s for a session
-- that keeps a transaction open), and claim(), submit() and
-- submit_summed() check the quarantine again once they hold their
-- worker's row.
--
-- Bodies: submit() and submit_summed() are 0028's, claim() 0026's, strike()
-- 0024's, each with the statements above added or moved.

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
  -- 0028: every argument a unit and its blobs need, before anything uses one.
  IF p_unit IS NULL OR p_attempt IS NULL OR p_iteration IS NULL OR p_sample_count IS NULL THEN
    RAISE EXCEPTION 'submit() needs the unit, its attempt, its iteration and its sample count (one was NULL)'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM gannf.check_blob_arguments('G', p_g_layout_hash, p_g_elements, octet_length(p_g_grad), p_g_checksum,
                                     p_g_bn_count, octet_length(p_g_bn_stats), p_g_bn_checksum);
  PERFORM gannf.check_blob_arguments('D', p_d_layout_hash, p_d_elements, octet_length(p_d_grad), p_d_checksum,
                                     p_d_bn_count, octet_length(p_d_bn_stats), p_d_bn_checksum);

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

  -- The lock order of every worker function and the close: the state row,
  -- the worker's row, its units, their submissions (sql/0029). FOR KEY
  -- SHARE: strike() (FOR UPDATE) waits for this submission, and the same
  -- worker's heartbeat or claim on its other connection does not.
  PERFORM 1 FROM gannf.workers WHERE id = p_worker FOR KEY SHARE;
  PERFORM gannf.check_not_quarantined(session_user);  -- again, under the worker's row (strike())

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
  PERFORM pg_notify('gannf_submission', p_iteration::text);

  RETURN QUERY SELECT 'accepted'::text, v_id;
EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
  -- 0015: a call no correct worker makes counts against the login, by a
  -- counter that the abort below (or the client's ROLLBACK) does not undo.
  -- 0028: so does any other error of the values it sent (SQLSTATE classes
  -- 22 and 23: an overflow, a constraint of the tables), raised as 22023.
  PERFORM gannf.count_refusal(session_user);
  IF SQLSTATE = '22023' THEN
    RAISE;
  END IF;
  RAISE EXCEPTION '%() refused: %', 'submit', SQLERRM
    USING ERRCODE = 'invalid_parameter_value', DETAIL = format('SQLSTATE %s', SQLSTATE),
          HINT = 'a call no correct worker makes; it counts against the login';
END
$$;

CREATE OR REPLACE FUNCTION gannf.submit_summed(
  p_worker bigint, p_units bigint[], p_attempts integer[], p_iteration bigint, p_sample_counts integer[],
  p_g_layout_hash bigint, p_g_elements bigint, p_g_grad bytea, p_g_checksum bigint,
  p_g_bn_count bigint, p_g_bn_stats bytea, p_g_bn_checksum bigint,
  p_d_layout_hash bigint, p_d_elements bigint, p_d_grad bytea, p_d_checksum bigint,
  p_d_bn_count bigint, p_d_bn_stats bytea, p_d_bn_checksum bigint,
  p_losses real[] DEFAULT NULL,   -- 5 per unit, in unit order: loss_d, loss_g, d_real, d_fake, d_accuracy
  p_compute_seconds real DEFAULT NULL, p_micro_batch integer DEFAULT NULL)
RETURNS TABLE (status text, submission_id bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
SET plan_cache_mode = force_generic_plan
SET work_mem = '4MB'
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_n integer := coalesce(cardinality(p_units), 0);
  v_total bigint;
  v_current bigint;
  v_format text;
  v_checked integer := 0;
  v_leader bigint;
  v_id bigint;
  u gannf.work_units;
  v_live gannf.submissions;
  wt record;
  i integer;
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  PERFORM gannf.check_not_quarantined(session_user);
  -- 0028: every argument a unit and its blobs need, before anything uses one.
  IF p_iteration IS NULL THEN
    RAISE EXCEPTION 'submit_summed() needs the units'' iteration (it was NULL)' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM gannf.check_blob_arguments('G', p_g_layout_hash, p_g_elements, octet_length(p_g_grad), p_g_checksum,
                                     p_g_bn_count, octet_length(p_g_bn_stats), p_g_bn_checksum);
  PERFORM gannf.check_blob_arguments('D', p_d_layout_hash, p_d_elements, octet_length(p_d_grad), p_d_checksum,
                                     p_d_bn_count, octet_length(p_d_bn_stats), p_d_bn_checksum);

  -- The list: its shape before anything else.
  IF v_n NOT BETWEEN 2 AND 64 OR array_ndims(p_units) <> 1
     OR coalesce(cardinality(p_attempts), -1) <> v_n OR coalesce(cardinality(p_sample_counts), -1) <> v_n
     OR array_position(p_units, NULL) IS NOT NULL OR array_position(p_attempts, NULL) IS NOT NULL
     OR array_position(p_sample_counts, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'a summed submission names 2 to 64 units, each with its attempt and sample count'
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'send a single unit with gannf.submit()';
  END IF;
  FOR i IN 2 .. v_n LOOP
    IF p_units[i] <= p_units[i - 1] THEN
      RAISE EXCEPTION 'units of a summed submission must be strictly ascending (unit % after %)',
        p_units[i], p_units[i - 1]
        USING ERRCODE = 'invalid_parameter_value', HINT = 'each unit once, in ascending id: the order they were summed in';
    END IF;
  END LOOP;
  SELECT sum(x) INTO v_total FROM unnest(p_sample_counts) x;
  IF (SELECT min(x) FROM unnest(p_sample_counts) x) < 1 THEN
    RAISE EXCEPTION 'sample counts must be positive' USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- Sizes, as submit(): one gradient per network, BN statistics of at least
  -- one and at most one forward pass per image of all the units.
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
                                OR wt.got_bn / wt.bn_count NOT BETWEEN v_n AND 2 * v_total)) THEN
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
        USING ERRCODE = 'ZG002', HINT = 'drop the units; they are served again against the new weights';
    END IF;
    RAISE EXCEPTION 'iteration % has no published weights for both networks', p_iteration
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  IF p_losses IS NOT NULL THEN
    IF cardinality(p_losses) <> 5 * v_n OR array_ndims(p_losses) <> 1 THEN
      RAISE EXCEPTION 'losses: % values for % units (5 per unit)', cardinality(p_losses), v_n
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 0 .. v_n - 1 LOOP
      PERFORM gannf.check_real('loss_d', p_losses[5 * i + 1], -1e4, 1e4);
      PERFORM gannf.check_real('loss_g', p_losses[5 * i + 2], -1e4, 1e4);
      PERFORM gannf.check_real('d_real', p_losses[5 * i + 3], 0, 1);
      PERFORM gannf.check_real('d_fake', p_losses[5 * i + 4], 0, 1);
      PERFORM gannf.check_real('d_accuracy', p_losses[5 * i + 5], 0, 1);
    END LOOP;
  END IF;
  PERFORM gannf.check_real('compute_seconds', p_compute_seconds, 0, 86400);
  IF p_micro_batch IS NOT NULL
     AND p_micro_batch NOT BETWEEN 1 AND (SELECT max(x) FROM unnest(p_sample_counts) x) THEN
    RAISE EXCEPTION 'micro-batch of % images for units of at most % images', p_micro_batch,
      (SELECT max(x) FROM unnest(p_sample_counts) x)
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'pass the micro-batch the units were computed in';
  END IF;

  -- The state row FOR SHARE, as submit(): serialises with the close.
  SELECT ts.iteration INTO v_current FROM gannf.training_state ts FOR SHARE;
  IF NOT FOUND THEN
    PERFORM gannf.current_run();   -- raises with the hint
  END IF;
  IF p_iteration > v_current THEN
    RAISE EXCEPTION 'iteration % is not published yet (current %)', p_iteration, v_current
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- The lock order of every worker function and the close: the state row,
  -- the worker's row, its units, their submissions (sql/0029). FOR KEY
  -- SHARE: strike() (FOR UPDATE) waits for this submission, and the same
  -- worker's heartbeat or claim on its other connection does not.
  PERFORM 1 FROM gannf.workers WHERE id = p_worker FOR KEY SHARE;
  PERFORM gannf.check_not_quarantined(session_user);  -- again, under the worker's row (strike())

  -- Every unit, locked in ascending id (claim and the close lock in id order
  -- too), checked as submit() checks its one.
  FOR i IN 1 .. v_n LOOP
    SELECT * INTO u FROM gannf.work_units WHERE id = p_units[i] FOR UPDATE;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'no work unit %', p_units[i] USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_live FROM gannf.submissions s
     WHERE s.work_unit_id = p_units[i] AND s.state IN ('pending', 'used');
    IF FOUND THEN
      IF v_live.worker_id = p_worker AND v_live.attempt = p_attempts[i] AND i = 1 THEN
        RAISE EXCEPTION 'unit % attempt % is in already', p_units[i], p_attempts[i]
          USING ERRCODE = 'ZG004', DETAIL = format('submission %s', coalesce(v_live.summed_with, v_live.id)),
                HINT = 'a retry after a lost reply: the first submission stands';
      END IF;
      RAISE EXCEPTION 'unit % is not held by worker % attempt % (another result came first)',
        p_units[i], p_worker, p_attempts[i]
        USING ERRCODE = 'ZG003', HINT = 'drop the units';
    END IF;
    IF p_iteration < v_current OR u.iteration <> p_iteration THEN
      RAISE EXCEPTION 'iteration % is closed (current %), or unit % is not of it', p_iteration, v_current, p_units[i]
        USING ERRCODE = 'ZG002', HINT = 'drop the units; they are served again against the new weights';
    END IF;
    IF u.state <> 'claimed' OR u.worker_id <> p_worker OR u.attempt <> p_attempts[i] THEN
      RAISE EXCEPTION 'unit % is not held by worker % attempt %', p_units[i], p_worker, p_attempts[i]
        USING ERRCODE = 'ZG003', HINT = 'its lease passed or it was released: drop the units';
    END IF;
    IF p_sample_counts[i] <> u.sample_count THEN
      RAISE EXCEPTION 'sample count % does not match work unit % (% samples)',
        p_sample_counts[i], p_units[i], u.sample_count USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END LOOP;
  PERFORM set_config('synchronous_commit', 'off', true);

  FOR i IN 1 .. v_n LOOP
    INSERT INTO gannf.submissions (work_unit_id, iteration, attempt, worker_id, sample_count,
                                   micro_batch, loss_d, loss_g, d_real, d_fake, d_accuracy,
                                   compute_seconds, submitted_at, summed_with)
    VALUES (p_units[i], p_iteration, p_attempts[i], p_worker, p_sample_counts[i],
            least(p_micro_batch, p_sample_counts[i]),
            p_losses[5 * i - 4], p_losses[5 * i - 3], p_losses[5 * i - 2], p_losses[5 * i - 1], p_losses[5 * i],
            CASE WHEN i = 1 THEN p_compute_seconds END, v_now, v_leader)
    RETURNING id INTO v_id;
    IF i = 1 THEN
      v_leader := v_id;
      UPDATE gannf.submissions SET summed_with = v_id WHERE id = v_id;
    END IF;
  END LOOP;

  INSERT INTO gannf.submission_blobs (submission_id, network, layout_hash, element_count, grad,
                                      grad_checksum, bn_count, bn_stats, bn_checksum)
  VALUES (v_leader, 'G', p_g_layout_hash, p_g_elements, p_g_grad, p_g_checksum,
          p_g_bn_count, p_g_bn_stats, p_g_bn_checksum),
         (v_leader, 'D', p_d_layout_hash, p_d_elements, p_d_grad, p_d_checksum,
          p_d_bn_count, p_d_bn_stats, p_d_bn_checksum);

  UPDATE gannf.work_units SET state = 'submitted', submitted_at = v_now WHERE id = ANY (p_units);
  PERFORM pg_notify('gannf_submission', p_iteration::text);

  RETURN QUERY SELECT 'accepted'::text, v_leader;
EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
  -- 0015: a call no correct worker makes counts against the login, by a
  -- counter that the abort below (or the client's ROLLBACK) does not undo.
  -- 0028: so does any other error of the values it sent (SQLSTATE classes
  -- 22 and 23: an overflow, a constraint of the tables), raised as 22023.
  PERFORM gannf.count_refusal(session_user);
  IF SQLSTATE = '22023' THEN
    RAISE;
  END IF;
  RAISE EXCEPTION '%() refused: %', 'submit_summed', SQLERRM
    USING ERRCODE = 'invalid_parameter_value', DETAIL = format('SQLSTATE %s', SQLSTATE),
          HINT = 'a call no correct worker makes; it counts against the login';
END
$$;

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
  -- Again, under the worker's row (locked above): strike() locks the
  -- login's rows before it quarantines, so a claim that read "not
  -- quarantined" before a quarantine has committed its units by then, and
  -- strike()'s drop_login_work() hands them back (sql/0029).
  PERFORM gannf.check_not_quarantined(session_user);
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
  -- checks the quarantine again and touches a unit (sql/0029): the calls in
  -- flight commit first, and drop_login_work() below sees what they claimed
  -- or submitted; the calls after see the quarantine. A session of the
  -- login that keeps a transaction open holding a row is not waited for
  -- past 2 s (the reaper ends it; the coordinator's close refuses what
  -- slips past).
  v_lock_timeout := current_setting('lock_timeout');
  PERFORM set_config('lock_timeout', '2s', true);
  BEGIN
    PERFORM 1 FROM gannf.workers w WHERE w.login = p_login ORDER BY w.id FOR UPDATE;
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
