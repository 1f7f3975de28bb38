#include "cpu_watch.h"

#include <libpq-fe.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "pg.h"
#include "worker_sql.h"

namespace gannf::cluster {

using Clock = std::chrono::steady_clock;

struct CpuWatch::State {
  CpuWatchOptions o;
  std::string calls;   // worker_sql::all() but the data statements, joined by chr(31): counted as calls
  std::string exempt;  // worker_sql::data(), joined by chr(31): never counted
  CpuWatchPeak peak;   // the busiest login's window so far
  std::mutex m;
  std::condition_variable cv;
  bool stop = false, done = false;
  PGconn* live = nullptr;  // the thread's connection, for shutdown() from ~CpuWatch
  std::vector<CpuWatchEvent> events;

  void add(CpuWatchEvent e) {
    std::lock_guard<std::mutex> l(m);
    events.push_back(std::move(e));
  }
  // Waits `s` seconds or until stopped; true when stopped.
  bool wait(double s) {
    std::unique_lock<std::mutex> l(m);
    return cv.wait_for(l, std::chrono::duration<double>(s), [&] { return stop; });
  }
};

// A login's name or a student's statement in one line of the coordinator's
// log: control characters (a hostile text's newlines, escapes) become '?'.
std::string one_line(const std::string& s) {
  std::string out;
  for (unsigned char ch : s) out += ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
  return out;
}

std::string sql_literal(const std::string& s) {
  bool plain = true;
  for (unsigned char ch : s) plain = plain && ch >= 0x20 && ch < 0x7f;
  std::string out = plain ? "'" : "E'";
  for (unsigned char ch : s) {
    if (ch == '\'') {
      out += "''";
    } else if (!plain && ch == '\\') {
      out += "\\\\";
    } else if (!plain && (ch < 0x20 || ch >= 0x7f)) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", ch);
      out += b;
    } else {
      out += (char)ch;
    }
  }
  return out + "'";
}

std::vector<PreparedXact> worker_prepared_xacts(pg::Connection& c) {
  pg::Result r = c.exec(
      "SELECT p.gid, p.owner::text, p.database::text, extract(epoch FROM now() - p.prepared)::float8 "
      "FROM pg_prepared_xacts p JOIN pg_roles ro ON ro.rolname = p.owner "
      "WHERE NOT ro.rolsuper AND ro.rolname <> current_user AND to_regrole('gannf_worker') IS NOT NULL "
      "AND pg_has_role(ro.oid, 'gannf_worker', 'MEMBER') "
      "AND (p.database = current_database() OR (SELECT d.datdba FROM pg_database d WHERE d.datname = p.database) "
      "IS DISTINCT FROM (SELECT o.oid FROM pg_roles o WHERE o.rolname = current_user)) "
      "ORDER BY p.prepared");
  std::vector<PreparedXact> out(r.rows());
  for (int i = 0; i < r.rows(); ++i)
    out[i] = {r.get<std::string>(i, 0), r.get<std::string>(i, 1), r.get<std::string>(i, 2), r.get<double>(i, 3)};
  return out;
}

ShutOutcome shut_out_login(pg::Connection& c, const std::string& login) {
  ShutOutcome o;
  pg::Params p;
  p.add(login);
  if (c.exec("SELECT to_regprocedure('gannf_admin.shut_out(text)') IS NOT NULL AND "
             "has_function_privilege('gannf_admin.shut_out(text)', 'EXECUTE')")
          .get<bool>(0, 0)) {
    try {
      o.shut = c.exec("SELECT gannf_admin.shut_out($1)", p).get<bool>(0, 0);
      if (!o.shut) o.not_shut = "it could not log in already";
    } catch (const pg::Error& e) {
      if (e.connection_lost()) throw;
      o.not_shut = e.message();
    }
  } else {
    o.not_shut = "gannf_admin.shut_out is missing from this database (an administrator runs sql/roles.sql again)";
  }
  // After NOLOGIN, so that no session ended here is replaced. In every
  // database of the server.
  o.ended = c.exec("SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid))::integer FROM pg_stat_activity a "
                   "JOIN pg_roles ro ON ro.oid = a.usesysid WHERE ro.rolname = $1 "
                   "AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() AND NOT ro.rolsuper",
                   p)
                .get<int32_t>(0, 0);
  return o;
}

