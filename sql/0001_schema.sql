-- 0001: tables, types and indexes of the cluster protocol.
--
-- Applied by the programs (src/cluster/migrate.cpp) as gannf_coord, which
-- then owns everything here; roles come from sql/roles.sql. The migration
-- runner creates schema gannf and gannf.schema_migrations before this file.
-- Changed since release in a comment only (a citation); databases migrated
-- from the earlier text stay valid:
-- accepts the checksum of its earlier text: 3015413641
--
-- Blobs are raw little-endian float32 buffers (docs/architecture.md, Blobs): no header,
-- the metadata lives in typed columns beside them, and a named CHECK ties
-- each blob's byte length to its element count. Floats don't compress, so
-- blob columns are STORAGE EXTERNAL (out of line, never pglz'd).
--
-- Checksums are CRC-32C (Castagnoli) of the blob's bytes, computed in C++
-- (src/cluster/blob.h; hardware-accelerated on x86 SSE4.2 and ARMv8) and
-- stored as bigint in [0, 2^32). The database stores them; the coordinator
-- recomputes and compares before it uses a submission.
--
-- Layout hashes are nn's 64-bit FNV-1a of names and shapes
-- (Net::layout_hash), stored as bigint with the same 64 bits.

CREATE TYPE gannf.network AS ENUM ('G', 'D');

-- available: waiting to be claimed.  claimed: leased to a worker until
-- visible_at.  submitted: a submission awaits the coordinator.  done: its
-- gradients went into an update.  cancelled: withdrawn by the coordinator.
CREATE TYPE gannf.unit_state AS ENUM ('available', 'claimed', 'submitted', 'done', 'cancelled');

-- pending: accepted, awaiting the coordinator.  used: averaged into an
-- update.  rejected: failed the coordinator's validation (reason recorded).
-- stale: the iteration closed before it was used (its unit is served again).
CREATE TYPE gannf.submission_state AS ENUM ('pending', 'used', 'rejected', 'stale');

-- Test clock: gannf.now() is clock_timestamp() + skew. Only the schema's
-- owner can write it, so a worker cannot move its own leases (a session
-- setting would be forgeable by any caller).
CREATE TABLE gannf.clock (
  singleton boolean PRIMARY KEY DEFAULT true,
  skew interval NOT NULL DEFAULT '0',
  CONSTRAINT clock_singleton CHECK (singleton)
);
INSERT INTO gannf.clock DEFAULT VALUES;

-- The run: one row. The coordinator writes it in the same transaction as the
-- weights of each new iteration, so iteration, epoch and position are
-- always those of the latest published weights.
CREATE TABLE gannf.training_state (
  singleton boolean PRIMARY KEY DEFAULT true,
  run_id uuid NOT NULL DEFAULT gen_random_uuid(),
  iteration bigint NOT NULL DEFAULT 0,       -- weights of this iteration are current
  epoch integer NOT NULL DEFAULT 0,
  position bigint NOT NULL DEFAULT 0,        -- next index into the epoch's permutation
  dataset_size bigint NOT NULL,
  seed bigint NOT NULL,                      -- seeds the permutations and the noise
  lease interval NOT NULL DEFAULT '5 minutes', -- worker.work_unit_timeout
  status text NOT NULL DEFAULT 'running',
  config jsonb NOT NULL DEFAULT '{}',        -- the resolved configuration (YAML sections)
  started_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT training_state_singleton CHECK (singleton),
  CONSTRAINT training_state_iteration_nonnegative CHECK (iteration >= 0),
  CONSTRAINT training_state_epoch_nonnegative CHECK (epoch >= 0),
  CONSTRAINT training_state_position_in_epoch CHECK (position >= 0 AND position <= dataset_size),
  CONSTRAINT training_state_dataset_size_positive CHECK (dataset_size > 0),
  CONSTRAINT training_state_lease_positive CHECK (lease > '0'),
  CONSTRAINT training_state_status_known CHECK (status IN ('running', 'paused', 'finished'))
);

CREATE TABLE gannf.workers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  login name NOT NULL,                       -- session_user at registration: the identity
  name text NOT NULL,                        -- chosen by the worker (hostname by default)
  backend text,
  cpu_cores integer,
  ram_bytes bigint,
  gpu_name text,
  gpu_memory_bytes bigint,
  batch_size integer,
  registered_at timestamptz NOT NULL,
  last_seen timestamptz NOT NULL,
  CONSTRAINT workers_login_name_key UNIQUE (login, name),
  CONSTRAINT workers_name_length CHECK (char_length(name) BETWEEN 1 AND 64),
  CONSTRAINT workers_name_printable CHECK (name !~ '[[:cntrl:]]'),
  CONSTRAINT workers_backend_length CHECK (char_length(backend) <= 32),
  CONSTRAINT workers_gpu_name_length CHECK (char_length(gpu_name) <= 128),
  CONSTRAINT workers_cpu_cores_sane CHECK (cpu_cores BETWEEN 0 AND 100000),
  CONSTRAINT workers_ram_nonnegative CHECK (ram_bytes >= 0),
  CONSTRAINT workers_gpu_memory_nonnegative CHECK (gpu_memory_bytes >= 0),
  CONSTRAINT workers_batch_size_positive CHECK (batch_size > 0)
);

