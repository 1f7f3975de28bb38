#include "deadlock.h"

#include <cctype>
#include <cstring>
#include <map>
#include <optional>
#include <set>

namespace gannf::cluster {

std::vector<std::string> end_deadlocked_sessions(pg::Connection& c, const std::string& detail) {
  std::vector<std::string> said;
  // DETAIL: one line per process of the cycle, "Process A waits for ... on
  // transaction X; blocked by process B." (or a tuple, an advisory lock):
  // every pid, and where named, the transaction each blocker held.
  std::set<int32_t> pids;
  std::map<int32_t, std::string> held;
  auto number_after = [&](size_t from, const char* what, size_t limit) -> std::optional<std::string> {
    const size_t at = detail.find(what, from);
    if (at == std::string::npos || at > limit) return std::nullopt;
    size_t b = at + std::strlen(what), e = b;
    while (e < detail.size() && std::isdigit((unsigned char)detail[e])) ++e;
    if (e == b || e - b > 10) return std::nullopt;
    return detail.substr(b, e - b);
  };
  for (size_t line = 0; line < detail.size();) {
    size_t next = detail.find('\n', line);
    if (next == std::string::npos) next = detail.size();
    const auto waiter = number_after(line, "rocess ", next);
    const auto xid = number_after(line, "on transaction ", next);
    const auto blocker = number_after(line, "blocked by process ", next);
    if (waiter) pids.insert((int32_t)std::stol(*waiter));
    if (blocker) {
      pids.insert((int32_t)std::stol(*blocker));
      if (xid) held[(int32_t)std::stol(*blocker)] = *xid;
    }
    line = next + 1;
  }
  // Now, on the server's clock: the cycle's transactions all began before.
  const std::string after = c.exec("SELECT statement_timestamp()::text").get<std::string>(0, 0);
  for (const int32_t pid : pids) {
    pg::Params p;
    p.add(pid);
    if (held.count(pid)) p.add(held[pid]); else p.null();
    p.add(after);
    // One statement: a session that has left the transaction of the cycle
    // (the coordinator's side was ended, so it went on, committed and may
    // make single calls now) is not ended for what it no longer holds. Where
    // the DETAIL names the transaction it held, that must still be its own.
    // Where it does not (a waiter, or a lock on a tuple or an advisory key),
    // the session must be idle in a transaction that began before now. A
    // running session is not judged by its timestamps: a single call in
    // the extended protocol (Parse, Bind, Execute) starts its transaction at
    // Parse and its query at Execute, so its xact_start is before its
    // query_start as a kept transaction's is -- and gannf-coord ended a
    // student's single submit() so, beside a class of fuzzing students
    // (seed 803 of AClassOfStudentsCallingAnythingBesideARealClass...).
    // pg_terminate_backend() in the target list runs only for the row the
    // WHERE keeps (in the WHERE it might run first, on any session).
    pg::Result r = c.exec(
        "SELECT a.usename::text, pg_terminate_backend(a.pid, 5000) FROM pg_stat_activity a "
        "WHERE a.pid = $1 AND a.pid <> pg_backend_pid() AND a.datname = current_database() "
        "AND pg_has_role(a.usesysid, 'gannf_worker', 'MEMBER') "
        "AND CASE WHEN $2::text IS NOT NULL "
        "         THEN a.backend_xid::text = $2::text "
        "              AND (a.xact_start < a.query_start OR a.state LIKE 'idle in transaction%') "
        "         ELSE a.state LIKE 'idle in transaction%' AND a.xact_start < $3::timestamptz END",
        p);
    if (r.rows() != 1 || !r.get<bool>(0, 1)) continue;
    const std::string login = r.get<std::string>(0, 0);
    pg::Params s;
    s.add(login).add("session " + std::to_string(pid) +
                     " ended: it held a transaction across calls into a deadlock with the coordinator");
    const bool quarantined = c.exec("SELECT gannf.strike($1::name, $2)", s).get<bool>(0, 0);
    said.push_back("ended session " + std::to_string(pid) + " of login " + login +
                   ": it held a transaction across calls into a deadlock with the coordinator (a strike)" +
                   (quarantined ? "; the login is quarantined" : ""));
  }
  return said;
}

}  // namespace gannf::cluster
