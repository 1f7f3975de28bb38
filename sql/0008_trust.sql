-- 0008: trust. One hostile or broken student login cannot freeze, starve or
-- spam the run, nor deface what the instructor reads (issue 12; the attacks
-- and the test of each: docs/security.md).
--
-- 1. gannf.trust_settings: the caps and bounds below, one row the
--    coordinator (the instructor) may UPDATE while a run goes on.
-- 2. gannf.login_trust: strikes and quarantine per login. gannf.strike() and
--    gannf.lift_quarantine() are the coordinator's (no worker may call them),
--    so no student can get another one quarantined: strikes come only from
--    the coordinator's verdicts on a login's own submissions and from the
--    reaper about a login's own sessions.
-- 3. The worker functions, replaced:
--    register_worker  validates every string a worker sends (printable, no
--                     control, bidi or zero-width characters, bounded) and
--                     range-checks every number; caps workers per login.
--    claim            refuses a quarantined login (SQLSTATE ZG001); caps the
--                     units a login holds at once and, when set, per iteration.
--    heartbeat        no longer extends a unit held past a bound derived from
--                     the worker's measured speed: it hands the unit back and
--                     answers NULL.
--    submit           every outcome other than 'accepted' RAISES (below), so
--                     a transaction left open after it holds no lock; blob
--                     sizes are checked first, before anything is copied;
--                     losses and accuracies range-checked.
-- 4. gannf.reap(): the coordinator ends worker-login sessions that hold a
--    transaction, a statement or a snapshot past the bounds; such a hold
--    counts a strike (no correct worker ever keeps a transaction open: each
--    of its calls is one autocommitted statement).
--
-- SQLSTATEs (class ZG: implementation-defined classes start with I-Z, and
-- PostgreSQL uses none starting with Z but for internal errors XX):
--   ZG001 login_quarantined    claim/submit of a quarantined login
--   ZG002 iteration_closed     submit: the weights moved on; the unit is served again
--   ZG003 not_held             submit: the lease is not this worker's any more
--   ZG004 duplicate            submit: already in (DETAIL: 'submission <id>')
--   ZG005 limit_reached        register_worker: the login's worker cap
-- src/cluster/protocol.cpp maps ZG002-ZG004 to SubmitStatus, so a worker
-- handles them as before.
--
-- Locks. An error aborts the transaction and releases its locks at once
-- (PostgreSQL's abort releases them; ROLLBACK only ends the block), so a
-- refused call left in an open transaction holds nothing. An accepted submit
-- still takes training_state FOR SHARE (it is what serialises it with the
-- coordinator closing the iteration); a caller that keeps that open is ended
-- by idle_in_transaction_session_timeout (set for the database by
-- sql/roles.sql) or, when the login SET it to 0 (it may: USERSET), by reap().

CREATE TABLE gannf.trust_settings (
  singleton boolean PRIMARY KEY DEFAULT true,
  strike_threshold integer NOT NULL DEFAULT 5,        -- strikes that quarantine a login
  max_workers_per_login integer NOT NULL DEFAULT 16,  -- registered (login, name) pairs
  max_held_units integer NOT NULL DEFAULT 4,          -- units claimed at once, per login
  max_units_per_iteration integer,                    -- per login and iteration; NULL: no cap
  hold_floor interval NOT NULL DEFAULT '2 minutes',   -- a unit may be held at least this long
  hold_factor real NOT NULL DEFAULT 4,                -- × the worker's measured time for the unit
  hold_default_per_image interval NOT NULL DEFAULT '1 second', -- per image, before any measurement
  reap_idle_in_transaction interval NOT NULL DEFAULT '10 seconds',
  reap_statement interval NOT NULL DEFAULT '2 minutes',
  reap_transaction interval NOT NULL DEFAULT '5 minutes', -- a snapshot held this long (backend_xmin)
  CONSTRAINT trust_settings_singleton CHECK (singleton),
  CONSTRAINT trust_settings_threshold_positive CHECK (strike_threshold >= 1),
  CONSTRAINT trust_settings_caps_positive CHECK (max_workers_per_login >= 1 AND max_held_units >= 1
                                                 AND coalesce(max_units_per_iteration, 1) >= 1),
  CONSTRAINT trust_settings_hold_sane CHECK (hold_floor > '0' AND hold_factor >= 1 AND hold_default_per_image > '0'),
  CONSTRAINT trust_settings_reap_positive CHECK (reap_idle_in_transaction > '0' AND reap_statement > '0'
                                                 AND reap_transaction > '0')
);
INSERT INTO gannf.trust_settings DEFAULT VALUES;

CREATE TABLE gannf.login_trust (
  login name PRIMARY KEY,
  strikes integer NOT NULL DEFAULT 0,
  quarantined_at timestamptz,          -- NOT NULL: quarantined
  reason text,                         -- the last strike's reason
  lifted_at timestamptz,
  CONSTRAINT login_trust_strikes_nonnegative CHECK (strikes >= 0)
);

-- Hands back what a login's workers hold: submitted-but-pending units are
-- served again (their submissions rejected with p_reason), claimed units
-- become claimable at once. Lock order of sql/0002: units, then submissions.
CREATE FUNCTION gannf.drop_login_work(p_login name, p_reason text) RETURNS void
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
BEGIN
  UPDATE gannf.work_units u SET state = 'available', visible_at = v_now
    FROM gannf.workers w
   WHERE w.id = u.worker_id AND w.login = p_login AND u.state = 'claimed';
  UPDATE gannf.work_units u SET state = 'available', visible_at = v_now
    FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id
   WHERE s.work_unit_id = u.id AND w.login = p_login AND s.state = 'pending' AND u.state = 'submitted';
  UPDATE gannf.submissions s SET state = 'rejected', reject_reason = p_reason
    FROM gannf.workers w
   WHERE w.id = s.worker_id AND w.login = p_login AND s.state = 'pending';
END
$$;

-- The coordinator's verdict against a login: p_weight strikes (a failed spot
-- check passes the threshold, to quarantine at once). Returns true when the
-- login is (now) quarantined; on the strike that quarantines it, its pending
-- submissions are rejected ('quarantined') and its held units released.
CREATE FUNCTION gannf.strike(p_login name, p_reason text, p_weight integer DEFAULT 1) RETURNS boolean
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_threshold integer := (SELECT t.strike_threshold FROM gannf.trust_settings t);
  r gannf.login_trust;
