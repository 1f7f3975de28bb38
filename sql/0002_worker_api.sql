-- 0002: the worker-facing protocol, as SQL functions.
--
--   gannf.register_worker(name, backend, cpu_cores, ram_bytes, gpu_name,
--                         gpu_memory_bytes, batch_size)       -> worker id
--   gannf.heartbeat(worker [, unit, attempt])                 -> lease deadline
--   gannf.claim(worker [, max_units])                         -> claimed units
--   gannf.submit(worker, unit, attempt, iteration, sample_count,
--                G: layout_hash, elements, grad, checksum, bn_count, bn_stats, bn_checksum,
--                D: the same, losses...)                      -> (status, submission id)
--   gannf.release(worker, unit, attempt)                      -> released?
--
-- Untrusted callers. Every function is SECURITY DEFINER with a fixed
-- search_path, so it runs as the schema owner while the caller itself can
-- touch no table (0004 grants). The caller's identity is its database login:
-- session_user, which SET ROLE and SECURITY DEFINER leave alone. A worker id
-- argument only picks one of the caller's own workers (one login may run
-- several machines); an id that belongs to another login is refused with
-- insufficient_privilege.
--
-- Outcomes that a correct worker meets in normal operation are returned as
-- a status (submit: accepted, duplicate, not_held, iteration_closed); calls
-- no correct worker makes (unknown unit, sizes that don't match the
-- published weights) raise errors.
--
-- Lock order, for everything that writes these tables (the coordinator
-- included): training_state, then work_units, then submissions. submit()
-- takes them in that order; a coordinator that locked units before the
-- state row could deadlock with it.
--
-- Time: gannf.now() (0001's clock table) everywhere, read once per call;
-- clock_timestamp() rather than now() because a claim may run in a long
-- transaction and leases are about wall time.

CREATE FUNCTION gannf.now() RETURNS timestamptz
LANGUAGE sql VOLATILE
AS $$ SELECT clock_timestamp() + coalesce((SELECT skew FROM gannf.clock), interval '0') $$;

-- The caller's worker row, locked against concurrent re-registration; raises
-- unless it belongs to session_user. Internal: not granted to anyone.
CREATE FUNCTION gannf.caller_worker(p_worker bigint) RETURNS gannf.workers
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  w gannf.workers;
BEGIN
  SELECT * INTO w FROM gannf.workers WHERE id = p_worker;
  IF NOT FOUND OR w.login <> session_user THEN
    -- The same answer for "no such worker" and "someone else's": ids are
    -- not secrets, but there is no reason to confirm which exist.
    RAISE EXCEPTION 'worker % is not registered to login %', p_worker, session_user
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'call gannf.register_worker(name) on this login and use the id it returns';
  END IF;
  RETURN w;
END
$$;

CREATE FUNCTION gannf.current_run() RETURNS gannf.training_state
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  ts gannf.training_state;
BEGIN
  SELECT * INTO ts FROM gannf.training_state;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no training run in this database'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'the instructor starts one with gannf-coord init';
  END IF;
  RETURN ts;
END
$$;

-- Register (or re-register after a restart) a worker of the calling login.
-- The same (login, name) always gets the same id, so a restarted worker
-- keeps its history; two machines on one login need different names.
CREATE FUNCTION gannf.register_worker(
  p_name text,
  p_backend text DEFAULT NULL,
  p_cpu_cores integer DEFAULT NULL,
  p_ram_bytes bigint DEFAULT NULL,
  p_gpu_name text DEFAULT NULL,
  p_gpu_memory_bytes bigint DEFAULT NULL,
  p_batch_size integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_id bigint;
BEGIN
  INSERT INTO gannf.workers AS w (login, name, backend, cpu_cores, ram_bytes, gpu_name,
                                  gpu_memory_bytes, batch_size, registered_at, last_seen)
  VALUES (session_user, p_name, p_backend, p_cpu_cores, p_ram_bytes, p_gpu_name,
          p_gpu_memory_bytes, p_batch_size, v_now, v_now)
  ON CONFLICT ON CONSTRAINT workers_login_name_key DO UPDATE
    SET backend = EXCLUDED.backend, cpu_cores = EXCLUDED.cpu_cores,
        ram_bytes = EXCLUDED.ram_bytes, gpu_name = EXCLUDED.gpu_name,
        gpu_memory_bytes = EXCLUDED.gpu_memory_bytes, batch_size = EXCLUDED.batch_size,
        last_seen = v_now
  RETURNING w.id INTO v_id;
  RETURN v_id;
END
$$;

-- Liveness, and with a unit: extend its lease to now + the run's lease.
-- Returns the new deadline, or NULL when the unit is no longer held by this
-- worker and attempt (reclaimed after its lease passed, released, or moved
-- to a new iteration): the worker should drop it.
CREATE FUNCTION gannf.heartbeat(p_worker bigint, p_unit bigint DEFAULT NULL, p_attempt integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_until timestamptz;
  v_lease interval;
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  IF p_unit IS NULL THEN
    RETURN NULL;
  END IF;
  v_lease := (gannf.current_run()).lease;
  UPDATE gannf.work_units u
     SET visible_at = v_now + v_lease
   WHERE u.id = p_unit AND u.state = 'claimed'
     AND u.worker_id = p_worker AND u.attempt = p_attempt
  RETURNING u.visible_at INTO v_until;
  RETURN v_until;
END
$$;

-- Claim up to p_max_units units of the current iteration whose visibility
-- deadline has passed (new ones, released ones, and ones whose holder's
-- lease expired), oldest first. One statement: the CTE locks candidates with
-- FOR UPDATE SKIP LOCKED, so concurrent claimers never wait on each other
-- and never get the same unit, and the UPDATE marks them in the same go.
-- work_units_claim_idx (iteration, id) WHERE state IN (available, claimed)
-- serves the WHERE and the ORDER BY.
CREATE FUNCTION gannf.claim(p_worker bigint, p_max_units integer DEFAULT 1)
RETURNS TABLE (unit_id bigint, attempt integer, iteration bigint, epoch integer,
               first_index bigint, sample_count integer, lease_until timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  ts gannf.training_state := gannf.current_run();
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  IF p_max_units IS NULL OR p_max_units < 1 OR p_max_units > 64 THEN
    RAISE EXCEPTION 'max_units must be between 1 and 64, not %', p_max_units
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  IF ts.status <> 'running' THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH candidates AS (
    SELECT c.id
      FROM gannf.work_units c
     WHERE c.state IN ('available', 'claimed')
       AND c.iteration = ts.iteration
       AND c.visible_at <= v_now
     ORDER BY c.id
     LIMIT p_max_units
       FOR UPDATE SKIP LOCKED
  )
  UPDATE gannf.work_units u
     SET state = 'claimed', worker_id = p_worker, attempt = u.attempt + 1,
         claimed_at = v_now, visible_at = v_now + ts.lease
    FROM candidates
   WHERE u.id = candidates.id
  RETURNING u.id, u.attempt, u.iteration, u.epoch, u.first_index, u.sample_count, u.visible_at;
END
$$;

-- Hand a unit back (a worker shutting down, or one that cannot finish it):
-- it becomes claimable at once. attempt is left as it is: it counts claims.
CREATE FUNCTION gannf.release(p_worker bigint, p_unit bigint, p_attempt integer)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  UPDATE gannf.work_units u
     SET state = 'available', visible_at = v_now
   WHERE u.id = p_unit AND u.state = 'claimed'
     AND u.worker_id = p_worker AND u.attempt = p_attempt;
  RETURN FOUND;
END
$$;

-- Submit both networks' gradients, BN batch statistics and losses of a
-- claimed unit, in one call and so in one transaction.
--
-- Status:
--   accepted          stored; the unit is now 'submitted'
--   duplicate         this worker already submitted this unit and attempt
--                     (a retry after a lost reply): the first one stands,
--                     and its id is returned
--   not_held          the unit is not held by this worker and attempt any
--                     more (its lease passed and someone reclaimed it, or it
--                     was released): nothing stored, whatever arrives first
--                     from the holder wins
--   iteration_closed  the gradients are against weights the coordinator has
--                     already moved past: nothing stored
--
-- Checked here: sizes and layout hashes against the published weights of the
-- iteration (BN statistics: a whole number of copies of the running-stats
-- layout, one per micro-batch or one aggregated), sample count against the unit, byte lengths against element
-- counts (CHECK constraints), checksum range. Not here: the checksums
-- themselves and finiteness, which the coordinator verifies before use (it
-- reads every byte anyway; the database would only double the cost).
--
-- Durability: this transaction commits with synchronous_commit off. A crash
-- can lose the last few hundred milliseconds of accepted submissions, but the
-- acceptance (unit state) and the data are in the same transaction, so they
-- are lost together; the unit stays claimed by its old lease, which passes,
-- and the unit is computed again. Weights and optimizer state are always
-- committed synchronously (the coordinator's transactions), and a
-- synchronous commit flushes all WAL before it, so a submission that went
-- into an update is durable with that update.
CREATE FUNCTION gannf.submit(
  p_worker bigint, p_unit bigint, p_attempt integer, p_iteration bigint, p_sample_count integer,
  p_g_layout_hash bigint, p_g_elements bigint, p_g_grad bytea, p_g_checksum bigint,
  p_g_bn_count bigint, p_g_bn_stats bytea, p_g_bn_checksum bigint,
  p_d_layout_hash bigint, p_d_elements bigint, p_d_grad bytea, p_d_checksum bigint,
  p_d_bn_count bigint, p_d_bn_stats bytea, p_d_bn_checksum bigint,
  p_loss_d real DEFAULT NULL, p_loss_g real DEFAULT NULL,
  p_d_real real DEFAULT NULL, p_d_fake real DEFAULT NULL, p_d_accuracy real DEFAULT NULL,
  p_compute_seconds real DEFAULT NULL)
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

  -- Serialises with the coordinator closing the iteration: it updates this
  -- row, so a submit either commits before the close (and is seen by it) or
  -- reads the new iteration after it and is refused.
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
  -- BN statistics: the published running-stats layout once per micro-batch
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
                                 loss_d, loss_g, d_real, d_fake, d_accuracy, compute_seconds,
                                 submitted_at)
  VALUES (p_unit, p_iteration, p_attempt, p_worker, p_sample_count,
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

-- NOTIFY, from triggers so that every path that makes work or weights
-- appear announces it (payload: the iteration). Workers LISTEN on
-- gannf_work and gannf_weights, the coordinator on gannf_submission.
-- Notifications are sent at commit, and identical ones of a transaction
-- are folded into one.
CREATE FUNCTION gannf.notify_work() RETURNS trigger
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_iteration bigint;
BEGIN
  SELECT max(n.iteration) INTO v_iteration FROM new_units n WHERE n.state = 'available';
  IF v_iteration IS NOT NULL THEN
    PERFORM pg_notify('gannf_work', v_iteration::text);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER work_units_notify_insert
  AFTER INSERT ON gannf.work_units
  REFERENCING NEW TABLE AS new_units
  FOR EACH STATEMENT EXECUTE FUNCTION gannf.notify_work();
CREATE TRIGGER work_units_notify_update
  AFTER UPDATE ON gannf.work_units
  REFERENCING NEW TABLE AS new_units
  FOR EACH STATEMENT EXECUTE FUNCTION gannf.notify_work();

CREATE FUNCTION gannf.notify_weights() RETURNS trigger
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_iteration bigint;
BEGIN
  SELECT max(n.iteration) INTO v_iteration FROM new_weights n;
  IF v_iteration IS NOT NULL THEN
    PERFORM pg_notify('gannf_weights', v_iteration::text);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER weights_notify_insert
  AFTER INSERT ON gannf.weights
  REFERENCING NEW TABLE AS new_weights
  FOR EACH STATEMENT EXECUTE FUNCTION gannf.notify_weights();
