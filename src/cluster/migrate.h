// Schema migrations (docs/architecture.md, Database): the numbered files of sql/
// (0001_schema.sql, ...) are compiled into the program (CMake turns them into
// raw string literals, see embed_sql.cmake), so a binary carries the schema
// it expects and needs no source tree. migrate() applies the missing ones in
// order, each in its own transaction together with its row in
// gannf.schema_migrations, under an advisory lock so that several programs
// starting at once apply each file exactly once.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pg.h"

namespace gannf::cluster {

struct Migration {
  int version;             // the file's number
  std::string_view name;   // the file's name, "0001_schema.sql"
  std::string_view sql;
};

// The migrations compiled into this program, by ascending version.
std::span<const Migration> migrations();

// The checksum a database records for a migration's text, and the ones a
// file also accepts: a released migration changes only in its comments, and
// then names its earlier text's checksum on a line
// "-- accepts the checksum of its earlier text: N" (sql/README.md), so that
// databases migrated from that text do not warn.
uint32_t migration_checksum(std::string_view sql);
std::vector<uint32_t> accepted_checksums(std::string_view sql);

struct MigrationReport {
  int version_before = 0;     // highest version applied before (0: none)
  int version_after = 0;
  std::vector<int> applied;   // versions this call applied
};

// Brings the database to the newest schema this program knows. Run it as
// the coordinator role (it becomes the owner of everything). Throws pg::Error
// when a migration fails (nothing of that file stays) or when the database
// is newer than this program. `log` receives one line per applied file and
// warnings (a file changed after it was applied; running as a superuser).
MigrationReport migrate(pg::Connection& c, const std::function<void(const std::string&)>& log = {});

// Highest applied version, 0 when the schema is not there at all.
int schema_version(pg::Connection& c);

// The sessions of other logins (not c's own, not a superuser) that hold
// session-level advisory lock `key` in c's database: what only the
// coordinator's login takes (its lock, the migrations'). PostgreSQL lets any
// login take any key, and sql/roles.sql's section for database gannf takes
// that from students only where it has run (docs/security.md).
struct LockHolder {
  int pid = 0;
  std::string login;
};
std::vector<LockHolder> lock_impostors(pg::Connection& c, int64_t key);

// Ends those sessions (pg_terminate_backend; the coordinator's login has
// pg_signal_backend, sql/roles.sql), one line each to `log`, and returns
// them; a login that may not end them gets a line saying who holds the key.
std::vector<LockHolder> end_lock_impostors(pg::Connection& c, int64_t key, const std::string& what,
                                           const std::function<void(const std::string&)>& log);

}  // namespace gannf::cluster
