// Faults (labels cluster, faults): processes killed with SIGKILL at a moment
// they did not choose.
//
//  - A worker killed in the middle of a unit: its lease expires (the test
//    moves gannf.clock instead of waiting), another worker computes the
//    unit, and it counts exactly once.
//  - A worker killed mid-unit and restarted under the same name hands the
//    unit back at once instead of leaving it to its lease.
//  - A coordinator killed mid-run and restarted reaches bit for bit the
//    weights and optimizer state of an uninterrupted run.
//  - Database connections cut mid-run (pg_terminate_backend): coordinator
//    and workers reconnect and carry on, nothing lost or counted twice.
//  - A submission the server lost after acknowledging it (submit commits
//    asynchronously) is sent again by its worker after the reconnect,
//    instead of its unit waiting out the lease.
//  - The database server itself crashes (pg_ctl stop -m immediate) and
//    restarts, twice: gradients in the UNLOGGED blob table are lost and their
//    units computed again, weights never; the run reaches its bound with
//    every unit counted once.
#include <csignal>

#include "blob.h"
#include "test_cluster_harness.h"

namespace {

using namespace gannf;
using namespace gannf::test;

class Faults : public ClusterRun {
 protected:
  // After a run of `iterations` updates of `units` units of `per_unit`
  // images, whatever went wrong during it: every update is recorded once,
  // used exactly `units` submissions, no unit counted twice, no slice of an
  // epoch done twice. `q` answers a one-number query on the run's database.
  void expect_each_unit_counted_once(const std::function<int64_t(const std::string&)>& q, int iterations,
                                     int units, int per_unit) {
    EXPECT_EQ(q("SELECT count(*) FROM gannf.loss_history"), iterations);
    EXPECT_EQ(q("SELECT sum(samples) FROM gannf.loss_history"), (int64_t)units * per_unit * iterations);
    EXPECT_EQ(q("SELECT count(*) FROM gannf.submissions WHERE state = 'used'"), (int64_t)units * iterations);
    EXPECT_EQ(q("SELECT count(*) FROM (SELECT work_unit_id FROM gannf.submissions WHERE state = 'used' "
                "GROUP BY work_unit_id HAVING count(*) > 1) twice"),
              0);
    EXPECT_EQ(q("SELECT count(*) FROM (SELECT epoch, first_index FROM gannf.work_units WHERE state = 'done' "
                "GROUP BY epoch, first_index HAVING count(*) > 1) twice"),
              0);
  }