BEGIN
  IF p_login IS NULL OR p_weight IS NULL OR p_weight < 1 THEN
    RAISE EXCEPTION 'strike(%, %, %): a login and a weight of at least 1', p_login, p_reason, p_weight
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO gannf.login_trust AS t (login, strikes, reason)
  VALUES (p_login, p_weight, p_reason)
  ON CONFLICT (login) DO UPDATE SET strikes = t.strikes + EXCLUDED.strikes, reason = EXCLUDED.reason
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

-- The instructor's pardon (gannf-coord quarantine lift LOGIN): strikes back
-- to 0. Returns whether the login was quarantined.
CREATE FUNCTION gannf.lift_quarantine(p_login name) RETURNS boolean
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_was boolean;
BEGIN
  SELECT t.quarantined_at IS NOT NULL INTO v_was FROM gannf.login_trust t WHERE t.login = p_login FOR UPDATE;
  UPDATE gannf.login_trust SET strikes = 0, quarantined_at = NULL, lifted_at = gannf.now()
   WHERE login = p_login;
  PERFORM pg_notify('gannf_monitor', 'login_trust');
  RETURN coalesce(v_was, false);
END
$$;

CREATE FUNCTION gannf.check_not_quarantined(p_login name) RETURNS void
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  r gannf.login_trust;
BEGIN
  SELECT * INTO r FROM gannf.login_trust t WHERE t.login = p_login AND t.quarantined_at IS NOT NULL;
  IF FOUND THEN
    RAISE EXCEPTION 'login % is quarantined since % (% strikes; last: %)',
      p_login, r.quarantined_at, r.strikes, r.reason
      USING ERRCODE = 'ZG001',
            HINT = format('its work is refused; ask the instructor: gannf-coord quarantine lift %s', p_login);
  END IF;
