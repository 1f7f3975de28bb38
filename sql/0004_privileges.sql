-- 0004: who may do what (docs/architecture.md, Database). The coordinator
-- role owns everything (it applied these migrations). The worker role may
-- EXECUTE the worker functions of 0002 and SELECT the published weights and
-- the training state: nothing else, no table writes, no other reads.
--
-- Changed since release in a comment only (a citation); databases migrated
-- from the earlier text stay valid:
-- accepts the checksum of its earlier text: 4035482074
--
-- gannf_worker must exist (sql/roles.sql). Created here when this login
-- may create roles, so that a coordinator with CREATEROLE needs no admin.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gannf_worker') THEN
    BEGIN
      CREATE ROLE gannf_worker NOLOGIN;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION 'role gannf_worker does not exist, and % may not create it', current_user
        USING ERRCODE = 'undefined_object',
              HINT = 'an administrator runs sql/roles.sql once (tools/pg-embedded.sh does for the embedded server)';
    END;
  END IF;
END
$$;

-- Functions are executable by PUBLIC by default: not in this schema. The
-- default-privileges line covers functions that later migrations create.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA gannf FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
REVOKE ALL ON SCHEMA gannf FROM PUBLIC;

GRANT USAGE ON SCHEMA gannf TO gannf_worker;
GRANT EXECUTE ON FUNCTION
  gannf.register_worker(text, text, integer, bigint, text, bigint, integer),
  gannf.heartbeat(bigint, bigint, integer),
  gannf.claim(bigint, integer),
  gannf.release(bigint, bigint, integer),
  gannf.submit(bigint, bigint, integer, bigint, integer,
               bigint, bigint, bytea, bigint, bigint, bytea, bigint,
               bigint, bigint, bytea, bigint, bigint, bytea, bigint,
               real, real, real, real, real, real)
  TO gannf_worker;
GRANT SELECT ON gannf.weights, gannf.training_state TO gannf_worker;
