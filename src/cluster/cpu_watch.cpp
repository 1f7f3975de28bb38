#include "cpu_watch.h"

#include <libpq-fe.h>
#include <sys/socket.h>

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
  std::string allowed;  // worker_sql::all(), joined by chr(31)
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

// One look: the worker logins' sessions running their own SQL, by login.
// A session counts while it runs on the CPU or waits for the disk or a
// buffer (not for a lock, a client, or a timer); parallel workers count as
// sessions of their leader's login. The coordinator's own login and
// superusers are never counted. Every database of the server, except the
// other runs' (owned by the coordinator's login too: their coordinators
// watch them) -- a student's login reaches `postgres` as well.
constexpr const char* kLook =
    "SELECT a.usename::text, count(*)::integer, max(left(a.query, 80)) FROM pg_stat_activity a "
    "JOIN pg_roles ro ON ro.oid = a.usesysid "
    "WHERE a.backend_type IN ('client backend', 'parallel worker') AND a.state = 'active' "
    "AND a.pid <> pg_backend_pid() "
    "AND (a.datname = current_database() OR (SELECT d.datdba FROM pg_database d WHERE d.oid = a.datid) "
    "IS DISTINCT FROM (SELECT r.oid FROM pg_roles r WHERE r.rolname = current_user)) "
    "AND (a.wait_event IS NULL OR a.wait_event_type IN ('IO', 'LWLock', 'BufferPin')) "
    "AND NOT ro.rolsuper AND ro.rolname <> current_user AND pg_has_role(ro.oid, 'gannf_worker', 'MEMBER') "
    "AND NOT (a.query = ANY (string_to_array($1, chr(31)))) "
    "GROUP BY a.usename";

struct Login {
  std::deque<std::pair<Clock::time_point, double>> busy;  // look, seconds of a core
  double sum = 0;
  std::string query;  // an example, for the line
};

void act(CpuWatch::State& s, pg::Connection& c, const std::string& login, const Login& x) {
  const CpuWatchOptions& o = s.o;
  const ShutOutcome so = shut_out_login(c, login);
  const bool shut = so.shut;
  const int ended = so.ended;
  const std::string& not_shut = so.not_shut;
  const std::string who = one_line(login);
  std::string line = "login " + who + (shut ? " shut out" : "") + ": its own SQL (statements no gannf-worker sends, e.g. '" +
                     one_line(x.query) + "') ran " + fmt("%.1f", x.sum) + " s in the last " + fmt("%g", o.window_s) +
                     " s, summed over its sessions, over the limit of " + fmt("%.1f", o.limit * o.window_s) +
                     " s (gannf-coord run --student-sql-limit " + fmt("%g", o.limit) + "); " + std::to_string(ended) +
                     " session(s) ended";
  if (shut)
    line += ". It cannot log in until the instructor lets it in again: SELECT gannf_admin.admit_student('" + who + "')";
  else
    line += "; not shut out: " + one_line(not_shut);
  s.add({login, line, x.sum, shut});
}

void run(std::shared_ptr<CpuWatch::State> sp) {
  CpuWatch::State& s = *sp;
  const CpuWatchOptions& o = s.o;
  std::map<std::string, Login> logins;
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
        p.add(s.allowed);
        pg::Result look = c->exec(kLook, p);
        const Clock::time_point now = Clock::now();
        // The time since the previous look, bounded: a look delayed by a
        // busy server or a reconnection does not multiply what it saw.
        const double dt = prev == Clock::time_point{}
                              ? o.look_s
                              : std::min(std::chrono::duration<double>(now - prev).count(), 5 * o.look_s);
        prev = now;
        for (int i = 0; i < look.rows(); ++i) {
          Login& x = logins[look.get<std::string>(i, 0)];
          const double b = look.get<int32_t>(i, 1) * dt;
          x.busy.emplace_back(now, b);
          x.sum += b;
          x.query = look.opt<std::string>(i, 2).value_or("");
        }
        for (auto it = logins.begin(); it != logins.end();) {
          Login& x = it->second;
          while (!x.busy.empty() && x.busy.front().first < now - std::chrono::duration<double>(o.window_s)) {
            x.sum -= x.busy.front().second;
            x.busy.pop_front();
          }
          if (x.sum >= o.limit * o.window_s - 1e-9) {
            act(s, *c, it->first, x);
            it = logins.erase(it);
          } else if (x.busy.empty()) {
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
  for (const std::string& q : worker_sql::all()) s_->allowed += (s_->allowed.empty() ? "" : "\x1f") + q;
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

std::vector<CpuWatchEvent> CpuWatch::take() {
  std::lock_guard<std::mutex> l(s_->m);
  std::vector<CpuWatchEvent> out;
  out.swap(s_->events);
  return out;
}

}  // namespace gannf::cluster
