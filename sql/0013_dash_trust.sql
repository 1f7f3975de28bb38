-- 0013: what the class's dashboard shows of sql/0008's trust and sql/0011's
-- presence (docs/dashboard.md, "What the class sees of quarantines").
--
-- 1. gannf.monitor_logins: per login with a row in login_trust, its strikes
--    and whether (and since when) it is quarantined; not the strike's
--    reason text nor when a quarantine was lifted. The dashboard is public
--    to the class, and a student's login reads it too: which logins are
--    quarantined is what the class sees anyway (their claims stop, their
--    rejected submissions and reasons are on the leaderboard since 0007),
--    while the reason is the instructor's note (gannf-coord quarantine
--    list shows it). The view reads login_trust with its owner's rights;
--    the monitor role and worker logins get SELECT on the view only.
--
-- 2. gannf.monitor_workers gains, at its end (CREATE OR REPLACE keeps the
--    columns before): `present`, 0011's present_workers rule (seen within
--    90 s and not left since), which the coordinator's loss_history.
--    active_workers counts since 0011, so the dashboard's "active workers"
--    agree with the coordinator's; and the login's `strikes` and
--    `quarantined`. `active` (seen within the lease) stays as it was.

CREATE VIEW gannf.monitor_logins AS
SELECT t.login::text AS login, t.strikes, t.quarantined_at IS NOT NULL AS quarantined, t.quarantined_at
  FROM gannf.login_trust t;

CREATE OR REPLACE VIEW gannf.monitor_workers AS
SELECT w.id, w.login::text AS login, w.name, w.backend, w.cpu_cores, w.ram_bytes, w.gpu_name,
       w.gpu_memory_bytes, w.batch_size, w.registered_at, w.last_seen,
       w.last_seen >= gannf.now() - coalesce((SELECT ts.lease FROM gannf.training_state ts),
                                             interval '5 minutes') AS active,
       w.last_seen >= gannf.now() - interval '90 seconds'
         AND (w.left_at IS NULL OR w.left_at < w.last_seen) AS present,
       coalesce(t.strikes, 0) AS strikes,
       coalesce(t.quarantined_at IS NOT NULL, false) AS quarantined
  FROM gannf.workers w
  LEFT JOIN gannf.login_trust t ON t.login = w.login;

GRANT SELECT ON gannf.monitor_logins TO gannf_monitor, gannf_worker;
