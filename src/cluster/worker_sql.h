// Every statement a gannf-worker sends, in one place: the worker's calls
// use these texts, and the coordinator's watch on the server's CPU
// (cpu_watch.h) tells a student's own SQL (none of them) from a
// gannf-worker's calls, which it counts against a limit of their own
// (uploads and weights aside, data()). tests/test_trust_runs.cpp (Trust.EveryStatementAWorkerSendsIsInTheList)
// reads what a real worker sent from the server's log and finds each here.
// A statement is matched by its whole text, as pg_stat_activity shows it.
#pragma once
#include <string>
#include <vector>

namespace gannf::cluster::worker_sql {

inline constexpr const char* kRegister = "SELECT gannf.register_worker($1, $2, $3, $4, $5, $6, $7)";
inline constexpr const char* kHeartbeat = "SELECT gannf.heartbeat($1)";
inline constexpr const char* kHeartbeatUnit = "SELECT gannf.heartbeat($1, $2, $3)";
inline constexpr const char* kClaim =
    "SELECT unit_id, attempt, iteration, epoch, first_index, sample_count, lease_until "
    "FROM gannf.claim($1, $2)";
inline constexpr const char* kSubmit =
    "SELECT status, submission_id FROM gannf.submit($1, $2, $3, $4, $5, "
    "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, "
    "$20, $21, $22, $23, $24, $25, $26)";
inline constexpr const char* kSubmitSummed =
    "SELECT status, submission_id FROM gannf.submit_summed($1, $2::bigint[], $3::integer[], $4, "
    "$5::integer[], $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, "
    "$20::real[], $21, $22)";
inline constexpr const char* kRelease = "SELECT gannf.release($1, $2, $3)";
inline constexpr const char* kReleaseHeld = "SELECT gannf.release_held($1)";
inline constexpr const char* kReportTiming = "SELECT gannf.report_timing($1, $2, $3, $4, $5, $6, $7)";
inline constexpr const char* kLeave = "SELECT gannf.leave($1)";
// The state row and the weights are replayed together (one commit of the
// coordinator), so on a replica the run check and the rows agree. A
// network with a delta from the base comes without its full parameters.
inline constexpr const char* kWeights =
    "SELECT w.network::text, w.layout_hash, CASE WHEN d.delta IS NULL THEN w.params END, w.params_checksum, "
    "w.bn_running, w.bn_checksum, w.num_batches_tracked, d.delta, w.element_count "
    "FROM gannf.weights w LEFT JOIN gannf.weights_delta d "
    "ON d.network = w.network AND d.iteration = w.iteration AND d.base_iteration = $3 "
    "WHERE w.iteration = $1 "
    "AND ($2 = '' OR $2 = (SELECT run_id::text FROM gannf.training_state))";
// Started before the instructor's `gannf-coord init`: no schema yet.
inline constexpr const char* kHasSchema =
    "SELECT to_regprocedure('gannf.register_worker(text, text, integer, bigint, text, bigint, "
    "integer)') IS NULL";
// With the backend of the coordinator (the holder of its advisory lock,
// sql/0007's monitor_run): notifications from it are acted on at once.
// Only a session of the schema's owner, the coordinator's login: where
// sql/roles.sql has not run, a student may hold that key too (sql/0028).
inline constexpr const char* kTrainingState =
    "SELECT run_id::text, status, config::text, "
    "(SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database()) "
    "AND l.classid = 6775150 AND l.objid = 1852203887 AND l.objsubid = 1 "
    "AND a.usesysid = (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'gannf') LIMIT 1) "
    "FROM gannf.training_state";
inline constexpr const char* kWhyTaken =
    "SELECT taken_why, extract(epoch FROM taken_bound)::float8, held_to_one FROM gannf.monitor_logins "
    "WHERE login = session_user AND taken_why IS NOT NULL "
    "AND taken_at >= gannf.now() - make_interval(secs => $1::float8)";
inline constexpr const char* kWhyWaiting =
    "SELECT coalesce(taken_why, '') FROM gannf.monitor_logins WHERE login = session_user "
    "AND held_to_one";

// All of the above, and the LISTENs of the worker's channels
// (pg::Connection::listen quotes the name: LISTEN "gannf_work").
std::vector<std::string> all();
// Of these, the ones that move gradients and weights (submit, submit_summed,
// the weights): their server time is bounded by the network and is the
// class's own work, so the watch on the server's CPU never counts it.
std::vector<std::string> data();

}  // namespace gannf::cluster::worker_sql
