-- 0014: compact gradient blobs on the wire (issue 17, item 2c; docs/scaling.md).
-- A run made with `gannf-coord init --blob-format bf16|f16s` stores the format
-- in training_state.config ('wire' -> 'blob_format'; absent: f32), workers
-- encode their gradients in it (src/cluster/blob_codec.h) and the coordinator
-- decodes them before any check, so validation and spot checks see floats.
-- BN statistics and the published weights stay float32.
--
-- gannf.grad_bytes_fit(format, bytes, elements): whether a gradient's byte
--   length fits its format: f32 4n, bf16 2n, f16s 2n plus one 4-byte scale
--   per tensor. The database does not know the tensor count, so for f16s it
--   accepts 1 to 1024 scales and at most one per 8 values (a DCGAN has 13 to
--   15 tensors of 16 values or more); the coordinator checks the exact
--   length against its layout before decoding.
-- submission_blobs_grad_length (0001: 4 × element_count) is replaced by the
--   same rule for any format.
-- gannf.submit(): 0008's body, copied unchanged except the size check, which
--   calls grad_bytes_fit() with the run's format (and names it in the DETAIL).

CREATE FUNCTION gannf.grad_bytes_fit(p_format text, p_bytes bigint, p_elements bigint)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
  SELECT CASE p_format
           WHEN 'f32' THEN p_bytes = 4 * p_elements
           WHEN 'bf16' THEN p_bytes = 2 * p_elements
           WHEN 'f16s' THEN p_bytes - 2 * p_elements BETWEEN 4 AND least(4096, 4 * (p_elements / 8))
                            AND (p_bytes - 2 * p_elements) % 4 = 0
           ELSE false
         END
$$;

-- Any format's length: the row does not say which format it holds (the
-- run does), and a row written before 0014 is f32.
ALTER TABLE gannf.submission_blobs DROP CONSTRAINT submission_blobs_grad_length;
ALTER TABLE gannf.submission_blobs ADD CONSTRAINT submission_blobs_grad_length
  CHECK (gannf.grad_bytes_fit('f32', octet_length(grad), element_count)
         OR gannf.grad_bytes_fit('bf16', octet_length(grad), element_count)
         OR gannf.grad_bytes_fit('f16s', octet_length(grad), element_count));

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
END
$$;
