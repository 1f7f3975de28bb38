// gannf-coord add-students ROSTER / remove-students ROSTER: the command lines
// over src/cluster/students.h. Nothing secret is printed or logged: passwords
// go only into the hand-outs (mode 0600, in a folder of mode 0700).
#include "coord_students.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli.h"
#include "pg.h"
#include "students.h"

namespace gannf {

namespace fs = std::filesystem;
using namespace gannf::cluster;

namespace {

void say(const std::string& l) { std::fprintf(stderr, "gannf-coord: %s\n", l.c_str()); }

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot read the roster");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Written with mode 0600 from the first byte (never readable by others, not
// even briefly).
void write_private(const fs::path& p, const std::string& text) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error(p.string() + ": cannot write the hand-out");
  bool ok = ::fchmod(fd, 0600) == 0;
  for (size_t off = 0; ok && off < text.size();) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    ok = n > 0;
    off += n > 0 ? (size_t)n : 0;
  }
  ok = ::close(fd) == 0 && ok;
  if (!ok) throw std::runtime_error(p.string() + ": cannot write the hand-out");
}

std::string conninfo_of(const std::string& db, const Config& cfg) { return db.empty() ? cfg.conninfo() : db; }

const char* kAddUsage =
    "usage: gannf-coord add-students ROSTER [options]\n"
    "Creates a login in gannf_worker for every student of ROSTER, with a generated password, and\n"
    "writes one hand-out per student into --out (mode 0600): the password, a ~/.pgpass line and the\n"
    "container, Colab and native commands. Run it as an administrator of the server (who ran\n"
    "sql/roles.sql; --db 'user=postgres ...'), not as gannf_coord. Logins already there are skipped\n"
    "(--reset-passwords gives them new passwords). Nothing secret is printed.\n"
    "ROSTER: one student per line, 'login[,display name[,email]]' (CSV) or 'login [display name]';\n"
    "logins are lower-case letters, digits and _.";

}  // namespace