-- A work unit: sample_count consecutive entries of epoch `epoch`'s seeded
-- permutation, starting at first_index, to be computed against the weights
-- of `iteration`. Units an iteration did not use are moved to the next
-- iteration by the coordinator, not thrown away.
--
-- The lease is a visibility deadline (after pgmq): a unit in state
-- available or claimed can be claimed once visible_at has passed. Claiming
-- sets visible_at to now + lease, a heartbeat extends it, and a worker that
-- vanishes simply lets it pass. attempt counts claims.
CREATE TABLE gannf.work_units (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  epoch integer NOT NULL,
  first_index bigint NOT NULL,
  sample_count integer NOT NULL,
  iteration bigint NOT NULL,
  state gannf.unit_state NOT NULL DEFAULT 'available',
  visible_at timestamptz NOT NULL DEFAULT '-infinity',
  attempt integer NOT NULL DEFAULT 0,
  worker_id bigint REFERENCES gannf.workers (id),   -- the holder, or the last one
  created_at timestamptz NOT NULL DEFAULT now(),
  claimed_at timestamptz,
  submitted_at timestamptz,
  CONSTRAINT work_units_first_index_nonnegative CHECK (first_index >= 0),
  CONSTRAINT work_units_sample_count_positive CHECK (sample_count > 0),
  CONSTRAINT work_units_attempt_nonnegative CHECK (attempt >= 0),
  CONSTRAINT work_units_claimed_has_holder CHECK (state <> 'claimed' OR (worker_id IS NOT NULL AND claimed_at IS NOT NULL))
);
-- The claim's access path: equality on iteration, then ORDER BY id, over
-- open units only (done units pile up and are never scanned).
CREATE INDEX work_units_claim_idx ON gannf.work_units (iteration, id)
  WHERE state IN ('available', 'claimed');
CREATE INDEX work_units_worker_idx ON gannf.work_units (worker_id);

CREATE TABLE gannf.submissions (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  work_unit_id bigint NOT NULL REFERENCES gannf.work_units (id) ON DELETE CASCADE,
  iteration bigint NOT NULL,
  attempt integer NOT NULL,
  worker_id bigint NOT NULL REFERENCES gannf.workers (id),
  sample_count integer NOT NULL,
  loss_d real,
  loss_g real,
  d_real real,           -- mean D(x) over the unit's real images
  d_fake real,           -- mean D(G(z))
  d_accuracy real,       -- fraction of real and fake images D classified right
  compute_seconds real,
  state gannf.submission_state NOT NULL DEFAULT 'pending',
  reject_reason text,
  submitted_at timestamptz NOT NULL,
  CONSTRAINT submissions_sample_count_positive CHECK (sample_count > 0),
  CONSTRAINT submissions_rejected_has_reason CHECK (state <> 'rejected' OR reject_reason IS NOT NULL)
);
-- The first valid submission for a unit wins: at most one live one.
CREATE UNIQUE INDEX submissions_one_live_per_unit ON gannf.submissions (work_unit_id)
  WHERE state IN ('pending', 'used');
CREATE INDEX submissions_pending_idx ON gannf.submissions (iteration, id) WHERE state = 'pending';
CREATE INDEX submissions_worker_idx ON gannf.submissions (worker_id);

