-- 0020: which back ends a class accepts (docs/security.md, "Back ends").
--
-- A worker registers with the name of its back end, and the coordinator
-- holds its spot-checked units to that back end's tolerance
-- (src/cluster/spot_check.cpp): 1e-3 for cpu and cuda, 0.1 for cuda-tf32,
-- 0.3 for cuda-bf16. A login may claim any name, so the widest tolerance
-- any accepted back end has is what every login gets. An instructor who
-- wants the tighter checks refuses the tensor-core back ends here:
--
--   trust_settings.accepted_backends  NULL (the default): every back end;
--                                     else the names accepted, e.g.
--                                     '{cpu,cuda}' (gannf-coord init --backends)
--
-- register_worker() refuses another name, and claim() refuses a worker whose
-- registered back end is no longer accepted (the setting changed during the
-- class), both with SQLSTATE ZG006 and a hint naming what is accepted. A
-- unit already claimed is finished and judged as before.

ALTER TABLE gannf.trust_settings ADD COLUMN accepted_backends text[];
ALTER TABLE gannf.trust_settings ADD CONSTRAINT trust_settings_accepted_backends_sane
  CHECK (accepted_backends IS NULL
         OR (cardinality(accepted_backends) BETWEEN 1 AND 16
             AND array_position(accepted_backends, NULL) IS NULL));

-- Raises ZG006 unless p_backend is accepted (NULL: a worker that named no
-- back end is refused whenever the class names the ones it accepts).
CREATE FUNCTION gannf.check_backend_accepted(p_backend text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_accepted text[] := (SELECT t.accepted_backends FROM gannf.trust_settings t);
BEGIN
  IF v_accepted IS NOT NULL AND (p_backend IS NULL OR NOT (p_backend = ANY (v_accepted))) THEN
    RAISE EXCEPTION 'this class does not accept back end "%"; it accepts %', coalesce(p_backend, ''),
      array_to_string(v_accepted, ', ')
      USING ERRCODE = 'ZG006',
            HINT = format('start gannf-worker again with --backend %s', v_accepted[1]);
  END IF;
END
$$;

-- As 0008, plus: the back end must be accepted (ZG006).
CREATE OR REPLACE FUNCTION gannf.register_worker(
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
  v_cap integer := (SELECT t.max_workers_per_login FROM gannf.trust_settings t);
BEGIN
  PERFORM gannf.check_display_text('worker name', p_name, 64, true);
  PERFORM gannf.check_display_text('backend', p_backend, 32, false);
  IF p_backend !~ '^[a-z0-9][a-z0-9._-]*$' THEN
    RAISE EXCEPTION 'backend "%" is not a back end''s name (lower-case letters, digits, . _ -)', p_backend
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM gannf.check_backend_accepted(p_backend);
  PERFORM gannf.check_display_text('GPU name', p_gpu_name, 128, false);
  PERFORM gannf.check_range('cpu_cores', p_cpu_cores, 1, 4096);
  PERFORM gannf.check_range('ram_bytes', p_ram_bytes, 0, 1125899906842624);         -- 1 PiB
  PERFORM gannf.check_range('gpu_memory_bytes', p_gpu_memory_bytes, 0, 17592186044416); -- 16 TiB
  PERFORM gannf.check_range('batch_size', p_batch_size, 1, 65536);

  SELECT w.id INTO v_id FROM gannf.workers w WHERE w.login = session_user AND w.name = p_name;
  IF NOT FOUND THEN
    -- Serialises registrations of one login, so the count below is exact.
    PERFORM pg_advisory_xact_lock(hashtext('gannf.register_worker'), hashtext(session_user::text));
    IF (SELECT count(*) FROM gannf.workers w WHERE w.login = session_user) >= v_cap THEN
      RAISE EXCEPTION 'login % has % workers registered already, the most one login may', session_user, v_cap
        USING ERRCODE = 'ZG005',
              HINT = 'reuse a name you registered before (gannf-worker --name), or ask the instructor to raise trust_settings.max_workers_per_login';
    END IF;
  END IF;

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

-- As 0008, plus: the worker's registered back end must still be accepted
-- (ZG006).
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
  IF v_room < 1 THEN
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
     LIMIT v_room
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
