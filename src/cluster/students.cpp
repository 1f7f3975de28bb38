#include "students.h"

#include <libpq-fe.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace gannf::cluster {

namespace {

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

bool has_control(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char ch) { return ch < 0x20 || ch == 0x7f; });
}

// Shell single quotes: the hand-out's commands are pasted into a shell.
std::string shq(const std::string& s) {
  std::string r = "'";
  for (char ch : s) r += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return r + "'";
}

}  // namespace

std::string login_problem(const std::string& login) {
  if (login.empty()) return "an empty login";
  if (login.size() > 63) return "longer than 63 bytes (PostgreSQL would cut it)";
  if (!(std::islower((unsigned char)login[0]) || login[0] == '_'))
    return "must start with a lower-case letter or _";
  for (unsigned char ch : login)
    if (!(std::islower(ch) || std::isdigit(ch) || ch == '_'))
      return "only lower-case letters, digits and _ are allowed (PostgreSQL folds unquoted names to lower case)";
  if (login.rfind("pg_", 0) == 0) return "pg_ names are reserved by PostgreSQL";
  if (login.rfind("gannf_", 0) == 0 && login.rfind("gannf_test_", 0) != 0)
    return "gannf_ names are the class's own roles";
  static const std::set<std::string> reserved = {"public", "none", "postgres", "current_user",
                                                  "session_user", "current_role", "user"};
  if (reserved.count(login)) return "a reserved role name";
  return "";
}

std::vector<Student> parse_roster(const std::string& text, const std::string& name) {
  std::vector<Student> out;
  std::set<std::string> seen;
  std::istringstream in(text);
  std::string raw;
  int line = 0;
  auto bad = [&](const std::string& why) {
    throw RosterError(name + ":" + std::to_string(line) + ": " + why + "; nothing was created");
  };
  while (std::getline(in, raw)) {
    ++line;
    if (line == 1 && raw.rfind("\xEF\xBB\xBF", 0) == 0) raw = raw.substr(3);  // a spreadsheet's BOM
    if (!raw.empty() && raw.back() == '\r') raw.pop_back();
    const std::string l = trim(raw);
    if (l.empty() || l[0] == '#') continue;
    std::string printable = raw;  // a tab may separate the plain format's fields
    std::replace(printable.begin(), printable.end(), '\t', ' ');
    if (has_control(printable)) bad("a control character");
    Student s;
    s.line = line;
    if (l.find(',') != std::string::npos) {
      std::vector<std::string> f;
      std::stringstream ss(l);
      for (std::string x; std::getline(ss, x, ',');) f.push_back(trim(x));
      if (f.size() > 3) bad("more than three fields (login, display name, email)");
      if (out.empty() && seen.empty() && f[0] == "login") continue;  // a header
      s.login = f[0];
      if (f.size() > 1) s.display_name = f[1];
      if (f.size() > 2) s.email = f[2];
    } else {
      const auto sp = l.find_first_of(" \t");
      s.login = l.substr(0, sp);
      if (sp != std::string::npos) s.display_name = trim(l.substr(sp));
    }
    if (has_control(s.display_name) || has_control(s.email)) bad("a control character");
    if (const std::string why = login_problem(s.login); !why.empty())
      bad(std::string("'").append(s.login, 0, 80).append("' is not a valid login: ").append(why));  // GCC 12: a false -Wrestrict on "'" + temporary
    if (!seen.insert(s.login).second) bad("'" + s.login + "' is listed twice");
    out.push_back(std::move(s));
  }
  if (out.empty()) throw RosterError(name + ": no students (one login per line)");
  return out;
}

std::string generate_password() {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::ifstream f("/dev/urandom", std::ios::binary);
  if (!f) throw std::runtime_error("cannot read /dev/urandom for the students' passwords");
  std::string p;
  while (p.size() < 24) {
    unsigned char b = 0;
    if (!f.read(reinterpret_cast<char*>(&b), 1)) throw std::runtime_error("cannot read /dev/urandom");
    if (b < 248) p += kAlphabet[b % 62];  // 248 = 4·62: no bias toward the first letters
  }
  return p;
}

