// What the end-to-end cluster tests share: a database of the test's own on
// the fixture's private PostgreSQL (see pg_fixture.cmake), worker logins, and
// real gannf-coord / gannf-worker processes started, signalled and awaited.
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "pg.h"

namespace gannf::test {

namespace fs = std::filesystem;

inline const std::string kCoordBin = std::string(GANNF_BINARY_DIR) + "/tools/gannf-coord";
inline const std::string kWorkerBin = std::string(GANNF_BINARY_DIR) + "/tools/gannf-worker";

// A child process with stdout and stderr in a log file. `env`: changes to
// the child's environment, "NAME=value" to set, "NAME" to remove.
class Proc {
 public:
  Proc(std::vector<std::string> args, std::string log, const std::vector<std::string>& env = {})
      : log_(std::move(log)), args_(std::move(args)) {
    std::vector<char*> argv;
    for (auto& a : args_) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      for (const std::string& e : env) {
        const size_t eq = e.find('=');
        if (eq == std::string::npos) unsetenv(e.c_str());
        else setenv(e.substr(0, eq).c_str(), e.substr(eq + 1).c_str(), 1);
      }
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;
  ~Proc() {
    if (running()) {
      kill(pid_, SIGKILL);
      wait(10);
    }
  }
  pid_t pid() const { return pid_; }
  void signal(int sig) {
    if (running()) kill(pid_, sig);
  }
  bool running() {
    if (done_) return false;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) finish(st);
    return !done_;
  }
  // The exit code (128 + signal when killed), or nullopt after `seconds`.
  std::optional<int> wait(double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (running()) {
      if (std::chrono::steady_clock::now() > until) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return code_;
  }
  std::string log() const {
    std::ifstream f(log_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  std::string command() const {
    std::string s;
    for (auto& a : args_) s += (s.empty() ? "" : " ") + a;
    return s;
  }

 private:
  void finish(int st) {
    done_ = true;
    code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  std::string log_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  bool done_ = false;
  int code_ = -1;
};

inline pg::Connection connect_or_fail(const std::string& conninfo) {
  try {
    return pg::Connection(conninfo);
  } catch (const pg::Error& e) {
    ADD_FAILURE() << e.what()
                  << "\n(run through ctest, whose fixture starts the server and sets PGSERVICEFILE/PGSERVICE)";
    throw;
  }
}

// Weights, BN running stats, their counters and Adam state of `iteration`,
// as raw bytes per network (G, then D): what "bit-identical" compares.
inline std::vector<std::string> run_state(pg::Connection& c, int64_t iteration) {
  pg::Params p;
  p.add(iteration);
  pg::Result r = c.exec(
      "SELECT w.params, w.bn_running, w.num_batches_tracked, o.adam_m, o.adam_v, o.step "
      "FROM gannf.weights w JOIN gannf.optimizer_state o USING (network, iteration) "
      "WHERE iteration = $1 ORDER BY network",
      p);
  std::vector<std::string> out;
  for (int i = 0; i < r.rows(); ++i) {
    for (int col : {0, 1, 3, 4}) {
      auto b = r.bytes(i, col);
      out.emplace_back(reinterpret_cast<const char*>(b.data()), b.size());
    }
    out.push_back(std::to_string(r.get<int64_t>(i, 2)) + "/" + std::to_string(r.get<int64_t>(i, 5)));
  }
  return out;
}

// Each test: its own database (dropped when the test passes, kept for
// inspection when it fails), its own folder for logs and outputs.
class ClusterRun : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    db_ = "gt_" + std::string(info->test_suite_name()) + "_" + info->name();
    std::transform(db_.begin(), db_.end(), db_.begin(),
                   [](unsigned char ch) { return std::isalnum(ch) ? (char)std::tolower(ch) : '_'; });
    if (db_.size() > 50) db_ = db_.substr(0, 40) + "_" + std::to_string(std::hash<std::string>{}(db_) % 100000000);
    admin_ = std::make_unique<pg::Connection>(connect_or_fail("user=postgres dbname=postgres"));
    admin_->on_notice({});
    admin_->exec("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
    admin_->exec("CREATE DATABASE " + db_ + " OWNER gannf_coord");
    for (const char* w : {"gannf_test_w1", "gannf_test_w2"}) ensure_worker_login(w);
    dir_ = fs::path(GANNF_BINARY_DIR) / "cluster-tests" / db_;
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  void TearDown() override {
    procs_.clear();  // kills what is still running
    coord_.reset();
    if (!HasFailure() && admin_) {
      admin_->exec("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
      fs::remove_all(dir_);
    } else {
      std::printf("kept database %s and folder %s for inspection\n", db_.c_str(), dir_.c_str());
    }
  }

  // A login in `group` (none when empty).
  void ensure_worker_login(const std::string& role, const std::string& group = "gannf_worker") {
    const std::string sql = "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" + role +
                            "') THEN CREATE ROLE " + role + " LOGIN" + (group.empty() ? "" : " IN ROLE " + group) +
                            "; END IF; END $$";
    for (int attempt = 0;; ++attempt) {  // test binaries run in parallel
      try {
        admin_->exec(sql);
        return;
      } catch (const pg::Error& e) {
        if (attempt >= 3 || (e.sqlstate() != "23505" && e.sqlstate() != "42710")) throw;
      }
    }
  }

  std::string coord_db() const { return "dbname=" + db_; }
  std::string worker_db(int login = 1) const { return "user=gannf_test_w" + std::to_string(login) + " dbname=" + db_; }
  pg::Connection& coord() {
    if (!coord_) coord_ = std::make_unique<pg::Connection>(connect_or_fail(coord_db()));
    return *coord_;
  }
  int64_t count(const std::string& sql) { return coord().exec(sql).get<int64_t>(0, 0); }

  // gannf-coord COMMAND ARGS..., to completion; fails the test unless it exits 0.
  void coord_cmd(const std::string& cmd, std::vector<std::string> args, double timeout = 60) {
    args.insert(args.begin(), {kCoordBin, cmd, "--db", coord_db()});
    Proc p(args, (dir_ / ("coord-" + cmd + ".log")).string());
    auto rc = p.wait(timeout);
    ASSERT_TRUE(rc.has_value()) << p.command() << " did not finish in " << timeout << " s:\n" << p.log();
    ASSERT_EQ(*rc, 0) << p.command() << ":\n" << p.log();
  }
  // coord_cmd, then what the command printed.
  std::string coord_output(const std::string& cmd, std::vector<std::string> args = {}) {
    coord_cmd(cmd, std::move(args));
    std::ifstream f(dir_ / ("coord-" + cmd + ".log"));
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  Proc& start_coord_run(std::vector<std::string> args, const std::string& log = "coord-run.log") {
    args.insert(args.begin(), {kCoordBin, "run", "--db", coord_db(), "--output-dir", (dir_ / "out").string()});
    procs_.push_back(std::make_unique<Proc>(args, (dir_ / log).string()));
    return *procs_.back();
  }
  // A CPU worker with one thread (the machine's two cores are shared).
  Proc& start_worker(const std::string& name, std::vector<std::string> extra = {}, int login = 1) {
    return start_worker_on(worker_db(login), name, std::move(extra));
  }
  // The same on any connection (another login, a private server).
  Proc& start_worker_on(const std::string& conninfo, const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {kWorkerBin, "--db", conninfo, "--name", name, "--threads", "1",
                                     "--poll-interval", "0.5", "--no-cache"};
    args.insert(args.end(), extra.begin(), extra.end());
    procs_.push_back(std::make_unique<Proc>(args, (dir_ / ("worker-" + name + ".log")).string()));
    return *procs_.back();
  }
  std::string logs() {
    std::string s;
    for (auto& p : procs_) s += "---- " + p->command() + "\n" + p->log();
    return s;
  }
  // Polls `pred` every 20 ms for up to `seconds`.
  static bool wait_for(const std::function<bool()>& pred, double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
  }

  // The state (run_state) after an uninterrupted run of `iterations` updates
  // from `init` with one worker, in a database of its own on the fixture's
  // server: what a run with faults must end at, bit for bit.
  // `worker_extra`: more options for its worker (its log: ref-worker.log).
  std::vector<std::string> reference_state(const std::vector<std::string>& init, int iterations,
                                           const std::vector<std::string>& worker_extra = {});
  // got == want, tensor by tensor, naming what differs.
  static void expect_same_state(const std::vector<std::string>& got, const std::vector<std::string>& want,
                                const std::string& after) {
    ASSERT_EQ(want.size(), 10u);
    ASSERT_EQ(got.size(), want.size());
    const char* what[5] = {"params", "BN running statistics", "Adam m", "Adam v", "counters"};
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_TRUE(got[i] == want[i]) << (i < 5 ? "G " : "D ") << what[i % 5] << " differ after " << after;
  }

  std::string db_;
  fs::path dir_;
  std::unique_ptr<pg::Connection> admin_, coord_;
  std::vector<std::unique_ptr<Proc>> procs_;
};

inline std::vector<std::string> ClusterRun::reference_state(const std::vector<std::string>& init, int iterations,
                                                            const std::vector<std::string>& worker_extra) {
  const std::string ref_db = db_ + "_ref";
  admin_->exec("DROP DATABASE IF EXISTS " + ref_db + " WITH (FORCE)");
  admin_->exec("CREATE DATABASE " + ref_db + " OWNER gannf_coord");
  std::vector<std::string> a = {kCoordBin, "init", "--db", "dbname=" + ref_db};
  a.insert(a.end(), init.begin(), init.end());
  Proc p(a, (dir_ / "ref-init.log").string());
  EXPECT_EQ(p.wait(60), 0) << p.log();
  std::vector<std::string> wa = {kWorkerBin, "--db", "user=gannf_test_w1 dbname=" + ref_db, "--name", "ref",
                                 "--threads", "1", "--batch-size", "4", "--no-cache", "--exit-when-done",
                                 "--poll-interval", "0.5"};
  wa.insert(wa.end(), worker_extra.begin(), worker_extra.end());
  Proc w(wa, (dir_ / "ref-worker.log").string());
  Proc r(std::vector<std::string>{kCoordBin, "run", "--db", "dbname=" + ref_db, "--iterations",
                                  std::to_string(iterations), "--output-dir", (dir_ / "ref-out").string(),
                                  "--sample-interval", "0", "--checkpoint-interval", "0"},
         (dir_ / "ref-run.log").string());
  EXPECT_EQ(r.wait(120), 0) << r.log() << w.log();
  EXPECT_EQ(w.wait(30), 0) << w.log();
  std::vector<std::string> state;
  {
    pg::Connection ref = connect_or_fail("dbname=" + ref_db);
    state = run_state(ref, iterations);
  }
  if (!::testing::Test::HasFailure()) admin_->exec("DROP DATABASE IF EXISTS " + ref_db + " WITH (FORCE)");
  return state;
}

// A private PostgreSQL (tools/pg-embedded.sh in `dir`), for the tests that
// crash their server or need it on TCP: the fixture's is shared by every
// cluster test running in parallel. Stopped when it goes out of scope.
class PrivateServer {
 public:
  explicit PrivateServer(fs::path dir) : dir_(std::move(dir)) {}
  // Kept (stopped) for inspection when the test failed; otherwise deleted,
  // with the server's files wherever the script put them (/tmp, for a long
  // or unreachable path), so that no later run at this path finds them.
  ~PrivateServer() { script(::testing::Test::HasFailure() ? "stop" : "destroy"); }
  // tools/pg-embedded.sh CMD DIR [ARGS]; its exit code. Output: DIR/../pg-script.log.
  int script(const std::string& cmd, const std::string& args = "") const {
    const std::string line = "GANNF_PG_NOSYNC=1 " + std::string(GANNF_SOURCE_DIR) + "/tools/pg-embedded.sh " + cmd +
                             " '" + dir_.string() + "' " + args + " >> '" + (dir_.parent_path() / "pg-script.log").string() +
                             "' 2>&1";
    return std::system(line.c_str());
  }
  // host=<socket folder> port=... from the service file the script writes.
  std::string conninfo(const std::string& user) const {
    return "host=" + setting("host") + " port=" + port() + " dbname=gannf user=" + user;
  }
  std::string port() const { return setting("port"); }

 private:
  std::string setting(const std::string& key) const {
    std::ifstream f(dir_ / "pg_service.conf");
    std::string l;
    while (std::getline(f, l))
      if (l.rfind(key + "=", 0) == 0) return l.substr(key.size() + 1);
    return "";
  }
  fs::path dir_;
};

// The arguments of a small run on the synthetic set: 32x32, one channel,
// narrow nets, so that an iteration takes milliseconds on one core. A trusted
// cluster's rule unless `classroom`: the exact mean without spot checks, which
// the tests that compare with a local or uninterrupted run bit for bit need
// (the robust default's norm history starts over after a crash).
// The section of sql/roles.sql from "-- BEGIN <name>" to its "-- END"
// (empty when there is none), for a test to run in its own database.
inline std::string roles_sql_section(const std::string& name) {
  std::ifstream in(std::string(GANNF_SOURCE_DIR) + "/sql/roles.sql");
  std::stringstream text;
  text << in.rdbuf();
  const std::string all = text.str();
  const size_t begin = all.find("-- BEGIN " + name), end = all.find("-- END", begin);
  return begin == std::string::npos || end == std::string::npos ? "" : all.substr(begin, end - begin);
}

inline std::vector<std::string> small_run(int dataset, int per_unit, int units, uint64_t seed,
                                          bool classroom = false) {
  std::vector<std::string> a = {"--dataset", "synthetic:" + std::to_string(dataset), "--image-size", "32",
                                "--channels", "1", "--latent-dim", "16", "--ngf", "8", "--ndf", "8",
                                "--images-per-unit", std::to_string(per_unit), "--units-per-update",
                                std::to_string(units), "--seed", std::to_string(seed), "--no-cache", "--quiet"};
  if (!classroom) a.insert(a.end(), {"--aggregation", "mean", "--spot-check", "0"});
  return a;
}

}  // namespace gannf::test
