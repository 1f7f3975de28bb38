// Operations faults (labels ops, faults; issue 13): the server failing under
// a coordinator at an exact point of its iteration, chosen by the
// coordinator's test hooks (GANNF_TEST_PAUSE_AT, GANNF_TEST_LOSE_COMMIT_REPLY
// in src/cluster/coordinator.cpp), never by timing.
//
//  - A server that dies without a word (its backend SIGKILLed): libpq's
//    "server closed the connection unexpectedly" has no SQLSTATE, and is a
//    lost connection all the same.
//  - The server crashes (pg_ctl stop -m immediate) at each phase of the
//    coordinator's iteration, and one COMMIT's reply is lost after the commit
//    reached the disk: the run ends bit-identical to an uninterrupted one,
//    with one status line, one losses.csv row and one checkpoint per update.
//  - Power loss: as a crash, but the data files go back to the last
//    checkpoint and the WAL loses what the server had not flushed; the
//    update whose COMMIT was answered survives.
//  - The database turns read-only for longer than every timeout (the lease,
//    the workers' old five-errors rule), and a coordinator is restarted
//    meanwhile: everyone waits with one line a minute and carries on.
//  - The disk is full (SQLSTATE 53100, answered by triggers while a flag row
//    exists) for longer than every timeout, first under the coordinator's
//    write of an update, then under the workers' submissions: the same.
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>

#include "test_cluster_harness.h"

namespace {

using namespace gannf;
using namespace gannf::test;

class OpsFaults : public ClusterRun {
 protected:
  // How many times `needle` occurs in `hay`.
  static int occurrences(const std::string& hay, const std::string& needle) {
    int n = 0;
    for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + needle.size())) ++n;
    return n;
  }

  // After a spell of refused writes: the coordinator (first) and the workers
  // exit 0, the state is an uninterrupted run's, each update and unit counted
  // once, and each process said what the server answered (`answer`) in one
  // line a minute — once, or twice where the minute turned over — and never
  // gave up.
  void expect_waited_out(const std::vector<Proc*>& procs, int iterations, const std::vector<std::string>& want,
                         const char* what, const std::string& answer) {
    auto rc = procs[0]->wait(180);
    ASSERT_TRUE(rc.has_value()) << logs();
    ASSERT_EQ(*rc, 0) << logs();
    for (size_t i = 1; i < procs.size(); ++i) EXPECT_EQ(procs[i]->wait(60), 0) << logs();
    EXPECT_EQ(count("SELECT iteration FROM gannf.training_state"), iterations);
    expect_same_state(run_state(coord(), iterations), want, what);
    EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), iterations);
    EXPECT_EQ(count("SELECT sum(samples) FROM gannf.loss_history"), 16 * iterations);
    EXPECT_EQ(count("SELECT count(*) FROM (SELECT work_unit_id FROM gannf.submissions WHERE state = 'used' "
                    "GROUP BY work_unit_id HAVING count(*) > 1) twice"),
              0);
    for (Proc* p : procs) {
      const std::string log = p->log();
      const int said = occurrences(log, "refuses writes");
      EXPECT_GE(said, 1) << log;
      EXPECT_LE(said, 2) << log;
      EXPECT_NE(log.find(answer), std::string::npos) << log;
      EXPECT_EQ(log.find("giving up"), std::string::npos) << log;
    }
  }

  // gannf-coord init of `init` on a private server, with a short lease and
  // heartbeat: a submission whose asynchronous commit a crash lost leaves its
  // unit claimed until the lease passes.
  void init_private(const std::string& coord_info, const std::vector<std::string>& init) {
    std::ofstream(dir_ / "config.yaml") << "worker:\n  heartbeat_interval: 2\n";
    std::vector<std::string> args = {kCoordBin, "init", "--config", (dir_ / "config.yaml").string(),
                                     "--db",    coord_info, "--lease", "15"};
    args.insert(args.end(), init.begin(), init.end());
    Proc p(args, (dir_ / "coord-init.log").string());
    ASSERT_EQ(p.wait(60), 0) << p.log();
  }

  // Workers a and b, slowed a little, that leave when the run ends.
  std::vector<Proc*> start_two_workers(const std::string& worker_info) {
    std::vector<Proc*> workers;
    for (const char* name : {"a", "b"}) {
      procs_.push_back(std::make_unique<Proc>(
          std::vector<std::string>{kWorkerBin, "--db", worker_info, "--name", name, "--threads", "1",
                                   "--poll-interval", "0.5", "--no-cache", "--batch-size", "4", "--throttle-ms",
                                   "50", "--exit-when-done"},
          (dir_ / ("worker-" + std::string(name) + ".log")).string()));
      workers.push_back(procs_.back().get());
    }
    return workers;
  }

  // The run and its workers exit 0 and the run is an uninterrupted one's:
  // its state bit for bit, and every update once in the database, in
  // losses.csv and in the status lines (derived from what committed).
  void expect_every_update_once(Proc& run, const std::vector<Proc*>& workers, const std::string& coord_info,
                                const fs::path& out, int iterations, const std::vector<std::string>& want,
                                const char* after) {
    auto rc = run.wait(300);
    ASSERT_TRUE(rc.has_value()) << logs();
    ASSERT_EQ(*rc, 0) << logs();
    for (Proc* w : workers) EXPECT_EQ(w->wait(60), 0) << logs();
    pg::Connection c(coord_info);
    EXPECT_EQ(c.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0), iterations);
    expect_same_state(run_state(c, iterations), want, after);
    EXPECT_EQ(c.exec("SELECT count(*) FROM gannf.loss_history").get<int64_t>(0, 0), iterations);
    EXPECT_EQ(c.exec("SELECT sum(samples) FROM gannf.loss_history").get<int64_t>(0, 0), 16 * iterations);
    std::vector<int64_t> steps = loss_steps(out), expected;
    for (int s = 1; s <= iterations; ++s) expected.push_back(s);
    EXPECT_EQ(steps, expected) << "losses.csv";
    const std::string log = run.log();
    for (int s = 1; s <= iterations; ++s)
      EXPECT_EQ(occurrences(log, "\niteration " + std::to_string(s) + " | "), 1) << "status line of step " << s;
  }

  // The step column of out/losses.csv, in file order.
  std::vector<int64_t> loss_steps(const fs::path& out) {
    std::ifstream f(out / "losses.csv");
    std::string line;
    std::vector<int64_t> steps;
    std::getline(f, line);  // the header
    while (std::getline(f, line))
      if (!line.empty()) steps.push_back(std::stoll(line.substr(0, line.find(','))));
    return steps;
  }
};