  std::vector<std::string> state_of(pg::Connection& c, int64_t iteration) { return run_state(c, iteration); }
};

TEST_F(Faults, WorkerKilledMidUnitIsReplacedAfterItsLease) {
  // Two units of 16 images; a lease of 60 s that the test skips over.
  std::vector<std::string> args = small_run(64, 16, 2, 5);
  args.insert(args.end(), {"--lease", "60"});
  coord_cmd("init", args);
  if (HasFatalFailure()) return;
  Proc& run = start_coord_run({"--iterations", "1", "--sample-interval", "0", "--checkpoint-interval", "0"});
  // The victim is slow: 4 micro-batches of 4, 1 s each.
  Proc& victim = start_worker("victim", {"--batch-size", "4", "--throttle-ms", "1000"});
  ASSERT_TRUE(wait_for([&] {
    return count("SELECT count(*) FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
                 "WHERE u.state = 'claimed' AND w.name = 'victim'") == 1;
  }, 20)) << logs();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // inside its first micro-batches
  victim.signal(SIGKILL);
  ASSERT_EQ(victim.wait(10), 128 + SIGKILL);
  const int64_t lost_unit = count("SELECT u.id FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
                                  "WHERE u.state = 'claimed' AND w.name = 'victim'");

  // The rescuer takes the other unit at once; the victim's is leased for a
  // minute more: nothing may happen to it yet.
  Proc& rescuer = start_worker("rescuer", {"--batch-size", "4", "--exit-when-done", "--poll-interval", "0.2"}, 2);
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.submissions") == 1; }, 20)) << logs();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 1);
  EXPECT_EQ(count("SELECT attempt FROM gannf.work_units WHERE id = " + std::to_string(lost_unit)), 1);

  // A minute passes (for every connection at once).
  coord().exec("UPDATE gannf.clock SET skew = skew + interval '61 seconds'");
  auto rc = run.wait(60);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  EXPECT_EQ(rescuer.wait(30), 0) << logs();

  // The lost unit: claimed twice, submitted once (by the rescuer), used once.
  pg::Result u = coord().exec(
      "SELECT u.state::text, u.attempt, w.name FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
      "WHERE u.id = " + std::to_string(lost_unit));
  ASSERT_EQ(u.rows(), 1);
  EXPECT_EQ(u.get<std::string>(0, 0), "done");
  EXPECT_EQ(u.get<int32_t>(0, 1), 2);
  EXPECT_EQ(u.get<std::string>(0, 2), "rescuer");
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE work_unit_id = " + std::to_string(lost_unit)), 1);
  pg::Result h = coord().exec("SELECT submissions_used, samples FROM gannf.loss_history");
  ASSERT_EQ(h.rows(), 1);
  EXPECT_EQ(h.get<int32_t>(0, 0), 2);
  EXPECT_EQ(h.get<int32_t>(0, 1), 32) << "nothing counted twice";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'used'"), 2);
}

TEST_F(Faults, RestartedWorkerHandsBackWhatItsPredecessorHeld) {
  std::vector<std::string> args = small_run(64, 16, 2, 9);
  args.insert(args.end(), {"--lease", "600"});
  coord_cmd("init", args);
  if (HasFatalFailure()) return;
  Proc& run = start_coord_run({"--iterations", "1", "--sample-interval", "0", "--checkpoint-interval", "0"});
  Proc& first = start_worker("laptop", {"--batch-size", "4", "--throttle-ms", "1000"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'") == 1; }, 20))
      << logs();
  first.signal(SIGKILL);
  ASSERT_EQ(first.wait(10), 128 + SIGKILL);
  Proc& second = start_worker("laptop", {"--batch-size", "4", "--exit-when-done"});
  auto rc = run.wait(30);  // far less than the 10-minute lease
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  EXPECT_EQ(second.wait(30), 0) << logs();
  EXPECT_NE(second.log().find("handed back 1 unit"), std::string::npos) << second.log();
  EXPECT_EQ(count("SELECT max(attempt) FROM gannf.work_units WHERE state = 'done'"), 2);
  EXPECT_EQ(count("SELECT samples FROM gannf.loss_history"), 32);
}

TEST_F(Faults, CoordinatorKilledMidRunResumesToTheSameWeights) {
  constexpr int kIterations = 8;
  const std::vector<std::string> init = small_run(64, 8, 2, 13);

  // The reference: a run that nobody interrupts, in a database of its own.
  const std::vector<std::string> want = reference_state(init, kIterations);
  if (HasFailure()) return;

  // The same run, its coordinator killed twice, each time mid-iteration: after
  // it has published an iteration of its own and a gradient of the next is in
  // (a pending submission), and before it publishes that one, which the
  // iteration counter shows. A kill that raced past the publish is tried
  // again. The workers run at different speeds (a: ~0.1 s per unit, b: ~1 s),
  // so each iteration holds a's gradient pending for most of a second while
  // the coordinator waits for b: the window the kill aims at is wide even on
  // a loaded machine (with equal speeds both arrive together and it is ms).
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  start_worker("a", {"--batch-size", "4", "--throttle-ms", "50"});
  start_worker("b", {"--batch-size", "4", "--throttle-ms", "500"}, 2);
  auto iteration = [&] { return count("SELECT iteration FROM gannf.training_state"); };
  // The open iteration if a gradient of it awaits the coordinator, else -1.
  auto open_with_gradients = [&] {
    return count("SELECT coalesce(max(t.iteration), -1) FROM gannf.training_state t "
                 "JOIN gannf.submissions s ON s.iteration = t.iteration AND s.state = 'pending'");
  };
  int runs = 0;
  for (int kill_at : {2, 5}) {
    bool mid_iteration = false;
    for (int attempt = 0; attempt < 5 && !mid_iteration; attempt++) {
      const int64_t target = std::max<int64_t>(kill_at, iteration() + 1);
      // Bounded one update past the target: on a loaded machine the test may
      // look too late, and then this run stops there (exit 0) and leaves the
      // rest of the run to the next attempt instead of finishing it.
      Proc& run = start_coord_run({"--iterations", std::to_string(std::min<int64_t>(target + 1, kIterations)), "--sample-interval", "0",
                                   "--checkpoint-interval", "0"},
                                  "coord-run-" + std::to_string(++runs) + ".log");
      int64_t open = -1;
      ASSERT_TRUE(wait_for([&] { return (open = open_with_gradients()) >= target; }, 60)) << logs();
      run.signal(SIGKILL);
      const auto rc = run.wait(10);
      ASSERT_TRUE(rc.has_value()) << logs();
      ASSERT_TRUE(*rc == 128 + SIGKILL || *rc == 0) << "coordinator exit status " << *rc << "\n" << logs();
      mid_iteration = *rc == 128 + SIGKILL && iteration() == open;
    }
    ASSERT_TRUE(mid_iteration) << "five kills in a row landed after the publish\n" << logs();
    ASSERT_LT(iteration(), kIterations) << "the run ended before the kill; slow the workers down";
  }
  Proc& last = start_coord_run({"--iterations", std::to_string(kIterations), "--sample-interval", "0",
                                "--checkpoint-interval", "0"},
                               "coord-run-last.log");
  auto rc = last.wait(90);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  ASSERT_EQ(iteration(), kIterations);

  expect_same_state(state_of(coord(), kIterations), want, "the restarts");
  // Nothing lost, nothing counted twice: every update used its 2 units.
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), kIterations);
  EXPECT_EQ(count("SELECT sum(samples) FROM gannf.loss_history"), 16 * kIterations);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'used'"), 2 * kIterations);
}

TEST_F(Faults, CutConnectionsAreReestablishedAndTheRunCarriesOn) {
  constexpr int kIterations = 6;
  coord_cmd("init", small_run(64, 8, 2, 17));
  if (HasFatalFailure()) return;
  Proc& a = start_worker("a", {"--batch-size", "4", "--throttle-ms", "100", "--exit-when-done"});
  Proc& b = start_worker("b", {"--batch-size", "4", "--throttle-ms", "100", "--exit-when-done"}, 2);
  Proc& run = start_coord_run({"--iterations", std::to_string(kIterations), "--sample-interval", "0",
                               "--checkpoint-interval", "0"});
  auto iteration = [&] { return count("SELECT iteration FROM gannf.training_state"); };
  for (int cut_at : {2, 4}) {
    ASSERT_TRUE(wait_for([&] { return iteration() >= cut_at; }, 60)) << logs();
    // Every session of this database but the test's own: the coordinator's
    // and both workers'.
    pg::Params p;
    p.add(db_).add((int32_t)coord().backend_pid());
    const int64_t cut = admin_->exec("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = $1 AND pid <> $2 AND backend_type = 'client backend'",
                                     p).get<int64_t>(0, 0);
    EXPECT_GE(cut, 3) << "coordinator and two workers";
  }
  auto rc = run.wait(90);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  EXPECT_EQ(a.wait(30), 0) << logs();
  EXPECT_EQ(b.wait(30), 0) << logs();
  EXPECT_NE(run.log().find("reconnected"), std::string::npos) << run.log();
  EXPECT_NE(a.log().find("lost the database connection"), std::string::npos) << a.log();
  expect_each_unit_counted_once([&](const std::string& sql) { return count(sql); }, kIterations, 2, 8);
}

TEST_F(Faults, AcknowledgedSubmissionLostByTheServerIsSentAgain) {
  coord_cmd("init", small_run(64, 8, 2, 31));  // lease: the default 300 s
  if (HasFatalFailure()) return;
  // No coordinator yet: the worker submits both units and then idles.
  Proc& w = start_worker("w", {"--batch-size", "4", "--poll-interval", "0.2"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.submissions WHERE state = 'pending'") == 2; },
                       60))
      << logs();
  // What a crash does to an asynchronous commit that never reached the disk:
  // the last submission is gone and its unit is claimed as before.
  const int64_t lost = count("SELECT max(id) FROM gannf.submissions");
  const int64_t unit = count("SELECT work_unit_id FROM gannf.submissions WHERE id = " + std::to_string(lost));
  {
    pg::Transaction tx(coord());
    coord().exec("UPDATE gannf.work_units SET state = 'claimed', submitted_at = NULL WHERE id = " +
                 std::to_string(unit));
    coord().exec("DELETE FROM gannf.submissions WHERE id = " + std::to_string(lost));
    tx.commit();
  }
  // ... and the worker's connections drop with the server.
  pg::Params p;
  p.add(db_).add((int32_t)coord().backend_pid());
  admin_->exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2 "
               "AND backend_type = 'client backend'",
               p);
  coord_.reset();
  // Sent again after the reconnect, well before the 300 s lease.
  ASSERT_TRUE(wait_for([&] {
    return count("SELECT count(*) FROM gannf.submissions WHERE state = 'pending' AND work_unit_id = " +
                 std::to_string(unit)) == 1;
  }, 30))
      << logs();
  EXPECT_NE(w.log().find("sending it again"), std::string::npos) << w.log();
  Proc& run = start_coord_run({"--iterations", "1", "--sample-interval", "0", "--checkpoint-interval", "0"});
  auto rc = run.wait(60);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'used'"), 2);
  EXPECT_EQ(count("SELECT samples FROM gannf.loss_history WHERE iteration = 0"), 16);
}