-- One row per network of a submission: the gradient buffer (the network's
-- flat parameter layout) and the BN batch statistics of the unit's
-- micro-batches (the layout the coordinator folds into running stats).
CREATE TABLE gannf.submission_blobs (
  submission_id bigint NOT NULL REFERENCES gannf.submissions (id) ON DELETE CASCADE,
  network gannf.network NOT NULL,
  layout_hash bigint NOT NULL,
  element_count bigint NOT NULL,
  grad bytea NOT NULL,
  grad_checksum bigint NOT NULL,
  bn_count bigint NOT NULL,
  bn_stats bytea NOT NULL,
  bn_checksum bigint NOT NULL,
  PRIMARY KEY (submission_id, network),
  CONSTRAINT submission_blobs_element_count_positive CHECK (element_count > 0),
  CONSTRAINT submission_blobs_grad_length CHECK (octet_length(grad) = 4 * element_count),
  CONSTRAINT submission_blobs_bn_count_nonnegative CHECK (bn_count >= 0),
  CONSTRAINT submission_blobs_bn_length CHECK (octet_length(bn_stats) = 4 * bn_count),
  CONSTRAINT submission_blobs_grad_checksum_crc32 CHECK (grad_checksum BETWEEN 0 AND 4294967295),
  CONSTRAINT submission_blobs_bn_checksum_crc32 CHECK (bn_checksum BETWEEN 0 AND 4294967295)
);
ALTER TABLE gannf.submission_blobs
  ALTER COLUMN grad SET STORAGE EXTERNAL,
  ALTER COLUMN bn_stats SET STORAGE EXTERNAL;

-- Published weights: one row per network per iteration, the network's flat
-- parameter buffer and its BN running statistics. Workers may read this.
CREATE TABLE gannf.weights (
  iteration bigint NOT NULL,
  network gannf.network NOT NULL,
  layout_hash bigint NOT NULL,
  element_count bigint NOT NULL,
  params bytea NOT NULL,
  params_checksum bigint NOT NULL,
  bn_count bigint NOT NULL,
  bn_running bytea NOT NULL,
  bn_checksum bigint NOT NULL,
  published_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (network, iteration),
  CONSTRAINT weights_iteration_nonnegative CHECK (iteration >= 0),
  CONSTRAINT weights_element_count_positive CHECK (element_count > 0),
  CONSTRAINT weights_params_length CHECK (octet_length(params) = 4 * element_count),
  CONSTRAINT weights_bn_count_nonnegative CHECK (bn_count >= 0),
  CONSTRAINT weights_bn_length CHECK (octet_length(bn_running) = 4 * bn_count),
  CONSTRAINT weights_params_checksum_crc32 CHECK (params_checksum BETWEEN 0 AND 4294967295),
  CONSTRAINT weights_bn_checksum_crc32 CHECK (bn_checksum BETWEEN 0 AND 4294967295)
);
ALTER TABLE gannf.weights
  ALTER COLUMN params SET STORAGE EXTERNAL,
  ALTER COLUMN bn_running SET STORAGE EXTERNAL;

-- The coordinator's Adam state after producing the weights of `iteration`
-- (first and second moments in the parameter layout, and the step count).
-- Kept apart from gannf.weights so that workers can read weights without
-- being able to read (or having to skip) the moments.
CREATE TABLE gannf.optimizer_state (
  iteration bigint NOT NULL,
  network gannf.network NOT NULL,
  step bigint NOT NULL,
  element_count bigint NOT NULL,
  adam_m bytea NOT NULL,
  adam_v bytea NOT NULL,
  PRIMARY KEY (network, iteration),
  FOREIGN KEY (network, iteration) REFERENCES gannf.weights (network, iteration) ON DELETE CASCADE,
  CONSTRAINT optimizer_state_step_nonnegative CHECK (step >= 0),
  CONSTRAINT optimizer_state_m_length CHECK (octet_length(adam_m) = 4 * element_count),
  CONSTRAINT optimizer_state_v_length CHECK (octet_length(adam_v) = 4 * element_count)
);
ALTER TABLE gannf.optimizer_state
  ALTER COLUMN adam_m SET STORAGE EXTERNAL,
  ALTER COLUMN adam_v SET STORAGE EXTERNAL;

-- One row per completed update.
CREATE TABLE gannf.loss_history (
  iteration bigint PRIMARY KEY,   -- the update that produced weights iteration + 1
  epoch integer NOT NULL,
  loss_d real,
  loss_g real,
  d_real real,
  d_fake real,
  d_accuracy real,
  samples integer NOT NULL,
  submissions_used integer NOT NULL,
  submissions_rejected integer NOT NULL DEFAULT 0,
  active_workers integer,
  images_per_second real,
  recorded_at timestamptz NOT NULL DEFAULT now()
);