int cmd_add_students(int argc, char** argv, const Config& cfg) {
  std::string config_path, db, roster, out = "handouts", ca_cert;
  HandoutTarget t;
  t.port.clear();
  t.dbname.clear();
  int connection_limit = 4;
  bool reset = false;
  cli::Parser p("gannf-coord add-students", kAddUsage);
  p.opt("config", &config_path, "YAML configuration (its database section is the connection)");
  p.opt("db", &db, "an administrator's connection to the class's database (libpq string or URI)");
  p.positional("roster", &roster, "the roster file");
  p.opt("out", &out, "folder for the hand-outs, one LOGIN.txt per student");
  p.opt("host", &t.host, "the server's name as students reach it (default: the --db connection's host)");
  p.opt("port", &t.port, "the server's port for students (default: the connection's)");
  p.opt("dbname", &t.dbname, "the database for students (default: the connection's)");
  p.opt("sslmode", &t.sslmode, "the students' sslmode (verify-full: TLS, and the server's name checked)");
  p.opt("ca-cert", &ca_cert, "the server certificate's CA; handed out as root.crt beside the hand-outs");
  p.opt("image", &t.image, "the worker container image the class uses");
  p.opt("repo", &t.repo, "where students get gannf's source (git URL), for the Colab and native paths");
  p.opt("connection-limit", &connection_limit, "connections each login may hold (a worker uses 2)");
  p.flag("reset-passwords", &reset, "give logins that exist already a new password (and a new hand-out)");
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (roster.empty()) throw cli::Error("no roster: gannf-coord add-students ROSTER (see --help)");
  if (connection_limit < 1) throw cli::Error("--connection-limit must be at least 1");
  if (!ca_cert.empty() && !fs::is_regular_file(ca_cert)) throw cli::Error("--ca-cert: no file " + ca_cert);
  const auto students = parse_roster(read_text(roster), roster);

  pg::Connection c(conninfo_of(db, cfg));
  if (t.host.empty()) {
    const std::string h = PQhost(c.raw()) ? PQhost(c.raw()) : "";
    if (h.empty() || h[0] == '/' || h == "localhost" || h == "127.0.0.1" || h == "::1")
      throw cli::Error("connected through " + (h.empty() ? std::string("a local socket") : h) +
                       ": give --host with the server's name as students reach it (its certificate's name)");
    t.host = h;
  }
  if (t.port.empty()) t.port = PQport(c.raw());
  if (t.dbname.empty()) t.dbname = PQdb(c.raw());
  t.ca_cert = !ca_cert.empty();
  if (c.exec("SELECT count(*) FROM pg_roles WHERE rolname = 'gannf_worker'").get<int64_t>(0, 0) == 0)
    throw std::runtime_error("no role gannf_worker on " + c.describe() + ": run sql/roles.sql there first");

  // Every login checked before anything changes: a roster naming a role that
  // is not a student's (an administrator, gannf_coord) changes nothing.
  std::vector<const Student*> create, renew, skipped;
  for (const auto& s : students) {
    switch (login_state(c, s.login)) {
      case LoginState::Absent: create.push_back(&s); break;
      case LoginState::Other:
        throw std::runtime_error(roster + ":" + std::to_string(s.line) + ": '" + s.login +
                                 "' is a role of the server that is not a student login; nothing was created");
      default: (reset ? renew : skipped).push_back(&s);
    }
  }
  fs::create_directories(out);
  fs::permissions(out, fs::perms::owner_all, fs::perm_options::replace);
  std::vector<fs::path> written;
  std::vector<std::string> passwords;
  try {
    for (auto* list : {&create, &renew})
      for (const Student* s : *list) {
        passwords.push_back(generate_password());
        written.push_back(fs::path(out) / (s->login + ".txt"));
        write_private(written.back(), handout_text(t, *s, passwords.back()));
      }
    if (t.ca_cert) fs::copy_file(ca_cert, fs::path(out) / "root.crt", fs::copy_options::overwrite_existing);
    c.exec("BEGIN");
    size_t k = 0;
    for (const Student* s : create) create_student_login(c, s->login, passwords[k++], connection_limit);
    for (const Student* s : renew) reset_student_password(c, s->login, passwords[k++], connection_limit);
    c.exec("COMMIT");
  } catch (...) {
    // The logins were not created, so these hand-outs would lie.
    if (c.in_transaction()) try {
        c.exec("ROLLBACK");
      } catch (const std::exception&) {
      }
    for (const auto& w : written) fs::remove(w);
    throw;
  }
  std::string skip_list;
  for (const Student* s : skipped) skip_list += (skip_list.empty() ? "" : ", ") + s->login;
  say("created " + std::to_string(create.size()) + " logins, new passwords for " + std::to_string(renew.size()) +
      (skipped.empty() ? "" : ", skipped " + std::to_string(skipped.size()) + " that exist (" + skip_list +
                                  "; --reset-passwords gives them new ones)"));
  std::printf("wrote %zu hand-outs to %s (mode 0600)\n", written.size(), out.c_str());
  return 0;
}

int cmd_remove_students(int argc, char** argv, const Config& cfg) {
  std::string config_path, db, roster;
  bool drop = false;
  cli::Parser p("gannf-coord remove-students",
                "usage: gannf-coord remove-students ROSTER|LOGIN [options]\n"
                "Ends the students' logins: disables them (NOLOGIN), ends their sessions, frees the units\n"
                "their workers hold for the others at once, and with --drop drops the roles. Their work stays\n"
                "on the leaderboard. Run as an administrator, as add-students.");
  p.opt("config", &config_path, "YAML configuration (its database section is the connection)");
  p.opt("db", &db, "an administrator's connection to the class's database");
  p.positional("roster", &roster, "a roster file as for add-students, or one login");
  p.flag("drop", &drop, "drop the roles instead of only disabling them");
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (roster.empty()) throw cli::Error("no roster: gannf-coord remove-students ROSTER|LOGIN (see --help)");
  std::vector<Student> students;
  if (fs::is_regular_file(roster)) {
    students = parse_roster(read_text(roster), roster);
  } else {
    if (const std::string why = login_problem(roster); !why.empty())
      throw cli::Error("'" + roster + "' is neither a roster file nor a login: " + why);
    students.push_back({roster, "", "", 0});
  }
  pg::Connection c(conninfo_of(db, cfg));
  int failed = 0;
  for (const auto& s : students) {
    try {
      const auto o = remove_student_login(c, s.login, drop);
      say(s.login + ": " + (drop ? "dropped" : "disabled") + ", " + std::to_string(o.sessions_ended) +
          " sessions ended, " + std::to_string(o.units_freed) + " units freed");
    } catch (const std::exception& e) {
      say(s.login + ": " + e.what());
      ++failed;
    }
  }
  return failed ? 1 : 0;
}

}  // namespace gannf