std::string handout_conninfo(const HandoutTarget& t, const std::string& login) {
  return "host=" + t.host + " port=" + t.port + " dbname=" + t.dbname + " user=" + login + " sslmode=" + t.sslmode;
}

std::string handout_url(const HandoutTarget& t, const std::string& login) {
  return "postgresql://" + login + "@" + t.host + ":" + t.port + "/" + t.dbname + "?sslmode=" + t.sslmode;
}

std::string pgpass_line(const HandoutTarget& t, const std::string& login, const std::string& password) {
  // generate_password() and login_problem() keep ':' and '\' out of both.
  return t.host + ":" + t.port + ":" + t.dbname + ":" + login + ":" + password;
}

std::string handout_text(const HandoutTarget& t, const Student& s, const std::string& password) {
  const std::string db = handout_conninfo(t, s.login);
  std::ostringstream o;
  o << "gannf: your login for the class's training cluster\n\n"
    << "  login     " << s.login << (s.display_name.empty() ? "" : "  (" + s.display_name + ")") << "\n"
    << "  password  " << password << "\n"
    << "  database  " << t.host << ":" << t.port << "/" << t.dbname << " (sslmode=" << t.sslmode << ")\n\n"
    << "Keep this file to yourself; the instructor cannot show the password again (only set a new one).\n\n"
    << "1. Once, on your machine: store the password where libpq (every PostgreSQL client) finds it\n\n"
    << "     printf '%s\\n' " << shq(pgpass_line(t, s.login, password))
    << " >> ~/.pgpass && chmod 600 ~/.pgpass\n\n";
  if (t.ca_cert)
    o << "   and the class's server certificate authority (root.crt, handed out with this file):\n\n"
      << "     mkdir -p ~/.postgresql && cp root.crt ~/.postgresql/root.crt\n\n";
  o << "2. Then ONE of these:\n\n"
    << "   Container (Docker or Podman, any OS; the image " << t.image << " from your instructor):\n\n"
    << "     read -rs PGPASSWORD && export PGPASSWORD     (type the password above, then Enter)\n"
    << "     docker run --rm -it -e PGPASSWORD"
    << (t.ca_cert ? " -v \"$HOME/.postgresql:/home/gannf/.postgresql:ro\"" : "") << " " << t.image
    << " gannf-worker --backend cpu --db " << shq(db) << "\n\n"
    << "   (The password goes in by name, -e PGPASSWORD, so it is on no command line; a mounted\n"
    << "   .pgpass would have to belong to the container's user.)\n\n"
    << "   Colab (a browser only): open notebooks/gannf_colab.ipynb in Colab"
    << (t.repo.empty() ? "" : " (from " + t.repo + "; set GANNF_REPO = \"" + t.repo + "\" in its Parameters cell)")
    << ",\n   add these secrets (the key icon, notebook access on), then Runtime > Run all:\n\n"
    << "     GANNF_DB_URL       " << handout_url(t, s.login)
    << (t.ca_cert ? "&sslrootcert=/content/root.crt   (upload root.crt to /content)" : "") << "\n"
    << "     GANNF_DB_PASSWORD  " << password << "\n\n"
    << "   Native (Linux; a build of gannf" << (t.repo.empty() ? "" : " from " + t.repo)
    << ", its build/tools on your PATH):\n\n"
    << "     gannf-worker --backend auto --db " << shq(db) << "\n\n"
    << "The worker needs the run's dataset on your machine (--dataset DIR if it is not at the run's path).\n"
    << "Ctrl-C stops it; the unit it holds goes back to the class.\n";
  return o.str();
}

