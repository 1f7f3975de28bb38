-- 0019: the weights as an exact delta from the previous iteration's (issue
-- 17, item 2b; src/cluster/weights_delta.h, docs/scaling.md "The weights as
-- a delta").
--
-- A worker that computed for iteration k-1 holds its weights. With each new
-- iteration's weights the coordinator publishes, in the same commit, each
-- network's parameters as the exact difference from the iteration before
-- (the bit patterns' difference, byte planes, zstd: about 0.63 of the float32
-- bytes), and such a worker downloads that instead of the full parameters,
-- rebuilds them and checks them against weights.params_checksum; anything
-- else (no delta, another base, a checksum that does not match) downloads
-- the full row as before. BN running statistics stay in gannf.weights (a few
-- kB).
--
-- Only the coordinator writes here; workers may read, like gannf.weights. A
-- delta goes with its iteration's weights (ON DELETE CASCADE), so the
-- coordinator's pruning of weights two iterations old prunes these too, and
-- its VACUUM after every commit includes this table (sql/0010).

CREATE TABLE gannf.weights_delta (
  iteration bigint NOT NULL,
  network gannf.network NOT NULL,
  base_iteration bigint NOT NULL,
  element_count bigint NOT NULL,
  delta bytea NOT NULL,
  PRIMARY KEY (network, iteration),
  FOREIGN KEY (network, iteration) REFERENCES gannf.weights (network, iteration) ON DELETE CASCADE,
  CONSTRAINT weights_delta_base_before CHECK (base_iteration >= 0 AND base_iteration < iteration),
  CONSTRAINT weights_delta_element_count_positive CHECK (element_count > 0)
);
-- Already compressed: TOAST's pglz would only spend the coordinator's time.
ALTER TABLE gannf.weights_delta ALTER COLUMN delta SET STORAGE EXTERNAL;
ALTER TABLE gannf.weights_delta SET (
  autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 8, autovacuum_vacuum_cost_delay = 0,
  toast.autovacuum_vacuum_scale_factor = 0, toast.autovacuum_vacuum_threshold = 1000,
  toast.autovacuum_vacuum_cost_delay = 0);

GRANT SELECT ON gannf.weights_delta TO gannf_worker;
