// Student logins for a class: `gannf-coord add-students ROSTER` and
// `remove-students` (tools/coord_students.cpp is their command line).
//
// Roles belong to the whole server, so these run on an administrator's
// connection (the one that ran sql/roles.sql), never as gannf_coord: a
// coordinator able to create roles would hand that power to every
// SECURITY DEFINER function the workers call. A login is created with a
// SCRAM verifier computed here (PQencryptPasswordConn), so the password
// itself never reaches the server, its logs or pg_stat_activity.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "pg.h"

namespace gannf::cluster {

struct RosterError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Student {
  std::string login;         // a PostgreSQL role name, validated by login_problem()
  std::string display_name;  // optional, only written into the hand-out
  std::string email;         // optional, idem
  int line = 0;              // in the roster, for messages
};

// A roster: one student per line, `login[,display name[,email]]` (CSV, a
// header line starting with "login" is skipped) or `login [display name]`
// (plain). Blank lines and lines starting with # are skipped. Throws
// RosterError naming the file and line of the first bad entry (an invalid
// login, a control character, a duplicate); nothing is created then.
std::vector<Student> parse_roster(const std::string& text, const std::string& name);

// Why `login` cannot be a student login, or "" when it can: lower-case
// letters, digits and _, not starting with a digit, at most 63 bytes (so it
// is the same name quoted or not and in every client), and none of the
// server's reserved or gannf's own role names.
std::string login_problem(const std::string& login);

// 24 characters from [A-Za-z0-9] read from /dev/urandom (about 143 bits);
// no character that .pgpass, a URI or a shell would need to escape.
std::string generate_password();

// Where students connect, as written into the hand-outs.
struct HandoutTarget {
  std::string host;                     // the name students use (and the server certificate's)
  std::string port = "5432";
  std::string dbname = "gannf";
  std::string sslmode = "verify-full";
  std::string image = "gannf-worker:cpu";   // the container image the class uses
  std::string repo;                     // where the class's gannf source is (Colab, native)
  bool ca_cert = false;                 // a root.crt is handed out beside the hand-out
};

// `host=… port=… dbname=… user=… sslmode=…` (no password: it is in .pgpass).
std::string handout_conninfo(const HandoutTarget& t, const std::string& login);
// postgresql://login@host:port/dbname?sslmode=… (what the Colab notebook takes).
std::string handout_url(const HandoutTarget& t, const std::string& login);
// host:port:dbname:login:password, libpq's ~/.pgpass format.
std::string pgpass_line(const HandoutTarget& t, const std::string& login, const std::string& password);
// The whole hand-out: the password once, the .pgpass line, and the
// container, Colab and native commands.
std::string handout_text(const HandoutTarget& t, const Student& s, const std::string& password);

// What the database has for a login.
enum class LoginState { Absent, Student, DisabledStudent, Other };
LoginState login_state(pg::Connection& c, const std::string& login);

// Both below go through sql/roles.sql's gannf_admin.admit_student, the one
// source of a student login's limits (connection limit, temp_file_limit,
// statement, idle-in-transaction and lock timeouts, work_mem): add-students
// and an instructor's psql give a login the same. Refused, naming roles.sql,
// on a server where it is missing.
// CREATE ROLE … LOGIN IN ROLE gannf_worker with a SCRAM verifier of
// `password`, or (reset) a new password for an existing student login,
// which also enables it again. Runs in the caller's transaction.
void create_student_login(pg::Connection& c, const std::string& login, const std::string& password,
                          int connection_limit);
void reset_student_password(pg::Connection& c, const std::string& login, const std::string& password,
                            int connection_limit);

struct RemoveOutcome {
  int sessions_ended = 0;  // backends of the login terminated
  int units_freed = 0;     // claimed units made available to others at once
};
// Disables the login (NOLOGIN, so it cannot come back), ends its sessions,
// frees the units its workers hold (when this database has gannf's schema)
// and, with `drop`, drops the role. Throws for a login that is not a student.
RemoveOutcome remove_student_login(pg::Connection& c, const std::string& login, bool drop);

}  // namespace gannf::cluster