TEST_F(Faults, ServerCrashLosesGradientsNeverWeightsAndTheRunCarriesOn) {
  PrivateServer server(dir_ / "pg");
  ASSERT_EQ(server.script("start"), 0) << "see " << (dir_ / "pg-script.log");
  const std::string coord_info = server.conninfo("gannf_coord"), worker_info = server.conninfo("gannf_student"),
                    admin_info = server.conninfo("postgres");
  auto crash_and_restart = [&] {
    ASSERT_EQ(server.script("stop", "--immediate"), 0);
    ASSERT_EQ(server.script("start"), 0);
  };
  auto q = [&](const std::string& sql) {
    pg::Connection c(coord_info);
    return c.exec(sql).get<int64_t>(0, 0);
  };
  auto worker = [&](const std::string& name, std::vector<std::string> extra) -> Proc& {
    std::vector<std::string> args = {kWorkerBin, "--db", worker_info, "--name", name, "--threads", "1",
                                     "--poll-interval", "0.5", "--no-cache", "--batch-size", "4"};
    args.insert(args.end(), extra.begin(), extra.end());
    procs_.push_back(std::make_unique<Proc>(args, (dir_ / ("worker-" + name + ".log")).string()));
    return *procs_.back();
  };
  {
    // A short lease: a submission whose commit the crash lost leaves its
    // unit claimed until the lease passes (the worker heartbeats every
    // lease / 3 while it holds one).
    std::ofstream(dir_ / "config.yaml") << "worker:\n  heartbeat_interval: 2\n";
    std::vector<std::string> args = {kCoordBin,  "init",   "--config", (dir_ / "config.yaml").string(),
                                     "--db",     coord_info, "--lease",  "15"};
    for (auto& a : small_run(64, 8, 2, 29)) args.push_back(a);
    Proc init(args, (dir_ / "coord-init.log").string());
    ASSERT_EQ(init.wait(60), 0) << init.log();
  }

  // 1. Two accepted submissions, their rows made durable (CHECKPOINT), then
  //    a crash: the UNLOGGED blob table comes back empty.
  Proc& w1 = worker("early", {"--max-units", "2"});
  ASSERT_EQ(w1.wait(60), 0) << w1.log();
  pg::Connection(admin_info).exec("CHECKPOINT");
  crash_and_restart();
  if (HasFatalFailure()) return;
  EXPECT_EQ(q("SELECT count(*) FROM gannf.submissions WHERE state = 'pending'"), 2);
  EXPECT_EQ(q("SELECT count(*) FROM gannf.submission_blobs"), 0);
  EXPECT_EQ(q("SELECT count(*) FROM gannf.weights WHERE iteration = 0"), 2);

  // 2. A run across a second crash, with the coordinator and two workers
  //    connected to the server when it goes.
  constexpr int kIterations = 5;
  std::vector<std::string> run_args = {kCoordBin, "run", "--db", coord_info, "--output-dir", (dir_ / "out").string(),
                                       "--iterations", std::to_string(kIterations), "--sample-interval", "0",
                                       "--checkpoint-interval", "0"};
  procs_.push_back(std::make_unique<Proc>(run_args, (dir_ / "coord-run.log").string()));
  Proc& run = *procs_.back();
  Proc& a = worker("a", {"--throttle-ms", "50", "--exit-when-done"});
  Proc& b = worker("b", {"--throttle-ms", "50", "--exit-when-done"});
  ASSERT_TRUE(wait_for([&] {
    try {
      return q("SELECT iteration FROM gannf.training_state") >= 2;
    } catch (const pg::Error&) {
      return false;
    }
  }, 90)) << logs();
  // What was committed before the crash survives it bit for bit.
  int64_t k_before = 0;
  std::vector<std::string> before;
  {
    pg::Connection c(coord_info);
    k_before = c.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0);
    before = state_of(c, k_before);
  }
  crash_and_restart();
  if (HasFatalFailure()) return;
  {
    pg::Connection c(coord_info);  // the coordinator's reconnect waits >= 1 s: it cannot have moved on twice
    EXPECT_GE(c.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0), k_before);
    EXPECT_EQ(state_of(c, k_before), before);
  }
  auto rc = run.wait(150);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  EXPECT_EQ(a.wait(30), 0) << logs();
  EXPECT_EQ(b.wait(30), 0) << logs();
  EXPECT_NE(run.log().find("reconnected"), std::string::npos) << run.log();

  EXPECT_EQ(before.size(), 10u);
  EXPECT_EQ(q("SELECT iteration FROM gannf.training_state"), kIterations);
  EXPECT_EQ(q("SELECT count(*) FROM gannf.weights WHERE iteration = " + std::to_string(kIterations)), 2);
  // The lost gradients were dropped as stale with the reason, not used.
  EXPECT_GE(q("SELECT count(*) FROM gannf.submissions WHERE state = 'stale' "
              "AND reject_reason LIKE '%restarted without a clean shutdown%'"),
            2)
      << logs();
  EXPECT_EQ(q("SELECT count(*) FROM gannf.submissions WHERE state = 'rejected'"), 0);
  expect_each_unit_counted_once(q, kIterations, 2, 8);
}

}  // namespace
