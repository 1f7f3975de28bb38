// The coordinator's watch on the server's CPU (docs/security.md, "The
// server's CPU").
//
// PostgreSQL bounds no session's CPU, and a worker login may run any SELECT
// of built-in functions: four sessions of one student counting a cross join
// made a class 1.75-2.43x slower (bench/cpu_hog.sh). Every statement a
// gannf-worker sends is known (worker_sql.h) and lasts milliseconds, so the
// watch counts only the rest -- a login's own SQL -- and only while it runs:
// ten looks a second at pg_stat_activity, each session of a worker login
// found running (or waiting for the disk) on a statement that is none of
// the worker's adding the time since the previous look, parallel workers
// counted as sessions, in every database of the server but the other
// runs' (those the coordinator's login owns: their own coordinators watch
// them). Summed over its sessions, that is the time its own SQL ran -- on a
// server with a core to spare for each, seconds of a core. A login whose
// own SQL ran more than `limit` × `window_s` seconds in the last `window_s`
// is shut out (gannf_admin.shut_out, sql/roles.sql: NOLOGIN, so it cannot
// come back) and its sessions are ended, in every database.
//
// A gannf-worker is never counted, whatever its speed; a student's short
// look at the tables (a few milliseconds) stays far below the limit. The
// watch runs on a thread with its own connection (the coordinator's login,
// which needs pg_read_all_stats and pg_signal_backend, sql/roles.sql), so a
// long update does not pause it; it reconnects when the server goes away.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pg.h"

namespace gannf::cluster {

struct CpuWatchOptions {
  std::string conninfo;
  double limit = 0.3;       // × window_s: the seconds a login's own SQL may run in a window; 0: not counted
  double call_limit = 1.0;  // × window_s: the seconds a login's gannf-worker calls may run on the CPU; 0: not counted
  double window_s = 10;
  double look_s = 0.1;
};

// What the watch did, for the coordinator to say (and strike: `login` is
// set when a login was shut out or its sessions ended).
struct CpuWatchEvent {
  std::string login;
  std::string line;
  double busy_s = 0;  // the seconds the login's SQL ran in the window, summed over its sessions
  bool shut_out = false;
  double calls_s = 0;  // of which a gannf-worker's own calls
};

// The busiest login's window so far: how close an honest class came to
// the limit (gannf-coord run says it when it ends).
struct CpuWatchPeak {
  std::string login;  // empty: nothing counted
  double share = 0;   // of the limit (1: shut out)
  double own = 0, calls = 0;  // seconds in the window, summed over the login's sessions
};

// Shuts `login` out: gannf_admin.shut_out (sql/roles.sql; NOLOGIN) where
// this database has it, then every session of the login ended, in every
// database. For the watch, and for the coordinator's other reasons (a
// prepared transaction left behind). Throws only when the connection is lost.
struct ShutOutcome {
  bool shut = false;     // NOLOGIN now
  int ended = 0;         // sessions ended
  std::string not_shut;  // why not, when not
};
ShutOutcome shut_out_login(pg::Connection& c, const std::string& login);

// `s` in one line of a log: control characters become '?'.
std::string one_line(const std::string& s);
// `s` as a SQL string literal a person can copy from a log line: 'a''b',
// or E'\x0a…' with every byte outside printable ASCII escaped (a hostile
// name's newlines, escapes or bidi characters).
std::string sql_literal(const std::string& s);

// The prepared transactions (PREPARE TRANSACTION) of worker logins, oldest
// first, in every database but the other runs' (as the watch looks): for the
// coordinator's reaper and gannf-coord status (docs/security.md, "Prepared
// transactions").
struct PreparedXact {
  std::string gid, login, database;
  double age_s = 0;
};
std::vector<PreparedXact> worker_prepared_xacts(pg::Connection& c);

class CpuWatch {
 public:
  explicit CpuWatch(CpuWatchOptions o);  // starts the thread
  ~CpuWatch();                           // stops it (at most ~2 s, even with the server unreachable)
  CpuWatch(const CpuWatch&) = delete;
  CpuWatch& operator=(const CpuWatch&) = delete;
  // What happened since the last call, oldest first.
  std::vector<CpuWatchEvent> take();
  CpuWatchPeak peak() const;

  struct State;

 private:
  std::shared_ptr<State> s_;
};

}  // namespace gannf::cluster
