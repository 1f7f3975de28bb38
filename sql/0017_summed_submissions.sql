-- 0017: summed submissions (issue 17, item 2a; docs/scaling.md).
-- A worker that holds several units of one iteration computes them into one
-- gradient buffer (the mean over all their images, accumulated unit after
-- unit in ascending unit id) and sends it once, with the BN batch statistics
-- of every forward pass and each unit's losses. Upload bytes per unit fall
-- by the number of units summed.
--
-- submissions.summed_with: the group's first submission (its "leader", which
--   holds the blobs, the BN statistics of all members concatenated in unit
--   order); NULL for a submission of one unit. Each unit keeps its own
--   submission row (its attempt, sample count, losses, micro-batch), so that
--   leases, duplicates, leaderboards and hold bounds work per unit as before.
-- gannf.submit_summed(): submit() for a list of units. The list is hostile
--   input: 2 to 64 units, strictly ascending (no duplicates), every one held
--   by the caller under the attempt given, of p_iteration, with its real
--   sample count; the whole call is refused (22023, ZG002, ZG003 or ZG004 as
--   submit() would) when any unit fails. submit() itself is not changed.

ALTER TABLE gannf.submissions
  ADD COLUMN summed_with bigint REFERENCES gannf.submissions (id) ON DELETE CASCADE;
CREATE INDEX submissions_summed_with_idx ON gannf.submissions (summed_with) WHERE summed_with IS NOT NULL;

CREATE FUNCTION gannf.submit_summed(
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
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  PERFORM pg_notify('gannf_submission', p_iteration::text);

  RETURN QUERY SELECT 'accepted'::text, v_leader;
EXCEPTION WHEN invalid_parameter_value THEN
  -- As 0015's submit(): a call no correct worker makes counts against the
  -- login (a sequence, which the abort does not undo).
  PERFORM gannf.count_refusal(session_user);
  RAISE;
END
$$;

REVOKE ALL ON FUNCTION gannf.submit_summed(bigint, bigint[], integer[], bigint, integer[],
                                           bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                                           bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                                           real[], real, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gannf.submit_summed(bigint, bigint[], integer[], bigint, integer[],
                                              bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                                              bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                                              real[], real, integer) TO gannf_worker;