namespace {

std::string fmt(const char* f, double x) {
  char b[32];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

// One look: the worker logins' sessions running statements, one row each:
// its own SQL (none of a gannf-worker's statements) or a gannf-worker's
// call (worker_sql.h) -- but those that move gradients and weights, whose
// time is bounded by the network and is the class's work. `counted`: the
// session adds to its login's sum -- own SQL while it runs on the CPU or
// waits for the disk or a buffer, a call only while on the CPU (a
// gannf-worker's commits wait for the disk). `busy`: a call's session is
// busy while it is counted, waits for the disk, or waits for a lock that
// another session of the same login holds (four sessions claiming back to
// back ran one at a time, the rest queued behind it). Never while waiting
// for anyone else's lock, a client, or a timer. Parallel workers count as
// sessions of their leader's login.
constexpr const char* kLook =
    "SELECT a.usename::text, a.pid, a.query = ANY (string_to_array($1, chr(31))), "
    "CASE WHEN a.query = ANY (string_to_array($1, chr(31))) THEN a.wait_event IS NULL "
    "ELSE a.wait_event_type IS DISTINCT FROM 'Lock' END, left(a.query, 80) "
    "FROM pg_stat_activity a JOIN pg_roles ro ON ro.oid = a.usesysid "
    "WHERE a.backend_type IN ('client backend', 'parallel worker') AND a.state = 'active' "
    "AND a.pid <> pg_backend_pid() "
    "AND (a.datname = current_database() OR (SELECT d.datdba FROM pg_database d WHERE d.oid = a.datid) "
    "IS DISTINCT FROM (SELECT r.oid FROM pg_roles r WHERE r.rolname = current_user)) "
    "AND (a.wait_event IS NULL OR a.wait_event_type IN ('IO', 'LWLock', 'BufferPin') "
    "OR (a.wait_event_type = 'Lock' AND a.query = ANY (string_to_array($1, chr(31))) "
    "AND EXISTS (SELECT FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid)) "
    "AND b.usesysid = a.usesysid))) "
    "AND NOT ro.rolsuper AND ro.rolname <> current_user AND pg_has_role(ro.oid, 'gannf_worker', 'MEMBER') "
    "AND NOT (a.query = ANY (string_to_array($2, chr(31))))";

struct Busy {
  Clock::time_point at;
  double own = 0, calls = 0;  // seconds of a core
};

// One session's busy time with calls, over the window.
struct Session {
  std::deque<std::pair<Clock::time_point, double>> busy;
  double sum = 0;
  std::string login;
};

struct Login {
  std::deque<Busy> busy;
  double own = 0, calls = 0;     // summed over the window
  std::string query, call;       // examples, for the line
  double session_busy = 0;       // its busiest session's calls, over the window
  double sum() const { return own + calls; }
};

// The login's share of what it may run: its own SQL against --student-sql-
// limit, a gannf-worker's calls against --worker-call-limit, added; or one
// session busy with calls for `session_busy` of the window, which no
// gannf-worker's session is (it computes between calls).
double share(const CpuWatchOptions& o, const Login& x) {
  const double sum = (o.limit > 0 ? x.own / (o.limit * o.window_s) : 0) +
                     (o.call_limit > 0 ? x.calls / (o.call_limit * o.window_s) : 0);
  return std::max(sum, o.call_limit > 0 ? x.session_busy / (o.session_busy * o.window_s) : 0);
}

// What the login ran past its limit, for the coordinator's line (`what`)
// and the strike (`reason`).
struct Offence {
  std::string what, reason;
};

Offence offence(const CpuWatchOptions& o, const Login& x) {
  if (x.session_busy >= o.session_busy * o.window_s - 1e-9)
    return {"one of its sessions was busy with a gannf-worker's calls (mostly '" + one_line(x.call) + "') " +
                fmt("%.1f", x.session_busy) + " s of the last " + fmt("%g", o.window_s) +
                " s, running or queued behind its own other sessions (a gannf-worker's session computes between "
                "calls), over the limit of " + fmt("%.1f", o.session_busy * o.window_s) +
                " s (gannf-coord run --worker-call-limit " + fmt("%g", o.call_limit) + "; 0: not counted)",
            "a session of it busy with a gannf-worker's calls " + fmt("%.0f", x.session_busy) + " s in 10 s"};
  const std::string own = "its own SQL (statements no gannf-worker sends, e.g. '" + one_line(x.query) + "') ran " +
                          fmt("%.1f", x.own) + " s";
  const std::string calls = "a gannf-worker's calls (uploads and weights aside), made far more often than a "
                            "gannf-worker makes them (mostly '" + one_line(x.call) + "'), ran " +
                            fmt("%.1f", x.calls) + " s on the CPU";
  // Each part that took a tenth of its limit or more (the larger always).
  const double own_share = o.limit > 0 ? x.own / (o.limit * o.window_s) : 0;
  const double calls_share = o.call_limit > 0 ? x.calls / (o.call_limit * o.window_s) : 0;
  const bool say_own = own_share >= calls_share || own_share >= 0.1;
  const bool say_calls = calls_share > own_share || calls_share >= 0.1;
  const bool both_limits = o.limit > 0 && o.call_limit > 0;
  return {(say_own && say_calls ? own + " and " + calls : say_own ? own : calls) + " in the last " +
              fmt("%g", o.window_s) + " s, summed over its sessions, over the limit of " +
              (o.limit > 0 ? fmt("%.1f", o.limit * o.window_s) + " s of its own SQL" : std::string()) +
              (both_limits ? " and " : "") +
              (o.call_limit > 0 ? fmt("%.1f", o.call_limit * o.window_s) + " s of calls" : std::string()) +
              (both_limits ? ", shares of each added" : "") + " (gannf-coord run --student-sql-limit " +
              fmt("%g", o.limit) + " --worker-call-limit " + fmt("%g", o.call_limit) + ")",
          say_own && say_calls ? "its own SQL and a gannf-worker's calls ran " + fmt("%.0f", x.sum()) + " s in 10 s"
          : say_own            ? "its own SQL ran " + fmt("%.0f", x.own) + " s in 10 s"
                               : "a gannf-worker's calls ran " + fmt("%.0f", x.calls) + " s in 10 s"};
}

void act(CpuWatch::State& s, pg::Connection& c, const std::string& login, const Login& x) {
  const ShutOutcome so = shut_out_login(c, login);
  const std::string who = one_line(login);
  const Offence off = offence(s.o, x);
  std::string line = "login " + who + (so.shut ? " shut out" : "") + ": " + off.what + "; " +
                     std::to_string(so.ended) + " session(s) ended";
  if (so.shut)
    line += ". It cannot log in until the instructor lets it in again: SELECT gannf_admin.admit_student('" + who + "')";
  else
    line += "; not shut out: " + one_line(so.not_shut);
  s.add({login, line, x.sum(), so.shut, off.reason});
}

void run(std::shared_ptr<CpuWatch::State> sp) {
  CpuWatch::State& s = *sp;
  const CpuWatchOptions& o = s.o;
  std::map<std::string, Login> logins;
  std::map<int32_t, Session> sessions;  // by pid
  std::string said;  // the last warning, said once until it changes
  auto warn = [&](const std::string& w) {
    if (w != said) s.add({"", "warning: the watch on the server's CPU: " + w});
    said = w;
  };
  while (true) {
    std::unique_ptr<pg::Connection> c;
    try {
      c = std::make_unique<pg::Connection>(o.conninfo);
      c->on_notice({});
      {
        std::lock_guard<std::mutex> l(s.m);
        if (s.stop) break;
        s.live = c->raw();
      }
      pg::Result r = c->exec(
          "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') "
          "AND pg_has_role(current_user, 'pg_signal_backend', 'USAGE'), to_regrole('gannf_worker') IS NOT NULL, "
          "to_regprocedure('gannf_admin.shut_out(text)') IS NOT NULL AND "
          "has_function_privilege('gannf_admin.shut_out(text)', 'EXECUTE')");
      if (!r.get<bool>(0, 0) || !r.get<bool>(0, 1)) {
        warn("off: this login cannot see or end other logins' sessions (pg_read_all_stats, pg_signal_backend) or "
             "there is no role gannf_worker; an administrator runs sql/roles.sql again");
        break;
      }
      const bool can_shut_out = r.get<bool>(0, 2);
      if (!can_shut_out)
        warn("gannf_admin.shut_out is missing from this database: a login whose own SQL keeps the server busy has "
             "its sessions ended but can come back (an administrator runs sql/roles.sql again)");
      Clock::time_point prev{};
      while (!s.wait(prev == Clock::time_point{} ? 0 : o.look_s)) {
        pg::Params p;
        p.add(s.calls).add(s.exempt);
        pg::Result look = c->exec(kLook, p);
        const Clock::time_point now = Clock::now();
        // The time since the previous look, bounded: a look delayed by a
        // busy server or a reconnection does not multiply what it saw.
        const double dt = prev == Clock::time_point{}
                              ? o.look_s
                              : std::min(std::chrono::duration<double>(now - prev).count(), 5 * o.look_s);
        prev = now;
        std::map<std::string, Busy> by_login;
        for (int i = 0; i < look.rows(); ++i) {
          const std::string login = look.get<std::string>(i, 0);
          const bool call = look.get<bool>(i, 2), counted = look.get<bool>(i, 3);
          Login& x = logins[login];
          Busy& b = by_login[login];
          b.at = now;
          if (counted) (call ? b.calls : b.own) += dt;
          if (!call) {
            x.query = look.opt<std::string>(i, 4).value_or("");
            continue;
          }
          x.call = look.opt<std::string>(i, 4).value_or("");
          Session& ss = sessions[look.get<int32_t>(i, 1)];
          ss.login = login;
          ss.busy.emplace_back(now, dt);
          ss.sum += dt;
        }
        for (const auto& [login, b] : by_login) {
          Login& x = logins[login];
          x.busy.push_back(b);
          x.own += b.own;
          x.calls += b.calls;
        }
        const auto since = now - std::chrono::duration<double>(o.window_s);
        for (auto& [login, x] : logins) x.session_busy = 0;
        for (auto it = sessions.begin(); it != sessions.end();) {
          Session& ss = it->second;
          while (!ss.busy.empty() && ss.busy.front().first < since) {
            ss.sum -= ss.busy.front().second;
            ss.busy.pop_front();
          }
          if (ss.busy.empty()) {
            it = sessions.erase(it);
            continue;
          }
          Login& x = logins[ss.login];
          x.session_busy = std::max(x.session_busy, ss.sum);
          ++it;
        }
        for (auto it = logins.begin(); it != logins.end();) {
          Login& x = it->second;
          while (!x.busy.empty() && x.busy.front().at < since) {
            x.own -= x.busy.front().own;
            x.calls -= x.busy.front().calls;
            x.busy.pop_front();
          }
          const double sh = share(o, x);
          if (sh > s.peak.share) {
            std::lock_guard<std::mutex> l(s.m);
            s.peak = {it->first, sh, x.own, x.calls, x.session_busy};
          }
          if (sh >= 1 - 1e-9) {
            act(s, *c, it->first, x);
            for (auto j = sessions.begin(); j != sessions.end();)
              j = j->second.login == it->first ? sessions.erase(j) : std::next(j);
            it = logins.erase(it);
          } else if (x.busy.empty() && x.session_busy == 0) {
            it = logins.erase(it);
          } else {
            ++it;
          }
        }
      }
      break;  // stopped
    } catch (const pg::Error& e) {
      if (!e.connection_lost()) warn(e.what());
    } catch (const std::exception& e) {
      warn(e.what());
    }
    {
      std::lock_guard<std::mutex> l(s.m);
      s.live = nullptr;
    }
    c.reset();
    if (s.wait(1)) break;
  }
  std::lock_guard<std::mutex> l(s.m);
  s.live = nullptr;
  s.done = true;
  s.cv.notify_all();
}

}  // namespace

CpuWatch::CpuWatch(CpuWatchOptions o) : s_(std::make_shared<State>()) {
  s_->o = std::move(o);
  const std::vector<std::string> data = worker_sql::data();
  for (const std::string& q : worker_sql::all()) {
    std::string& to = std::find(data.begin(), data.end(), q) == data.end() ? s_->calls : s_->exempt;
    to += (to.empty() ? "" : "\x1f") + q;
  }
  std::thread(run, s_).detach();
}

CpuWatch::~CpuWatch() {
  std::unique_lock<std::mutex> l(s_->m);
  s_->stop = true;
  // A statement in flight on an unreachable server would block for the
  // TCP timeout: the socket is shut, so libpq returns at once.
  if (s_->live) ::shutdown(PQsocket(s_->live), SHUT_RDWR);
  s_->cv.notify_all();
  s_->cv.wait_for(l, std::chrono::seconds(2), [&] { return s_->done; });
  // Not done (a connection attempt still waiting for its timeout): the
  // thread holds the state and ends on its own.
}

CpuWatchPeak CpuWatch::peak() const {
  std::lock_guard<std::mutex> l(s_->m);
  return s_->peak;
}

std::vector<CpuWatchEvent> CpuWatch::take() {
  std::lock_guard<std::mutex> l(s_->m);
  std::vector<CpuWatchEvent> out;
  out.swap(s_->events);
  return out;
}

}  // namespace gannf::cluster
