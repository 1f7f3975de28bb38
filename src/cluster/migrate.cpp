#include "migrate.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <thread>

#include "blob.h"

namespace gannf::cluster {

namespace {

// pg_advisory_lock key: "gannf" in ASCII. Any program migrating this
// database takes it; other users of advisory locks are unlikely to pick it.
constexpr int64_t kMigrationLock = 0x67616e6e66;

// The version table itself is not a migration: it has to exist before the
// first one can be recorded.
constexpr const char* kBootstrap = R"sql(
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS gannf;
CREATE TABLE IF NOT EXISTS gannf.schema_migrations (
  version integer PRIMARY KEY,
  name text NOT NULL,
  checksum bigint NOT NULL,          -- CRC-32C of the file's text when applied
  applied_at timestamptz NOT NULL DEFAULT now(),
  applied_by name NOT NULL DEFAULT current_user
);
)sql";


// Held by another program migrating (it lets go in seconds), or by a
// student's session, which never does: that one is ended.
class AdvisoryLock {
 public:
  AdvisoryLock(pg::Connection& c, const std::function<void(const std::string&)>& log) : c_(c) {
    pg::Params p;
    p.add(kMigrationLock);
    auto look = std::chrono::steady_clock::now();  // for impostors: now, then every 5 s
    while (!c_.exec("SELECT pg_try_advisory_lock($1)", p).get<bool>(0, 0)) {
      if (std::chrono::steady_clock::now() >= look) {
        look += std::chrono::seconds(5);
        if (!end_lock_impostors(c_, kMigrationLock, "the migrations' lock", log).empty()) continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~AdvisoryLock() {
    try {
      pg::Params p;
      p.add(kMigrationLock);
      c_.exec("SELECT pg_advisory_unlock($1)", p);
    } catch (const pg::Error&) {
      // Connection gone: the server released the lock with the session.
    }
  }

 private:
  pg::Connection& c_;
};

}  // namespace

std::vector<LockHolder> lock_impostors(pg::Connection& c, int64_t key) {
  pg::Params p;
  p.add(key);
  // A bigint key is (classid, objid) = (high, low 32 bits), objsubid 1.
  pg::Result r = c.exec(
      "SELECT l.pid, a.usename::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
      "JOIN pg_roles ro ON ro.oid = a.usesysid "
      "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
      "AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database()) "
      "AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid "
      "AND ro.rolname <> current_user AND NOT ro.rolsuper",
      p);
  std::vector<LockHolder> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back({r.get<int32_t>(i, 0), r.get<std::string>(i, 1)});
  return out;
}

std::vector<LockHolder> end_lock_impostors(pg::Connection& c, int64_t key, const std::string& what,
                                           const std::function<void(const std::string&)>& log) {
  std::vector<LockHolder> ended;
  for (const LockHolder& h : lock_impostors(c, key)) {
    pg::Params p;
    p.add((int32_t)h.pid);
    try {
      // Waits up to 5 s for the session to end, and with it the lock.
      c.exec("SELECT pg_terminate_backend($1, 5000)", p);
      ended.push_back(h);
      if (log)
        log("ended session " + std::to_string(h.pid) + " of login " + h.login + ": it held " + what +
            ", which only the coordinator takes");
    } catch (const pg::Error& e) {
      if (log)
        log("session " + std::to_string(h.pid) + " of login " + h.login + " holds " + what +
            " and this login may not end it (" + e.what() + "): ask the database administrator");
    }
  }
  return ended;
}

int schema_version(pg::Connection& c) {
  pg::Result r = c.exec("SELECT to_regclass('gannf.schema_migrations') IS NOT NULL");
  if (!r.get<bool>(0, 0)) return 0;
  r = c.exec("SELECT coalesce(max(version), 0) FROM gannf.schema_migrations");
  return r.get<int32_t>(0, 0);
}

uint32_t migration_checksum(std::string_view sql) { return crc32c(sql.data(), sql.size()); }

std::vector<uint32_t> accepted_checksums(std::string_view sql) {
  constexpr std::string_view kMark = "-- accepts the checksum of its earlier text: ";
  std::vector<uint32_t> out = {migration_checksum(sql)};
  for (size_t at = sql.find(kMark); at != std::string_view::npos; at = sql.find(kMark, at + 1)) {
    uint64_t v = 0;
    size_t i = at + kMark.size();
    while (i < sql.size() && sql[i] >= '0' && sql[i] <= '9') v = v * 10 + (uint64_t)(sql[i++] - '0');
    if (i > at + kMark.size() && v <= UINT32_MAX) out.push_back((uint32_t)v);
  }
  return out;
}

MigrationReport migrate(pg::Connection& c, const std::function<void(const std::string&)>& log) {
  auto say = [&](const std::string& line) {
    if (log) log(line);
  };
  std::span<const Migration> all = migrations();
  const int newest = all.empty() ? 0 : all.back().version;

  pg::Result who = c.exec("SELECT rolsuper FROM pg_roles WHERE rolname = current_user");
  if (who.rows() == 1 && who.get<bool>(0, 0))
    say("warning: applying migrations as a superuser; the SECURITY DEFINER worker functions "
        "will run with superuser rights. Connect as the coordinator role (gannf_coord).");

  AdvisoryLock lock(c, log);
  {
    pg::Transaction tx(c);
    c.exec_script(kBootstrap);
    tx.commit();
  }

  std::map<int, std::pair<std::string, uint32_t>> applied;
  pg::Result r = c.exec("SELECT version, name, checksum FROM gannf.schema_migrations ORDER BY version");
  for (int i = 0; i < r.rows(); ++i)
    applied[r.get<int32_t>(i, 0)] = {r.get<std::string>(i, 1), (uint32_t)r.get<int64_t>(i, 2)};

  MigrationReport report;
  report.version_before = applied.empty() ? 0 : applied.rbegin()->first;
  if (report.version_before > newest)
    throw pg::Error("the database schema is at version " + std::to_string(report.version_before) +
                        ", newer than this program knows (" + std::to_string(newest) + ")",
                    "", "", "upgrade gannf on this machine to the coordinator's version");

  for (const Migration& m : all) {
    auto it = applied.find(m.version);
    if (it != applied.end()) {
      const std::vector<uint32_t> ok = accepted_checksums(m.sql);
      if (std::find(ok.begin(), ok.end(), it->second.second) == ok.end())
        say("warning: migration " + std::string(m.name) + " differs from the version applied to " +
            "this database (" + it->second.first + "); migrations must not change once released");
      continue;
    }
    try {
      pg::Transaction tx(c);
      c.exec("SET LOCAL client_min_messages = warning");
      c.exec_script(m.sql);
      pg::Params p;
      p.add((int32_t)m.version).add(m.name).add((int64_t)migration_checksum(m.sql));
      c.exec("INSERT INTO gannf.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)", p);
      tx.commit();
    } catch (const pg::Error& e) {
      throw pg::Error("migration " + std::string(m.name) + " failed: " + e.message(), e.sqlstate(),
                      e.detail(), e.hint(), e.constraint(), e.connection_lost());
    }
    report.applied.push_back(m.version);
    say("applied migration " + std::string(m.name));
  }
  report.version_after = schema_version(c);
  return report;
}

}  // namespace gannf::cluster