LoginState login_state(pg::Connection& c, const std::string& login) {
  pg::Params p;
  p.add(login);
  pg::Result r = c.exec(
      "SELECT r.rolcanlogin, "
      "       NOT r.rolsuper AND NOT r.rolcreaterole AND NOT r.rolcreatedb AND NOT r.rolreplication "
      "       AND NOT r.rolbypassrls AND EXISTS (SELECT FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
      "                                     WHERE m.member = r.oid AND g.rolname = 'gannf_worker') "
      "  FROM pg_roles r WHERE r.rolname = $1",
      p);
  if (r.rows() == 0) return LoginState::Absent;
  if (!r.get<bool>(0, 1)) return LoginState::Other;
  return r.get<bool>(0, 0) ? LoginState::Student : LoginState::DisabledStudent;
}

namespace {

// The SCRAM-SHA-256 verifier, computed by libpq on this machine.
std::string scram_verifier(pg::Connection& c, const std::string& login, const std::string& password) {
  char* v = PQencryptPasswordConn(c.raw(), password.c_str(), login.c_str(), "scram-sha-256");
  if (!v) throw std::runtime_error("cannot encrypt a password: " + std::string(PQerrorMessage(c.raw())));
  std::string s(v);
  PQfreemem(v);
  return s;
}

// The password goes as its SCRAM verifier (PostgreSQL stores a verifier as
// given): its clear text never reaches the server or its logs.
void admit_student(pg::Connection& c, const std::string& login, const std::string& password,
                   int connection_limit) {
  if (!c.exec("SELECT to_regprocedure('gannf_admin.admit_student(text, text, integer)') IS NOT NULL")
           .get<bool>(0, 0))
    throw std::runtime_error("no function gannf_admin.admit_student on " + c.describe() +
                             ": run sql/roles.sql there first, as the database administrator (it sets the limits "
                             "every student login gets)");
  pg::Params p;
  p.add(login);
  p.add(scram_verifier(c, login, password));
  p.add((int32_t)connection_limit);
  c.exec("SELECT gannf_admin.admit_student($1, $2, $3)", p);
}

}  // namespace

void create_student_login(pg::Connection& c, const std::string& login, const std::string& password,
                          int connection_limit) {
  admit_student(c, login, password, connection_limit);
}

void reset_student_password(pg::Connection& c, const std::string& login, const std::string& password,
                            int connection_limit) {
  admit_student(c, login, password, connection_limit);
}

RemoveOutcome remove_student_login(pg::Connection& c, const std::string& login, bool drop) {
  const LoginState st = login_state(c, login);
  if (st == LoginState::Absent) throw std::runtime_error("no login '" + login + "'");
  if (st == LoginState::Other)
    throw std::runtime_error("'" + login + "' is not a student login (not a plain member of gannf_worker); left alone");
  RemoveOutcome o;
  const std::string id = c.quote_identifier(login);
  // First NOLOGIN, committed, so that a worker whose session ends below
  // cannot log in again before its units are freed.
  c.exec("ALTER ROLE " + id + " NOLOGIN");
  pg::Params p;
  p.add(login);
  o.sessions_ended =
      (int)c.exec("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
                  p)
          .get<int64_t>(0, 0);
  if (c.exec("SELECT to_regclass('gannf.work_units') IS NOT NULL").get<bool>(0, 0)) {
    pg::Params q;
    q.add(login);
    // Locked in id order before they are freed, as every statement that
    // locks several units does (sql/0032): freed in the order the scan met
    // them, they deadlocked (40P01) with the coordinator's close.
    o.units_freed = (int)c.exec(
                             "WITH held AS MATERIALIZED (SELECT u.id FROM gannf.work_units u "
                             "  JOIN gannf.workers w ON w.id = u.worker_id WHERE w.login = $1 AND u.state = 'claimed' "
                             "  ORDER BY u.id FOR NO KEY UPDATE OF u), "
                             "freed AS (UPDATE gannf.work_units u SET state = 'available', visible_at = gannf.now() "
                             "  FROM held h WHERE u.id = h.id AND u.state = 'claimed' RETURNING u.id) "
                             "SELECT count(*) FROM freed",
                             q)
                         .get<int64_t>(0, 0);
  }
  if (drop) c.exec("DROP ROLE " + id);
  return o;
}

}  // namespace gannf::cluster
