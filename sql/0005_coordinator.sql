-- 0005: what gannf-coord needs beyond 0001-0004 to make distributed training
-- equal local training, and to restart from the database alone.
--
-- 1. weights.num_batches_tracked: BN's counter belongs to a network's state
--    (PyTorch keeps it in the state_dict). It is one number per network, so
--    a typed column, not a blob; it is committed with the weights.
--
-- 2. submissions.micro_batch: the micro-batch size the worker ran its unit
--    in. The coordinator folds the submitted BN batch statistics into the
--    running statistics the way a local step would, and that update uses the
--    unbiased variance var * n / (n - 1) with n = images x H x W of each
--    micro-batch; so it must know how the unit was split (the split rule is
--    gannf::cluster::micro_batches(): micro_batch images each, a trailing
--    single image folded into the last one). submit() takes it as a new last
--    argument; NULL (an old worker) leaves the coordinator the worker's
--    registered batch_size.
--
-- 3. loss_history.seconds and update_seconds: wall time of the iteration
--    (commit to commit) and of the coordinator's own share (validate,
--    average, Adam, publish), for the status line and the dashboard.
--
-- 4. gannf.release_held(worker): a worker process that starts hands back
--    every unit its worker id still holds — a previous process of the same
--    (login, name) that crashed cannot be computing them — so that they are
--    not idle until their leases pass. Called once at start, never on a
--    reconnect (the process's own units are still being computed then).
--
-- submit() is replaced as a whole (DROP and CREATE: a new parameter with a
-- default next to the old signature would make every call ambiguous); its
-- rules are 0002's, plus the micro-batch check.

ALTER TABLE gannf.weights
  ADD COLUMN num_batches_tracked bigint NOT NULL DEFAULT 0,
  ADD CONSTRAINT weights_num_batches_tracked_nonnegative CHECK (num_batches_tracked >= 0);

ALTER TABLE gannf.submissions
  ADD COLUMN micro_batch integer,
  ADD CONSTRAINT submissions_micro_batch_in_unit CHECK (micro_batch BETWEEN 1 AND sample_count);

ALTER TABLE gannf.loss_history
  ADD COLUMN seconds real,
  ADD COLUMN update_seconds real;

DROP FUNCTION gannf.submit(bigint, bigint, integer, bigint, integer,
                           bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                           bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                           real, real, real, real, real, real);

-- Status and durability as in 0002 (accepted | duplicate | not_held |
-- iteration_closed; synchronous_commit off for this transaction only).
CREATE FUNCTION gannf.submit(
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
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_current bigint;
  u gannf.work_units;
  v_live gannf.submissions;
  v_id bigint;
  v_checked integer;
  wt record;
BEGIN
  PERFORM gannf.caller_worker(p_worker);

  -- Serialises with the coordinator closing the iteration (it locks this row
  -- FOR UPDATE first): a submit either commits before the close and is seen
  -- by it, or reads the new iteration after it and is refused.
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
      RETURN QUERY SELECT 'duplicate'::text, v_live.id;
    ELSE
      RETURN QUERY SELECT 'not_held'::text, NULL::bigint;   -- someone else's came first
    END IF;
    RETURN;
  END IF;

  IF p_iteration > v_current THEN
    RAISE EXCEPTION 'iteration % is not published yet (current %)', p_iteration, v_current
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_iteration < v_current OR u.iteration <> p_iteration THEN
    RETURN QUERY SELECT 'iteration_closed'::text, NULL::bigint;
    RETURN;
  END IF;

  IF u.state <> 'claimed' OR u.worker_id <> p_worker OR u.attempt <> p_attempt THEN
    RETURN QUERY SELECT 'not_held'::text, NULL::bigint;
    RETURN;
  END IF;

  IF p_sample_count IS DISTINCT FROM u.sample_count THEN
    RAISE EXCEPTION 'sample count % does not match work unit % (% samples)',
      p_sample_count, p_unit, u.sample_count USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_micro_batch IS NOT NULL AND p_micro_batch NOT BETWEEN 1 AND p_sample_count THEN
    RAISE EXCEPTION 'micro-batch of % images for a unit of %', p_micro_batch, p_sample_count
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'pass the micro-batch the unit was computed in: at most its sample count';
  END IF;
  -- BN statistics: the published running-stats layout once per forward pass
  -- (or once, aggregated), so a whole multiple of it, at most one per image.
  v_checked := 0;
  FOR wt IN
    SELECT w.network, w.layout_hash, w.element_count, w.bn_count,
           CASE w.network WHEN 'G' THEN p_g_layout_hash ELSE p_d_layout_hash END AS got_hash,
           CASE w.network WHEN 'G' THEN p_g_elements ELSE p_d_elements END AS got_elements,
           CASE w.network WHEN 'G' THEN p_g_bn_count ELSE p_d_bn_count END AS got_bn
      FROM gannf.weights w
     WHERE w.iteration = p_iteration
  LOOP
    v_checked := v_checked + 1;
    IF wt.got_hash IS DISTINCT FROM wt.layout_hash
       OR wt.got_elements IS DISTINCT FROM wt.element_count
       OR wt.got_bn IS NULL
       OR (wt.bn_count = 0 AND wt.got_bn <> 0)
       OR (wt.bn_count > 0 AND (wt.got_bn % wt.bn_count <> 0
                                OR wt.got_bn / wt.bn_count NOT BETWEEN 1 AND p_sample_count)) THEN
      RAISE EXCEPTION 'network % does not match the published weights of iteration %', wt.network, p_iteration
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('submitted: layout hash %s, %s elements, %s BN values; published: %s, %s, %s per micro-batch',
                              wt.got_hash, wt.got_elements, wt.got_bn,
                              wt.layout_hash, wt.element_count, wt.bn_count),
              HINT = 'the worker runs a different architecture or configuration than the coordinator';
    END IF;
  END LOOP;
  IF v_checked <> 2 THEN
    RAISE EXCEPTION 'iteration % has no published weights for both networks', p_iteration
      USING ERRCODE = 'object_not_in_prerequisite_state';
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
END
$$;

CREATE FUNCTION gannf.release_held(p_worker bigint)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_n integer;
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  UPDATE gannf.work_units u
     SET state = 'available', visible_at = v_now
   WHERE u.worker_id = p_worker AND u.state = 'claimed';
  GET DIAGNOSTICS v_n = ROW_COUNT;
  RETURN v_n;
END
$$;

REVOKE ALL ON FUNCTION gannf.release_held(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gannf.release_held(bigint) TO gannf_worker;

REVOKE ALL ON FUNCTION gannf.submit(bigint, bigint, integer, bigint, integer,
                                    bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                                    bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                                    real, real, real, real, real, real, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gannf.submit(bigint, bigint, integer, bigint, integer,
                                       bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                                       bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                                       real, real, real, real, real, real, integer)
  TO gannf_worker;