END
$$;

-- A string a worker sends that a terminal, a browser or a CSV will show:
-- bounded, and free of C0/C1 controls (ESC, CSI: terminal escapes), bidi
-- embeddings, overrides and isolates, zero-width and invisible characters,
-- line and paragraph separators. The class is spelt out by code point:
-- [[:cntrl:]] in a C-locale database covers ASCII only.
CREATE FUNCTION gannf.check_display_text(p_what text, p_value text, p_max integer, p_required boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = gannf, pg_temp
AS $$
BEGIN
  IF p_value IS NULL THEN
    IF p_required THEN
      RAISE EXCEPTION '% is required', p_what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN;
  END IF;
  IF char_length(p_value) NOT BETWEEN 1 AND p_max THEN
    RAISE EXCEPTION '% must be 1 to % characters, not %', p_what, p_max, char_length(p_value)
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_value ~ '[\u0001-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]' THEN
    RAISE EXCEPTION '% holds a control, bidirectional or invisible character', p_what
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('at character %s', strpos(p_value,
              substring(p_value FROM '[\u0001-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]'))),
            HINT = 'use printable characters only (the name is shown in the instructor''s terminal and on the dashboard)';
  END IF;
  IF p_value ~ '^\s|\s$' THEN
    RAISE EXCEPTION '% must not begin or end with white space', p_what USING ERRCODE = 'invalid_parameter_value';
  END IF;
END
$$;

CREATE FUNCTION gannf.check_range(p_what text, p_value numeric, p_low numeric, p_high numeric) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = gannf, pg_temp
AS $$
BEGIN
  IF p_value IS NOT NULL AND p_value NOT BETWEEN p_low AND p_high THEN
    RAISE EXCEPTION '% must be between % and %, not %', p_what, p_low, p_high, p_value
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
END
$$;

-- A float4 a worker reports: finite and within [low, high] (NaN compares
-- greater than every number in PostgreSQL, so BETWEEN refuses it too).
CREATE FUNCTION gannf.check_real(p_what text, p_value real, p_low real, p_high real) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = gannf, pg_temp
AS $$
BEGIN
  IF p_value IS NOT NULL AND NOT (p_value BETWEEN p_low AND p_high) THEN
    RAISE EXCEPTION '% must be a finite number between % and %, not %', p_what, p_low, p_high, p_value
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
END
$$;

-- As 0002, plus: strings validated, numbers range-checked, and at most
-- max_workers_per_login workers per login (a re-registration of an existing
-- name always works).
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

-- How long worker p_worker may hold a unit of p_images images: hold_factor ×
-- its measured seconds per image × p_images, at least hold_floor. Measured by
-- the database (claim to submission of its last 20 accepted units), not
-- taken from the compute_seconds the worker reports, which it could inflate.
CREATE FUNCTION gannf.hold_bound(p_worker bigint, p_images integer) RETURNS interval
LANGUAGE sql STABLE
SET search_path = gannf, pg_temp
AS $$
  SELECT greatest(t.hold_floor,
                  t.hold_factor * p_images * coalesce(m.per_image, t.hold_default_per_image))
    FROM gannf.trust_settings t
    LEFT JOIN LATERAL (
      SELECT sum(u.submitted_at - u.claimed_at) / nullif(sum(u.sample_count), 0) AS per_image
        FROM (SELECT s.work_unit_id FROM gannf.submissions s
               WHERE s.worker_id = p_worker AND s.state IN ('pending', 'used')
               ORDER BY s.id DESC LIMIT 20) recent
        JOIN gannf.work_units u ON u.id = recent.work_unit_id
       WHERE u.worker_id = p_worker AND u.submitted_at >= u.claimed_at) m ON true
$$;

-- As 0002, plus: a unit held longer than hold_bound() is handed back (it
-- becomes claimable at once) and the answer is NULL, as for a lost lease.
CREATE OR REPLACE FUNCTION gannf.heartbeat(p_worker bigint, p_unit bigint DEFAULT NULL, p_attempt integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gannf, pg_temp
AS $$
DECLARE
  v_now timestamptz := gannf.now();
  v_until timestamptz;
  v_lease interval;
  u gannf.work_units;
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  UPDATE gannf.workers SET last_seen = v_now WHERE id = p_worker;
  IF p_unit IS NULL THEN
    RETURN NULL;
  END IF;
  v_lease := (gannf.current_run()).lease;
  SELECT * INTO u FROM gannf.work_units c
   WHERE c.id = p_unit AND c.state = 'claimed' AND c.worker_id = p_worker AND c.attempt = p_attempt
     FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF v_now > u.claimed_at + gannf.hold_bound(p_worker, u.sample_count) THEN
    UPDATE gannf.work_units SET state = 'available', visible_at = v_now WHERE id = p_unit;
    RETURN NULL;
  END IF;
  UPDATE gannf.work_units SET visible_at = v_now + v_lease WHERE id = p_unit
  RETURNING visible_at INTO v_until;
  RETURN v_until;
END
$$;

-- As 0002, plus: a quarantined login is refused (ZG001); a login gets no
-- more units while it holds max_units_held, nor more than
-- max_units_per_iteration of one iteration (when set). Units a login may
-- not take stay for the others.
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

-- As 0005, but every outcome other than 'accepted' raises (ZG002-ZG004 and
-- 22023 for calls no correct worker makes), and the order of checks puts
-- the cheap ones first: identity and quarantine, then the blobs' byte
-- lengths against the published layout (octet_length of a parameter reads
-- its header only; nothing is copied before this), then numbers, then the
-- locks. The plan_cache_mode of 0006 and a small work_mem are in the SET
-- clause (CREATE OR REPLACE replaces the function's settings).
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
BEGIN
  PERFORM gannf.caller_worker(p_worker);
  PERFORM gannf.check_not_quarantined(session_user);

  -- Sizes first. No published weights of p_iteration: pruned (closed long
  -- ago) or never published.
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
       OR wt.grad_bytes IS DISTINCT FROM 4 * wt.element_count
       OR wt.got_bn IS NULL
       OR wt.bn_bytes IS DISTINCT FROM 4 * wt.got_bn
       OR (wt.bn_count = 0 AND wt.got_bn <> 0)
       OR (wt.bn_count > 0 AND (wt.got_bn % wt.bn_count <> 0
                                OR wt.got_bn / wt.bn_count NOT BETWEEN 1 AND p_sample_count)) THEN
      RAISE EXCEPTION 'network % does not match the published weights of iteration %', wt.network, p_iteration
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('submitted: layout hash %s, %s elements in %s bytes, %s BN values in %s bytes; '
                              'published: %s, %s, %s per forward pass',
                              wt.got_hash, wt.got_elements, wt.grad_bytes, wt.got_bn, wt.bn_bytes,
                              wt.layout_hash, wt.element_count, wt.bn_count),
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

-- The reaper, run by the coordinator every few seconds: ends the sessions of
-- worker logins (members of gannf_worker) that stay idle in a transaction,
-- run one statement, or hold a transaction (and so a snapshot that keeps
-- vacuum from removing dead gradient rows, and for a LISTENer the
-- notification queue) longer than trust_settings allows. A login's held
-- transaction also counts a strike; a long statement does not (a slow
-- server makes those). Needs pg_read_all_stats (to see other logins'
-- sessions) and pg_signal_backend (to end them): sql/roles.sql grants both.
-- Returns what it ended.
CREATE FUNCTION gannf.reap()
RETURNS TABLE (pid integer, login name, why text)
LANGUAGE plpgsql
SET search_path = gannf, pg_temp
AS $$
DECLARE
  cfg gannf.trust_settings;
  v_wall timestamptz := clock_timestamp();
  r record;
BEGIN
  SELECT * INTO cfg FROM gannf.trust_settings;
  IF NOT (pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
          AND pg_has_role(current_user, 'pg_signal_backend', 'USAGE')) THEN
    RAISE EXCEPTION 'gannf.reap() needs pg_read_all_stats and pg_signal_backend, which % lacks', current_user
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'an administrator runs sql/roles.sql once more (tools/pg-embedded.sh start does for the embedded server)';
  END IF;
  FOR r IN
    SELECT a.pid, a.usename,
           CASE
             WHEN a.state LIKE 'idle in transaction%' AND a.state_change < v_wall - cfg.reap_idle_in_transaction
               THEN format('idle in a transaction for %s s', round(extract(epoch FROM v_wall - a.state_change)))
             WHEN a.xact_start < v_wall - cfg.reap_transaction
               THEN format('held a transaction for %s s', round(extract(epoch FROM v_wall - a.xact_start)))
             WHEN a.state = 'active' AND a.query_start < v_wall - cfg.reap_statement
               THEN format('ran one statement for %s s', round(extract(epoch FROM v_wall - a.query_start)))
           END AS why,
           a.state = 'active' AND a.xact_start >= v_wall - cfg.reap_transaction AS statement_only
      FROM pg_stat_activity a
      JOIN pg_roles ro ON ro.oid = a.usesysid
     WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
       AND a.datname = current_database()  -- this run's sessions only: other databases are not its business
       AND NOT ro.rolsuper AND ro.rolname <> current_user
       AND pg_has_role(ro.oid, 'gannf_worker', 'MEMBER')
  LOOP
    CONTINUE WHEN r.why IS NULL;
    IF pg_terminate_backend(r.pid) THEN
      pid := r.pid;
      login := r.usename;
      why := r.why;
      RETURN NEXT;
      IF NOT r.statement_only THEN
        PERFORM gannf.strike(r.usename, 'session ended by the reaper: ' || r.why);
      END IF;
    END IF;
  END LOOP;
END
$$;

-- What the instructor reads: logins with strikes, quarantined first.
CREATE VIEW gannf.login_status AS
SELECT t.login::text AS login, t.strikes, t.quarantined_at IS NOT NULL AS quarantined, t.quarantined_at,
       t.reason, t.lifted_at
  FROM gannf.login_trust t;

-- 0003's leaderboard with the login beside the name (a student can name a
-- worker after another; the login cannot be forged) and without quarantined
-- logins' credit: their pending submissions are rejected, used ones stay.
CREATE OR REPLACE VIEW gannf.leaderboard AS
SELECT rank() OVER (ORDER BY coalesce(sum(s.sample_count) FILTER (WHERE s.state IN ('pending', 'used')), 0) DESC)::integer AS rank,
       w.id AS worker_id, w.login, w.name, w.backend, w.gpu_name,
       count(s.id) FILTER (WHERE s.state IN ('pending', 'used'))::integer AS units,
       coalesce(sum(s.sample_count) FILTER (WHERE s.state IN ('pending', 'used')), 0)::bigint AS images,
       count(s.id) FILTER (WHERE s.state = 'rejected')::integer AS rejected,
       avg(s.compute_seconds)::real AS mean_compute_seconds,
       max(s.submitted_at) AS last_submission,
       w.last_seen,
       w.login::text || '/' || w.name AS display_name
  FROM gannf.workers w
  LEFT JOIN gannf.submissions s ON s.worker_id = w.id
 GROUP BY w.id;

-- New functions are the owner's only (0004's default privileges revoke
-- PUBLIC's EXECUTE); the replaced worker functions keep their grants.
