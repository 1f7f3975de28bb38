// gannf-coord add-students / remove-students against a real PostgreSQL with
// TLS: a private server (tools/pg-embedded.sh --tcp) with ssl on and a CA
// made here by openssl, so that the hand-out's commands are run exactly as a
// student runs them (sslmode=verify-full, the password from ~/.pgpass).
#include <sys/stat.h>

#include <regex>

#include "students.h"
#include "test_cluster_harness.h"

using namespace gannf;
using namespace gannf::cluster;
using namespace gannf::test;

namespace {

TEST(Roster, CsvAndPlainLinesAreRead) {
  const auto s = parse_roster(
      "\xEF\xBB\xBFlogin,name,email\r\nalice, Alice Liddell ,alice@example.edu\r\n# a comment\n\nbob\tBob B\ncarol\n",
      "r.csv");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].login, "alice");
  EXPECT_EQ(s[0].display_name, "Alice Liddell");
  EXPECT_EQ(s[0].email, "alice@example.edu");
  EXPECT_EQ(s[1].login, "bob");
  EXPECT_EQ(s[1].display_name, "Bob B");
  EXPECT_EQ(s[2].login, "carol");
  EXPECT_EQ(s[2].line, 6);
}

TEST(Roster, HostileOrInvalidLinesAreRefusedWithTheirLine) {
  for (const char* bad : {"alice\nbob\"; DROP ROLE postgres; --\n", "alice\nx'); DROP ROLE gannf_coord; --,X\n",
                          "alice\nAlice\n", "alice\n1abc\n", "alice\nalice\n", "alice\npostgres\n", "alice\npg_monitor\n",
                          "alice\ngannf_coord\n", "alice\nbo\x01""b\n", "alice\nbob,B\x1b[2J,e\n",
                          "alice\nb,c,d,e\n"}) {
    try {
      parse_roster(bad, "r");
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const RosterError& e) {
      EXPECT_NE(std::string(e.what()).find("r:2:"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(parse_roster("# nobody\n", "r"), RosterError);
  EXPECT_EQ(login_problem(std::string(64, 'a')), "longer than 63 bytes (PostgreSQL would cut it)");
}

TEST(Roster, PasswordsAreLongAndPlain) {
  const std::string a = generate_password(), b = generate_password();
  EXPECT_EQ(a.size(), 24u);
  EXPECT_NE(a, b);
  for (char ch : a + b) EXPECT_TRUE(std::isalnum((unsigned char)ch)) << a << b;
}

// Runs `cmd` with /bin/sh in `cwd` with `env` changes (as Proc), to completion.
int shell(const std::string& cmd, const fs::path& cwd, const std::vector<std::string>& env, const fs::path& log,
          double timeout = 120) {
  Proc p({"/bin/sh", "-c", "cd '" + cwd.string() + "' && " + cmd}, log.string(), env);
  auto rc = p.wait(timeout);
  return rc ? *rc : -1;
}

bool wait_until(const std::function<bool()>& pred, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The hand-out's line that starts with `prefix` (after its indentation).
std::string handout_line(const std::string& handout, const std::string& prefix) {
  std::istringstream in(handout);
  for (std::string l; std::getline(in, l);) {
    const auto a = l.find_first_not_of(' ');
    if (a != std::string::npos && l.compare(a, prefix.size(), prefix) == 0) return l.substr(a);
  }
  ADD_FAILURE() << "no line '" << prefix << "…' in the hand-out:\n" << handout;
  return "";
}

class Students : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(GANNF_BINARY_DIR) / "students-test";
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    server_ = std::make_unique<PrivateServer>(dir_ / "pg");
    ASSERT_EQ(server_->script("start", "--tcp"), 0) << read_all(dir_ / "pg-script.log");
    admin_ = server_->conninfo("postgres");
    make_tls();
  }
  void TearDown() override { server_.reset(); }

  // A CA and a certificate for "localhost" signed by it; the server's ssl on.
  void make_tls() {
    const fs::path t = dir_ / "tls";
    fs::create_directories(t);
    const std::string o = GANNF_OPENSSL;
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::ofstream(t / "san.ext") << "subjectAltName=DNS:localhost\n";
    ASSERT_EQ(shell(o + " req -x509" + ec + " -keyout ca.key -out ca.crt -days 2 -subj /CN=gannf-test-ca && " + o +
                        " req" + ec + " -keyout server.key -out server.csr -subj /CN=localhost && " + o +
                        " x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt "
                        "-days 2 -extfile san.ext",
                    t, {}, dir_ / "openssl.log"),
              0)
        << read_all(dir_ / "openssl.log");
    pg::Connection a(admin_);
    const fs::path data = a.exec("SHOW data_directory").get<std::string>(0, 0);
    struct stat st{};
    ASSERT_EQ(stat(data.c_str(), &st), 0);
    for (const char* f : {"server.crt", "server.key"}) {  // the server's user must own its key, mode 0600
      fs::copy_file(t / f, data / f, fs::copy_options::overwrite_existing);
      ASSERT_EQ(chown((data / f).c_str(), st.st_uid, st.st_gid), 0);
      fs::permissions(data / f, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
    }
    a.exec("ALTER SYSTEM SET ssl = on");
    // pg_hba.conf: the README's lines as printed there (TLS and SCRAM only over
    // the network), after the local socket's line that the tests' administrator uses.
    const std::string readme = read_all(fs::path(GANNF_SOURCE_DIR) / "README.md");
    const auto from = readme.find("# pg_hba.conf:");
    ASSERT_NE(from, std::string::npos) << "README.md has no pg_hba.conf block";
    std::istringstream block(readme.substr(from, readme.find("```", from) - from));
    std::string hba = "local all all trust\n";
    int lines = 0;
    for (std::string l; std::getline(block, l);)
      if (l.rfind("host", 0) == 0) hba += l + "\n", ++lines;
    ASSERT_GE(lines, 4) << hba;
    std::ofstream(a.exec("SHOW hba_file").get<std::string>(0, 0)) << hba;
    a.exec("SELECT pg_reload_conf()");
    ASSERT_TRUE(wait_until([&] { return pg::Connection(admin_).exec("SHOW ssl").get<std::string>(0, 0) == "on"; },
                                     30));
  }

  int coord(const std::vector<std::string>& args, const std::string& log) {
    std::vector<std::string> a = {kCoordBin};
    a.insert(a.end(), args.begin(), args.end());
    Proc p(a, (dir_ / log).string());
    auto rc = p.wait(120);
    return rc ? *rc : -1;
  }
  // What a student's machine has: no service file of the test's, its own HOME.
  std::vector<std::string> student_env(const fs::path& home) const {
    return {"HOME=" + home.string(), "PGSERVICEFILE", "PGSERVICE", "PGPASSFILE", "PGSSLROOTCERT",
            "PATH=" + std::string(GANNF_BINARY_DIR) + "/tools:/usr/bin:/bin"};
  }
  bool can_connect(const std::string& conninfo) {
    try {
      pg::Connection c(conninfo);
      return true;
    } catch (const pg::Error&) {
      return false;
    }
  }

  fs::path dir_;
  std::unique_ptr<PrivateServer> server_;
  std::string admin_;
};

TEST_F(Students, HandOutWorksAsWrittenAndRemoveFreesTheUnits) {
  const fs::path out = dir_ / "handouts";
  ASSERT_EQ(coord({"init", "--db", server_->conninfo("gannf_coord")}, "init-args.log"), 2);  // no dataset: refused
  std::vector<std::string> init = {"init", "--db", server_->conninfo("gannf_coord")};
  for (auto& a : small_run(64, 8, 2, 3)) init.push_back(a);
  ASSERT_EQ(coord(init, "init.log"), 0) << read_all(dir_ / "init.log");

  std::ofstream(dir_ / "roster.csv") << "login,name,email\nrc_alice,Alice A,alice@example.edu\nrc_bob,Bob\n";
  const std::vector<std::string> add = {"add-students", (dir_ / "roster.csv").string(), "--db", admin_, "--out",
                                        out.string(), "--host", "localhost", "--port", server_->port(),
                                        "--ca-cert", (dir_ / "tls" / "ca.crt").string(), "--connection-limit", "3"};
  ASSERT_EQ(coord(add, "add.log"), 0) << read_all(dir_ / "add.log");
  const std::string handout = read_all(out / "rc_alice.txt");
  const std::string password = handout_line(handout, "password").substr(10);
  ASSERT_EQ(password.size(), 24u) << handout;
  // Nothing secret on stdout or stderr; the files private.
  const std::string add_log = read_all(dir_ / "add.log");
  EXPECT_EQ(add_log.find(password), std::string::npos) << add_log;
  EXPECT_NE(add_log.find("wrote 2 hand-outs to " + out.string() + " (mode 0600)"), std::string::npos) << add_log;
  EXPECT_EQ(fs::status(out / "rc_alice.txt").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(fs::status(out).permissions() & fs::perms::all, fs::perms::owner_all);
  {
    pg::Connection a(admin_);
    EXPECT_EQ(a.exec("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'rc_alice'").get<int32_t>(0, 0), 3);
    const std::string stored = a.exec("SELECT rolpassword FROM pg_authid WHERE rolname = 'rc_alice'").get<std::string>(0, 0);
    EXPECT_EQ(stored.rfind("SCRAM-SHA-256$", 0), 0u) << "the server got a verifier, never the password";
    // The same settings as a login the instructor admits by hand with
    // roles.sql's gannf_admin.admit_student (one source of truth).
    a.exec("SELECT gannf_admin.admit_student('rc_by_hand', NULL, 3)");
    const auto settings = [&](const char* login) {
      pg::Params p;
      p.add(std::string(login));
      return a.exec("SELECT coalesce(array_to_string(ARRAY(SELECT unnest(setconfig) ORDER BY 1), ' '), '') "
                    "FROM pg_db_role_setting WHERE setrole = to_regrole($1) AND setdatabase = 0", p)
          .get<std::string>(0, 0);
    };
    const std::string alice = settings("rc_alice");
    EXPECT_EQ(alice, settings("rc_by_hand"));
    for (const char* k : {"temp_file_limit=", "statement_timeout=", "idle_in_transaction_session_timeout=",
                          "lock_timeout=", "work_mem="})
      EXPECT_NE(alice.find(k), std::string::npos) << k << " missing from rc_alice's settings: " << alice;
    a.exec("DROP ROLE rc_by_hand");
  }

  // The student: the hand-out's commands, as written, in a fresh HOME.
  const fs::path home = dir_ / "home-alice";
  fs::create_directories(home);
  const auto env = student_env(home);
  ASSERT_EQ(shell(handout_line(handout, "printf '%s\\n'"), out, env, dir_ / "student.log"), 0);
  ASSERT_EQ(shell(handout_line(handout, "mkdir -p ~/.postgresql"), out, env, dir_ / "student.log"), 0);
  const std::string native = handout_line(handout, "gannf-worker --backend auto --db");
  EXPECT_NE(native.find("sslmode=verify-full"), std::string::npos) << native;
  ASSERT_EQ(shell(native + " --max-units 1 --threads 1 --no-cache", out, env, dir_ / "worker-alice.log"), 0)
      << read_all(dir_ / "student.log") << read_all(dir_ / "worker-alice.log");
  {
    pg::Connection a(server_->conninfo("postgres"));
    EXPECT_EQ(a.exec("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                     "WHERE w.login = 'rc_alice'")
                  .get<int64_t>(0, 0),
              1);
  }
  // Colab's secret: the URL the notebook hands to gannf-worker --db connects
  // with verify-full (root.crt where this machine has it instead of Colab's /content).
  {
    const std::string line = handout_line(handout, "GANNF_DB_URL");
    const auto a = line.find("postgresql://");
    std::string url = line.substr(a, line.find(' ', a) - a);
    const std::string colab_cert = "/content/root.crt";
    ASSERT_NE(url.find(colab_cert), std::string::npos) << url;
    url.replace(url.find(colab_cert), colab_cert.size(), (out / "root.crt").string());
    EXPECT_TRUE(can_connect(url + "&password=" + password)) << url;
    EXPECT_EQ(handout_line(handout, "GANNF_DB_PASSWORD").substr(19), password);
  }
  // The model card credits the class from the leaderboard (gannf-generate export --db).
  const std::string tools = std::string(GANNF_BINARY_DIR) + "/tools/";
  ASSERT_EQ(shell(tools + "gannf-train --dataset synthetic:64 --no-cache --image-size 32 --channels 1 --ngf 8 --ndf 8 "
                          "--batch-size 8 --steps 1 --quiet --output-dir run && " + tools +
                      "gannf-generate export --checkpoint run --out hub --db '" + server_->conninfo("gannf_coord") + "'",
                  dir_, {}, dir_ / "export.log"),
            0)
      << read_all(dir_ / "export.log");
  EXPECT_NE(read_all(dir_ / "hub" / "README.md").find("| rc_alice | 1 | 8 |"), std::string::npos)
      << read_all(dir_ / "hub" / "README.md");
  // verify-full checks the name: the same server under another name is refused.
  const std::string alice_tls = "host=localhost port=" + server_->port() + " dbname=gannf user=rc_alice password=" +
                                password + " sslmode=verify-full sslrootcert=" + (dir_ / "tls" / "ca.crt").string();
  EXPECT_TRUE(can_connect(alice_tls));
  // Without TLS the README's pg_hba.conf refuses even the right password.
  EXPECT_FALSE(can_connect("host=localhost port=" + server_->port() + " dbname=gannf user=rc_alice password=" +
                           password + " sslmode=disable"));
  EXPECT_FALSE(can_connect("hostaddr=127.0.0.1 host=127.0.0.1 port=" + server_->port() +
                           " dbname=gannf user=rc_alice password=" + password +
                           " sslmode=verify-full sslrootcert=" + (dir_ / "tls" / "ca.crt").string()));

  // Run again: the logins are kept, no hand-out is rewritten; --reset-passwords renews.
  ASSERT_EQ(coord(add, "add-again.log"), 0) << read_all(dir_ / "add-again.log");
  EXPECT_NE(read_all(dir_ / "add-again.log").find("wrote 0 hand-outs"), std::string::npos);
  EXPECT_EQ(read_all(out / "rc_alice.txt"), handout);
  auto reset = add;
  reset.push_back("--reset-passwords");
  ASSERT_EQ(coord(reset, "add-reset.log"), 0) << read_all(dir_ / "add-reset.log");
  EXPECT_FALSE(can_connect(alice_tls)) << "the old password still works";

  // A roster naming a role that is not a student's changes nothing.
  pg::Connection(admin_).exec("CREATE ROLE rc_admin CREATEDB LOGIN");
  std::ofstream(dir_ / "roster2.txt") << "rc_carol Carol\nrc_admin\n";
  EXPECT_EQ(coord({"add-students", (dir_ / "roster2.txt").string(), "--db", admin_, "--out", out.string(), "--host",
                   "localhost"},
                  "add-other.log"),
            1);
  EXPECT_NE(read_all(dir_ / "add-other.log").find("not a student login"), std::string::npos);
  EXPECT_EQ(pg::Connection(admin_).exec("SELECT count(*) FROM pg_roles WHERE rolname = 'rc_carol'").get<int64_t>(0, 0), 0);
  EXPECT_FALSE(fs::exists(out / "rc_carol.txt"));
  // A hostile roster line: refused before anything is done.
  std::ofstream(dir_ / "roster3.txt") << "rc_dave\nrc_x'); DROP ROLE gannf_coord; --\n";
  EXPECT_EQ(coord({"add-students", (dir_ / "roster3.txt").string(), "--db", admin_, "--out", out.string(), "--host",
                   "localhost"},
                  "add-hostile.log"),
            1);
  EXPECT_NE(read_all(dir_ / "add-hostile.log").find("roster3.txt:2:"), std::string::npos)
      << read_all(dir_ / "add-hostile.log");
  EXPECT_EQ(pg::Connection(admin_).exec("SELECT count(*) FROM pg_roles WHERE rolname IN ('rc_dave', 'gannf_coord')")
                .get<int64_t>(0, 0),
            1);

  // rc_bob's worker holds a unit (slowed down), then the login is removed.
  const std::string bob_pw = handout_line(read_all(out / "rc_bob.txt"), "password").substr(10);
  const std::string bob = "host=localhost port=" + server_->port() + " dbname=gannf user=rc_bob password=" + bob_pw +
                          " sslmode=verify-full sslrootcert=" + (dir_ / "tls" / "ca.crt").string();
  Proc worker({kWorkerBin, "--db", bob, "--threads", "1", "--no-cache", "--batch-size", "4", "--throttle-ms", "60000"},
              (dir_ / "worker-bob.log").string());
  pg::Connection a(admin_);
  auto held = [&] {
    return a.exec("SELECT count(*) FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
                  "WHERE w.login = 'rc_bob' AND u.state = 'claimed'")
               .get<int64_t>(0, 0);
  };
  ASSERT_TRUE(wait_until([&] { return held() > 0; }, 90)) << worker.log();
  ASSERT_EQ(coord({"remove-students", "rc_bob", "--db", admin_}, "remove.log"), 0) << read_all(dir_ / "remove.log");
  // Its worker's connections (one, or two while it uploads) ended, its unit freed.
  EXPECT_TRUE(std::regex_search(read_all(dir_ / "remove.log"),
                                std::regex("rc_bob: disabled, [12] sessions ended, 1 units freed")))
      << read_all(dir_ / "remove.log");
  EXPECT_EQ(held(), 0);
  EXPECT_FALSE(can_connect(bob));
  // The removed login's unit is available to the others at once.
  EXPECT_GE(a.exec("SELECT count(*) FROM gannf.work_units WHERE state = 'available' AND visible_at <= gannf.now()")
                .get<int64_t>(0, 0),
            1);
  worker.signal(SIGKILL);
  // Not a student login: left alone.
  EXPECT_EQ(coord({"remove-students", "rc_admin", "--db", admin_}, "remove-other.log"), 1);
  EXPECT_TRUE(a.exec("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'rc_admin'").get<bool>(0, 0));
  ASSERT_EQ(coord({"remove-students", (dir_ / "roster.csv").string(), "--db", admin_, "--drop"}, "drop.log"), 0)
      << read_all(dir_ / "drop.log");
  EXPECT_EQ(a.exec("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'rc\\_%' AND rolname <> 'rc_admin'").get<int64_t>(0, 0),
            0);
}

}  // namespace
