// Weights from a PostgreSQL streaming replica (issue 17, item 2e;
// docs/scaling.md): a private primary (tools/pg-embedded.sh) and a hot
// standby of it made with pg_basebackup -R (tests/pg_replica.sh), both run
// by the fixture's unprivileged server user. A worker with --weights-db
// pointing at the standby downloads the weights there and trains exactly
// as without it (the state after the run equals an uninterrupted run's on
// the fixture's server, bit for bit); with the standby's replay paused (a
// lagging replica) and then stopped, the primary stands in and the result
// is still the same: the replica costs nothing but speed.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>

#include "test_cluster_harness.h"

namespace {

using namespace gannf;
using namespace gannf::test;

class Replica : public ClusterRun {};

// "... weights downloaded N time(s), X MB (R from the replica, P from the primary)"
struct Downloads {
  int total = -1, replica = -1, primary = -1;
};
Downloads downloads(const std::string& log) {
  static const std::regex re(
      R"(weights downloaded (\d+) time\(s\), [0-9.]+ MB \((\d+) from the replica, (\d+) from the primary\))");
  Downloads d;
  for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it)
    d = {std::stoi((*it)[1]), std::stoi((*it)[2]), std::stoi((*it)[3])};
  return d;
}

TEST_F(Replica, WeightsFromAReplicaTrainTheSameAndALaggingOrStoppedOneCostsNothing) {
  const std::vector<std::string> init = small_run(64, 8, 2, 29);
  const int kPhase = 2;  // updates per phase: replica up, replica lagging, replica stopped
  const std::vector<std::string> want = reference_state(init, 3 * kPhase);
  if (HasFatalFailure()) return;

  PrivateServer server(dir_ / "pg");
  ASSERT_EQ(server.script("start"), 0) << "see " << (dir_ / "pg-script.log");
  {
    pg::Connection admin(server.conninfo("postgres"));
    admin.on_notice({});
    admin.exec("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gannf_test_w1') THEN "
               "CREATE ROLE gannf_test_w1 LOGIN IN ROLE gannf_worker; END IF; END $$");
  }
  {
    std::vector<std::string> args = {kCoordBin, "init", "--db", server.conninfo("gannf_coord")};
    args.insert(args.end(), init.begin(), init.end());
    Proc p(args, (dir_ / "coord-init.log").string());
    ASSERT_EQ(p.wait(60), 0) << p.log();
  }
  // The standby: a short path the server user can reach (its socket lives there).
  const std::string rdir = "/tmp/gannf-replica-" + std::to_string(getpid());
  const std::string script = std::string(GANNF_SOURCE_DIR) + "/tests/pg_replica.sh";
  const std::string rlog = (dir_ / "replica.log").string();
  struct Cleanup {
    std::string cmd;
    ~Cleanup() { (void)std::system(cmd.c_str()); }
  } cleanup{script + " destroy " + rdir + " >> '" + rlog + "' 2>&1"};
  const std::string pdir = (dir_ / "pg").string();
  ASSERT_EQ(std::system((script + " start '" + pdir + "' " + rdir + " >> '" + rlog + "' 2>&1").c_str()), 0)
      << "see " << rlog;
  std::string rport;
  std::ifstream(rdir + "/port") >> rport;
  const std::string replica = "host=" + rdir + " port=" + rport + " dbname=gannf user=gannf_test_w1";
  // The standby has replayed init (the run and iteration 0's weights) before
  // the worker asks, so that its first download can come from there.
  pg::Connection rsu("host=" + rdir + " port=" + rport + " dbname=gannf user=postgres");
  ASSERT_TRUE(wait_for([&] { return rsu.exec("SELECT count(*) FROM gannf.weights").get<int64_t>(0, 0) == 2; }, 60));
  EXPECT_TRUE(rsu.exec("SELECT pg_is_in_recovery()").get<bool>(0, 0));

  const std::string primary = server.conninfo("gannf_test_w1");
  auto phase = [&](int upto, const std::string& name) {
    std::vector<std::string> w = {kWorkerBin, "--db", primary, "--weights-db", replica, "--name", "w",
                                  "--threads", "1", "--batch-size", "4", "--no-cache", "--exit-when-done",
                                  "--poll-interval", "0.2"};
    Proc worker(w, (dir_ / ("worker-" + name + ".log")).string());
    Proc run({kCoordBin, "run", "--db", server.conninfo("gannf_coord"), "--iterations", std::to_string(upto),
              "--output-dir", (dir_ / "out").string(), "--sample-interval", "0", "--checkpoint-interval", "0"},
             (dir_ / ("coord-" + name + ".log")).string());
    const auto rc = run.wait(120);
    EXPECT_TRUE(rc.has_value() && *rc == 0) << run.log() << worker.log();
    EXPECT_EQ(worker.wait(60), 0) << worker.log();
    const Downloads d = downloads(worker.log());
    std::printf("%s: weights downloaded %d time(s), %d from the replica, %d from the primary\n",
                name.c_str(), d.total, d.replica, d.primary);
    return std::make_pair(d, worker.log());
  };

  // 1: the replica serves the weights (at least the first iteration's, which
  // it had replayed; later ones when it keeps up, else the primary's).
  auto [up, up_log] = phase(kPhase, "replica-up");
  EXPECT_GE(up.replica, 1) << up_log;
  EXPECT_EQ(up.replica + up.primary, up.total) << up_log;

  // 2: replay paused once the standby has caught up — it answers, and has
  // the weights the phase starts from, but none of the later iterations':
  // those come from the primary.
  pg::Connection pc(server.conninfo("gannf_coord"));
  const auto newest = [](pg::Connection& c) {
    return c.exec("SELECT coalesce(max(iteration), -1) FROM gannf.weights").get<int64_t>(0, 0);
  };
  ASSERT_TRUE(wait_for([&] { return newest(rsu) == newest(pc); }, 60));
  rsu.exec("SELECT pg_wal_replay_pause()");
  auto [lag, lag_log] = phase(2 * kPhase, "replica-lagging");
  EXPECT_EQ(lag.replica, 1) << lag_log;
  EXPECT_EQ(lag.primary, kPhase - 1) << lag_log;

  // 3: stopped — the worker says so once and goes on with the primary.
  ASSERT_EQ(std::system((script + " stop " + rdir + " >> '" + rlog + "' 2>&1").c_str()), 0);
  auto [down, down_log] = phase(3 * kPhase, "replica-stopped");
  EXPECT_EQ(down.replica, 0) << down_log;
  EXPECT_EQ(down.primary, kPhase) << down_log;
  EXPECT_NE(down_log.find("cannot reach the weights replica"), std::string::npos) << down_log;

  expect_same_state(run_state(pc, 3 * kPhase), want, "training with weights from a replica");
}

}  // namespace
