-- 0006: durability chosen per table, and submit()'s plans.
--
-- What a crash of the database server may lose, table by table, and why that
-- is acceptable (measured by bench/bench_db.cpp; docs/benchmarks.md):
--
--   weights, optimizer_state, training_state, loss_history, work_units:
--     logged, committed synchronously by the coordinator (one transaction per
--     iteration). Weights and Adam state can never be recomputed, and the
--     state row says which iteration they are; the unit rows say what has
--     been used. Nothing here may be lost.
--
--   submissions (the row: who, which unit, losses, state):
--     logged, but submit() commits with synchronous_commit off: the worker's
--     "accepted" can be lost in a crash together with the row and the unit's
--     change to 'submitted', so the unit stays claimed until its lease
--     passes and is then computed again. Acceptance and data go together.
--
--   submission_blobs (the ~25 MB gradients and BN statistics of a unit):
--     UNLOGGED, here. They are the bulk of everything written (every unit's
--     gradients, against one set of weights per iteration), live for one
--     iteration, and are pruned once used. Unlogged, they write no WAL: a
--     submission costs the server half the disk writes, the coordinator's
--     pruning DELETE writes no WAL either, and a replica (if any) is not sent
--     gigabytes of gradients. The price: after a crash (not after a clean
--     shutdown) PostgreSQL empties the table. A pending submission whose row
--     survived then has no blobs; the coordinator marks it 'stale' with the
--     reason and serves its unit again at once (coordinator.cpp,
--     fetch_and_validate). Lost gradients are recomputed, never half-used:
--     a submission without both of its blob rows is never averaged.
--
-- An unlogged table may reference a logged one (the foreign key to
-- submissions stays); no logged table references this one.

ALTER TABLE gannf.submission_blobs SET UNLOGGED;

-- submit() receives the two ~12 MB gradients as parameters and passes them
-- to its INSERT. With the default plan_cache_mode a session's first five
-- calls plan that INSERT with the parameter values folded in as constants;
-- a generic plan passes them by reference. bench_db measured submit at
-- 72-86% of a plain INSERT's speed without this and 94-105% with it
-- (PostgreSQL 15; docs/database-benchmarks.md).
ALTER FUNCTION gannf.submit(bigint, bigint, integer, bigint, integer,
                            bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                            bigint, bigint, bytea, bigint, bigint, bytea, bigint,
                            real, real, real, real, real, real, integer)
  SET plan_cache_mode = force_generic_plan;