TEST_F(OpsFaults, ServerThatDiesWithoutAWordIsALostConnection) {
  PrivateServer server(dir_ / "pg");
  ASSERT_EQ(server.script("start"), 0) << "see " << (dir_ / "pg-script.log");
  // Two ways a session's server vanishes: an immediate shutdown (its backend
  // says goodbye as a WARNING, which carries no error, then closes: libpq
  // reports "server closed the connection unexpectedly" without a SQLSTATE,
  // and PQstatus may still say OK), and a SIGKILLed backend.
  for (const bool shutdown : {true, false}) {
    pg::Connection c(server.conninfo("postgres"));
    c.on_notice({});
    c.exec("SELECT 1");
    if (shutdown) {
      ASSERT_EQ(server.script("stop", "--immediate"), 0);
      ASSERT_EQ(server.script("start"), 0);
    } else {
      ASSERT_EQ(::kill(c.backend_pid(), SIGKILL), 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    try {
      c.exec("SELECT 1");
      ADD_FAILURE() << "a statement on a vanished server succeeded";
    } catch (const pg::Error& e) {
      EXPECT_TRUE(e.connection_lost()) << (shutdown ? "immediate shutdown: " : "killed backend: ") << e.what();
      EXPECT_TRUE(e.retry_later());
    }
    // The postmaster restarts everything after a backend's SIGKILL.
    ASSERT_TRUE(wait_for([&] {
      try {
        pg::Connection(server.conninfo("postgres")).exec("SELECT 1");
        return true;
      } catch (const pg::Error&) {
        return false;
      }
    }, 60));
  }
}

TEST_F(OpsFaults, ServerCrashAtEachPhaseAndALostCommitReplyEndBitIdentical) {
  constexpr int kIterations = 10;
  const std::vector<std::string> init = small_run(64, 8, 2, 41);
  const std::vector<std::string> want = reference_state(init, kIterations);
  ASSERT_EQ(want.size(), 10u);

  PrivateServer server(dir_ / "pg");
  ASSERT_EQ(server.script("start"), 0) << "see " << (dir_ / "pg-script.log");
  const std::string coord_info = server.conninfo("gannf_coord"), worker_info = server.conninfo("gannf_student");
  init_private(coord_info, init);
  if (HasFatalFailure()) return;
  // Each phase at an iteration of its own, in the order a run meets them.
  const std::vector<std::string> phases = {"waiting", "locked", "updated", "published",
                                           "commit",  "committed", "vacuum"};
  std::string pause_at;
  for (size_t i = 0; i < phases.size(); ++i)
    pause_at += (i ? "," : "") + phases[i] + ":" + std::to_string(i + 1);
  const fs::path hooks = dir_ / "hooks", out = dir_ / "out";
  fs::create_directories(hooks);
  procs_.push_back(std::make_unique<Proc>(
      std::vector<std::string>{kCoordBin, "run", "--db", coord_info, "--output-dir", out.string(), "--iterations",
                               std::to_string(kIterations), "--sample-interval", "0", "--checkpoint-interval", "9"},
      (dir_ / "coord-run.log").string(),
      std::vector<std::string>{"GANNF_TEST_PAUSE_AT=" + pause_at, "GANNF_TEST_HOOK_DIR=" + hooks.string(),
                               "GANNF_TEST_LOSE_COMMIT_REPLY=8"}));
  Proc& run = *procs_.back();
  const std::vector<Proc*> workers = start_two_workers(worker_info);
  for (const std::string& phase : phases) {
    ASSERT_TRUE(wait_for([&] { return fs::exists(hooks / (phase + ".reached")) || !run.running(); }, 180))
        << phase << "\n" << logs();
    ASSERT_TRUE(run.running()) << "the coordinator exited before phase " << phase << "\n" << logs();
    ASSERT_EQ(server.script("stop", "--immediate"), 0) << phase;
    ASSERT_EQ(server.script("start"), 0) << phase;
    std::ofstream(hooks / (phase + ".go")) << "go\n";
  }
  // Every update once, the one whose COMMIT reply was lost (iteration 8,
  // step 9) included.
  expect_every_update_once(run, workers, coord_info, out, kIterations, want, "the crashes");
  if (HasFatalFailure()) return;
  const std::string log = run.log();
  EXPECT_NE(log.find("update 8 had committed before the connection dropped"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(out / "checkpoints" / "step-00000009" / "state.safetensors"))
      << "the checkpoint due at the step whose COMMIT reply was lost (--checkpoint-interval 9)";
  EXPECT_EQ(occurrences(log, "reconnected to"), (int)phases.size() + 1) << log;
}

TEST_F(OpsFaults, ReadOnlyServerLongerThanEveryTimeoutIsWaitedOut) {
  constexpr int kIterations = 6;
  constexpr double kReadOnlySeconds = 25;  // > the lease (15 s) and the workers' old 5-error limit (~15 s)
  std::vector<std::string> init = small_run(64, 8, 2, 43);
  const std::vector<std::string> want = reference_state(init, kIterations);
  std::ofstream(dir_ / "config.yaml") << "worker:\n  heartbeat_interval: 2\n";  // under the 15 s lease
  init.insert(init.end(), {"--lease", "15", "--config", (dir_ / "config.yaml").string()});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  Proc& a = start_worker("a", {"--batch-size", "4", "--throttle-ms", "100", "--exit-when-done"});
  Proc& b = start_worker("b", {"--batch-size", "4", "--throttle-ms", "100", "--exit-when-done"}, 2);
  Proc& first = start_coord_run({"--iterations", std::to_string(kIterations), "--sample-interval", "0",
                                 "--checkpoint-interval", "0"},
                                "coord-run-1.log");
  auto iteration = [&] { return count("SELECT iteration FROM gannf.training_state"); };
  ASSERT_TRUE(wait_for([&] { return iteration() >= 2; }, 120)) << logs();

  // Read-only for every new session; the sessions there are now are cut, so
  // that everyone reconnects into it (the test's own stays writable).
  admin_->exec("ALTER DATABASE " + db_ + " SET default_transaction_read_only = on");
  pg::Params p;
  p.add(db_).add((int32_t)coord().backend_pid());
  admin_->exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2 "
               "AND backend_type = 'client backend'",
               p);
  const int64_t frozen = iteration();
  // A coordinator (re)started meanwhile waits instead of dying on CREATE SCHEMA.
  first.signal(SIGKILL);
  ASSERT_TRUE(first.wait(10).has_value());
  Proc& second = start_coord_run({"--iterations", std::to_string(kIterations), "--sample-interval", "0",
                                  "--checkpoint-interval", "0"},
                                 "coord-run-2.log");
  std::this_thread::sleep_for(std::chrono::duration<double>(kReadOnlySeconds));
  EXPECT_TRUE(second.running()) << second.log();
  EXPECT_TRUE(a.running()) << a.log();
  EXPECT_TRUE(b.running()) << b.log();
  EXPECT_EQ(iteration(), frozen);
  admin_->exec("ALTER DATABASE " + db_ + " RESET default_transaction_read_only");

  expect_waited_out({&second, &a, &b}, kIterations, want, "the read-only spell", "read-only");
}

// A full disk (SQLSTATE 53100), made deterministic: triggers that answer
// disk_full, as PostgreSQL does when a file cannot grow, on the rows an
// update and a submission add, while public.gt_full has a row. The first
// spell lands after the coordinator's update is computed (test hook), so its
// write is refused; the second while the workers hold the next units, so
// their submissions are. Each spell is longer than the lease; everyone waits,
// says so once, and the run ends as an uninterrupted one.
TEST_F(OpsFaults, FullServerLongerThanEveryTimeoutIsWaitedOut) {
  constexpr int kIterations = 5;
  constexpr double kFullSeconds = 16;  // > the lease (15 s) and the workers' old 5-error limit
  std::vector<std::string> init = small_run(64, 8, 2, 47);
  const std::vector<std::string> want = reference_state(init, kIterations);
  std::ofstream(dir_ / "config.yaml") << "worker:\n  heartbeat_interval: 2\n";
  init.insert(init.end(), {"--lease", "15", "--config", (dir_ / "config.yaml").string()});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  pg::Connection root = connect_or_fail("user=postgres dbname=" + db_);
  root.on_notice({});
  root.exec_script(
      "CREATE TABLE public.gt_full (on_ boolean);"
      "CREATE FUNCTION public.gt_refuse() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN"
      "  IF EXISTS (SELECT FROM public.gt_full) THEN"
      "    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';"
      "  END IF; RETURN NEW; END $$;"
      "CREATE TRIGGER gt_full BEFORE INSERT ON gannf.weights FOR EACH ROW EXECUTE FUNCTION public.gt_refuse();"
      "CREATE TRIGGER gt_full BEFORE INSERT ON gannf.loss_history FOR EACH ROW EXECUTE FUNCTION public.gt_refuse();"
      "CREATE TRIGGER gt_full BEFORE INSERT ON gannf.submissions FOR EACH ROW EXECUTE FUNCTION public.gt_refuse();");
  const fs::path hooks = dir_ / "hooks";
  fs::create_directories(hooks);
  Proc& a = start_worker("a", {"--batch-size", "4", "--throttle-ms", "100", "--exit-when-done"});
  Proc& b = start_worker("b", {"--batch-size", "4", "--throttle-ms", "100", "--exit-when-done"}, 2);
  procs_.push_back(std::make_unique<Proc>(
      std::vector<std::string>{kCoordBin, "run", "--db", coord_db(), "--output-dir", (dir_ / "out").string(),
                               "--iterations", std::to_string(kIterations), "--sample-interval", "0",
                               "--checkpoint-interval", "0"},
      (dir_ / "coord-run.log").string(),
      std::vector<std::string>{"GANNF_TEST_PAUSE_AT=updated:2,waiting:4", "GANNF_TEST_HOOK_DIR=" + hooks.string()}));
  Proc& run = *procs_.back();
  auto iteration = [&] { return count("SELECT iteration FROM gannf.training_state"); };
  auto spell = [&](const char* phase) {
    ASSERT_TRUE(wait_for([&] { return fs::exists(hooks / (std::string(phase) + ".reached")); }, 120)) << logs();
    const int64_t frozen = iteration();
    root.exec("INSERT INTO public.gt_full VALUES (true)");
    std::ofstream(hooks / (std::string(phase) + ".go")) << "\n";
    std::this_thread::sleep_for(std::chrono::duration<double>(kFullSeconds));
    EXPECT_TRUE(run.running()) << run.log();
    EXPECT_TRUE(a.running()) << a.log();
    EXPECT_TRUE(b.running()) << b.log();
    EXPECT_EQ(iteration(), frozen);
    root.exec("DELETE FROM public.gt_full");
  };
  spell("updated");  // an update computed, its write refused
  if (HasFatalFailure()) return;
  spell("waiting");  // the next units out, their submissions refused
  if (HasFatalFailure()) return;

  // The coordinator met the first spell, the workers the second.
  expect_waited_out({&run, &a, &b}, kIterations, want, "the full-disk spells", "No space left on device");
}

// Copies the files under `from` to `to` (folders made as needed), leaving
// out the top-level entries in `skip`; files that vanish meanwhile (a running
// server's temporary files) are left out too. Each file copied gets `owner`'s
// uid and gid (the server's user, where the test runs as root).
void copy_files(const fs::path& from, const fs::path& to, const std::vector<std::string>& skip, const fs::path& owner) {
  struct stat o {};
  ASSERT_EQ(::stat(owner.c_str(), &o), 0) << owner;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(from, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (ec) break;
    const fs::path rel = fs::relative(it->path(), from);
    if (std::find(skip.begin(), skip.end(), rel.begin()->string()) != skip.end()) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    const fs::path dst = to / rel;
    std::error_code e2;
    if (it->is_directory(e2)) {
      fs::create_directories(dst, e2);
    } else if (it->is_regular_file(e2)) {
      if (!fs::copy_file(it->path(), dst, fs::copy_options::overwrite_existing, e2)) continue;
    } else {
      continue;
    }
    if (::chown(dst.c_str(), o.st_uid, o.st_gid) != 0) ADD_FAILURE() << "chown " << dst;
  }
}

// Power loss: the server dies, and so does every write the kernel had not
// yet put on the disk. Emulated in the two parts that PostgreSQL's
// durability rests on (fsync and full_page_writes on, tools/pg-embedded.sh):
// the data files go back to what they held right after a CHECKPOINT (the
// worst case: the kernel wrote back none of the pages since; copied at
// iteration 2), and the WAL loses everything past the position the server
// had flushed (read with the coordinator paused just after committing and
// reporting update 6, the workers stopped). An immediate stop alone (the test
// above) keeps both in the kernel's cache. The update whose COMMIT was
// answered survives (synchronous commit), submissions answered
// asynchronously may not (their workers send them again), and the run ends
// bit-identical with every update reported once.
TEST_F(OpsFaults, PowerLossKeepsEveryAnsweredCommitAndEndsBitIdentical) {
  constexpr int kIterations = 10;
  const std::vector<std::string> init = small_run(64, 8, 2, 43);
  const std::vector<std::string> want = reference_state(init, kIterations);
  ASSERT_EQ(want.size(), 10u);

  PrivateServer server(dir_ / "pg");
  ASSERT_EQ(server.script("start"), 0) << "see " << (dir_ / "pg-script.log");
  const std::string coord_info = server.conninfo("gannf_coord"), worker_info = server.conninfo("gannf_student");
  init_private(coord_info, init);
  if (HasFatalFailure()) return;
  auto su = std::make_unique<pg::Connection>(server.conninfo("postgres"));
  const fs::path data = su->exec("SHOW data_directory").get<std::string>(0, 0);
  const fs::path hooks = dir_ / "hooks", out = dir_ / "out", snapshot = dir_ / "data-at-checkpoint";
  fs::create_directories(hooks);
  procs_.push_back(std::make_unique<Proc>(
      std::vector<std::string>{kCoordBin, "run", "--db", coord_info, "--output-dir", out.string(), "--iterations",
                               std::to_string(kIterations), "--sample-interval", "0", "--checkpoint-interval", "0"},
      (dir_ / "coord-run.log").string(),
      std::vector<std::string>{"GANNF_TEST_PAUSE_AT=committed:2,vacuum:6", "GANNF_TEST_HOOK_DIR=" + hooks.string()}));
  Proc& run = *procs_.back();
  const std::vector<Proc*> workers = start_two_workers(worker_info);
  auto reach = [&](const std::string& phase) {
    return wait_for([&] { return fs::exists(hooks / (phase + ".reached")) || !run.running(); }, 180) && run.running();
  };
  const std::string checkpoint_lsn = "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()";

  // Iteration 2: a checkpoint, and the data files as it left them.
  ASSERT_TRUE(reach("committed")) << logs();
  su->exec("CHECKPOINT");
  const std::string checkpoint = su->exec(checkpoint_lsn).get<std::string>(0, 0);
  copy_files(data, snapshot, {"pg_wal", "postmaster.pid", "postmaster.opts"}, data);
  ASSERT_FALSE(HasFailure());
  std::ofstream(hooks / "committed.go") << "go\n";

  // Update 6 committed and reported: the power goes.
  ASSERT_TRUE(reach("vacuum")) << logs();
  for (Proc* w : workers) w->signal(SIGSTOP);
  pg::Result f = su->exec(
      "SELECT file_name, file_offset, pg_current_wal_flush_lsn()::text FROM "
      "pg_walfile_name_offset(pg_current_wal_flush_lsn())");
  const std::string segment = f.get<std::string>(0, 0), flushed = f.get<std::string>(0, 2);
  const int64_t offset = f.get<int32_t>(0, 1);
  ASSERT_EQ(su->exec(checkpoint_lsn).get<std::string>(0, 0), checkpoint)
      << "a checkpoint since iteration 2: the copied data files are not the worst case any more";
  su.reset();
  ASSERT_EQ(server.script("stop", "--immediate"), 0);
  copy_files(snapshot, data, {}, data);
  {
    // Zeros from the flushed position to the segment's end; later segments gone.
    std::fstream wal(data / "pg_wal" / segment, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(wal) << segment;
    wal.seekg(0, std::ios::end);
    const int64_t size = wal.tellg();
    const std::string zeros((size_t)std::max<int64_t>(0, size - offset), '\0');
    wal.seekp(offset);
    wal.write(zeros.data(), (std::streamsize)zeros.size());
    ASSERT_TRUE(wal.good());
    for (const auto& e : fs::directory_iterator(data / "pg_wal")) {
      const std::string n = e.path().filename().string();
      if (e.is_regular_file() && n.size() == 24 && n.find_first_not_of("0123456789ABCDEF") == std::string::npos &&
          n > segment)
        fs::remove(e.path());
    }
  }
  std::printf("power loss after update 6: data files of checkpoint %s, WAL cut at %s (%s + %lld)\n",
              checkpoint.c_str(), flushed.c_str(), segment.c_str(), (long long)offset);
  ASSERT_EQ(server.script("start"), 0) << "see " << (dir_ / "pg-script.log");
  for (Proc* w : workers) w->signal(SIGCONT);
  std::ofstream(hooks / "vacuum.go") << "go\n";

  expect_every_update_once(run, workers, coord_info, out, kIterations, want, "the power loss");
  if (HasFatalFailure()) return;
  const std::string log = run.log();
  // The answered COMMIT of update 6 outlived the power loss.
  EXPECT_NE(log.find("resuming at iteration 7"), std::string::npos) << log;
}

}  // namespace
