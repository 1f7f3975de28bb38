// The coordinator's watch on the server's CPU (docs/security.md, "The
// server's CPU").
//
// PostgreSQL bounds no session's CPU, and a worker login may run any SELECT
// of built-in functions: four sessions of one student counting a cross join
// made a class 1.75-2.43x slower (bench/cpu_hog.sh). Ten looks a second at
// pg_stat_activity count, per worker login, two things, each session found
// running adding the time since the previous look:
//   - its own SQL: statements that are none of a gannf-worker's
//     (worker_sql.h), running on the CPU or waiting for the disk or a
//     buffer (not for a lock, a client, or a timer);
//   - a gannf-worker's calls, uploads and weights aside (worker_sql::data():
//     their time is bounded by the network and is the class's work), only
//     while on the CPU: byte for byte the worker's text, sent back to back
//     in libpq's pipeline mode, the state query made a class 2.06x slower.
//     A gannf-worker has one statement in flight on a connection and
//     computes between calls, and its commits wait for the disk (not
//     counted); a tiny class's busiest login used about a fifth of the limit.
// Parallel workers count as sessions of their leader's login, in every
// database of the server but the other runs' (those the coordinator's login
// owns: their own coordinators watch them). Summed over its sessions, that
// is seconds of a core on a server with a core to spare for each. A login
// whose own SQL ran `limit` x `window_s` seconds in the last `window_s`, or
// whose calls ran `call_limit` x `window_s` -- the two shares added -- is
// shut out (gannf_admin.shut_out, sql/roles.sql: NOLOGIN, so it cannot come
// back) and its sessions are ended, in every database.
//
// The watch runs on a thread with its own connection (the coordinator's
// login, which needs pg_read_all_stats and pg_signal_backend, sql/roles.sql),
// so a long update does not pause it; it reconnects when the server goes
// away.
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
  double session_busy = 0.8;  // × window_s: the seconds one session may be busy with calls (with call_limit > 0)
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
  std::string reason;  // for the strike: "its own SQL ran 3 s in 10 s", …
};

// The busiest login's window so far: how close an honest class came to
// the limit (gannf-coord run says it when it ends).
struct CpuWatchPeak {
  std::string login;  // empty: nothing counted
  double share = 0;   // of the limit (1: shut out)
  double own = 0, calls = 0;  // seconds in the window, summed over the login's sessions
  double session_busy = 0;    // seconds its busiest session was busy with calls in the window
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
