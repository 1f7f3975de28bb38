// The run's life cycle and what people are told (issue 13): stop, pause and
// resume from another terminal, status's truth in each state, a bounded run
// that computes no unit it will not use, a worker started before init, a
// wrong password, a flag named by its own name. Real PostgreSQL (the ctest
// fixture), real gannf-coord and gannf-worker processes.
#include <nlohmann/json.hpp>

#include "test_cluster_harness.h"

using namespace gannf;
using namespace gannf::test;

namespace {

class OpsLife : public ClusterRun {
 protected:
  // gannf-coord CMD ARGS... to completion: (exit code, output).
  std::pair<int, std::string> coord_out(const std::string& cmd, std::vector<std::string> args = {},
                                        const std::string& db = "") {
    args.insert(args.begin(), {kCoordBin, cmd, "--db", db.empty() ? coord_db() : db});
    Proc p(args, (dir_ / ("coord-" + cmd + "-" + std::to_string(++calls_) + ".log")).string());
    auto rc = p.wait(60);
    EXPECT_TRUE(rc.has_value()) << p.command() << " did not finish:\n" << p.log();
    return {rc.value_or(-1), p.log()};
  }
  std::string status() {
    auto [rc, out] = coord_out("status");
    EXPECT_EQ(rc, 0) << out;
    return out;
  }
  std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
  int64_t iteration() { return count("SELECT iteration FROM gannf.training_state"); }
  static int occurrences(const std::string& s, const std::string& what) {
    int n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) n++;
    return n;
  }
  int calls_ = 0;
};

TEST_F(OpsLife, StopPauseResumeFromAnotherProcess) {
  coord_cmd("init", small_run(64, 8, 2, 3));
  if (HasFatalFailure()) return;
  // Right after init: not 'running' — nothing runs it yet.
  EXPECT_NE(first_line(status()).find(": ready"), std::string::npos) << status();

  Proc& a = start_worker("a", {"--batch-size", "8", "--exit-when-done", "--throttle-ms", "50"});
  Proc& b = start_worker("b", {"--batch-size", "8", "--throttle-ms", "50"}, 2);
  Proc& run = start_coord_run({"--sample-interval", "0", "--checkpoint-interval", "0"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.loss_history") >= 2; }, 60)) << logs();
  std::string st = status();
  EXPECT_NE(first_line(st).find(": running"), std::string::npos) << st;
  EXPECT_NE(st.find("2 workers present"), std::string::npos) << st;
  EXPECT_NE(st.find("last updates:"), std::string::npos) << st;

  // Pause: no update while paused (one already being committed may land).
  auto [prc, pout] = coord_out("pause");
  ASSERT_EQ(prc, 0) << pout;
  EXPECT_NE(pout.find("running -> paused"), std::string::npos) << pout;
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const int64_t held = iteration();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(iteration(), held) << "an update was made while paused\n" << logs();
  EXPECT_NE(first_line(status()).find(": paused"), std::string::npos) << status();
  EXPECT_TRUE(wait_for([&] { return a.log().find("the run is paused") != std::string::npos; }, 20)) << logs();
  EXPECT_TRUE(run.running());

  // Resume: updates again.
  auto [rrc, rout] = coord_out("resume");
  ASSERT_EQ(rrc, 0) << rout;
  ASSERT_TRUE(wait_for([&] { return iteration() >= held + 2; }, 60)) << logs();

  // Stop: the coordinator saves and exits, saying why; the --exit-when-done
  // worker exits; the other waits, saying why.
  auto [src, sout] = coord_out("stop");
  ASSERT_EQ(src, 0) << sout;
  auto rc = run.wait(60);
  ASSERT_TRUE(rc.has_value()) << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_NE(run.log().find("stopped by 'gannf-coord stop'"), std::string::npos) << run.log();
  EXPECT_EQ(a.wait(60), 0) << logs();
  EXPECT_NE(a.log().find("the run is stopped"), std::string::npos) << a.log();
  ASSERT_TRUE(wait_for([&] { return b.log().find("waiting until 'gannf-coord run'") != std::string::npos; }, 30))
      << logs();
  EXPECT_TRUE(b.running());
  st = status();
  EXPECT_NE(first_line(st).find(": stopped"), std::string::npos) << st;
  // The worker that exited is not present; the waiting one is.
  EXPECT_NE(st.find("1 workers present"), std::string::npos) << st;
  EXPECT_EQ(st.find("\n    a "), std::string::npos) << st;
  b.signal(SIGINT);
  EXPECT_EQ(b.wait(30), 0) << logs();
  EXPECT_NE(status().find("0 workers present"), std::string::npos) << status();
  // Stop and pause again: a clear answer, not a silent no-op.
  auto [arc, aout] = coord_out("resume");
  EXPECT_EQ(arc, 1) << aout;
  EXPECT_NE(aout.find("it is stopped"), std::string::npos) << aout;

  // A coordinator interrupted by Ctrl-C: status does not say 'running'.
  Proc& again = start_coord_run({"--sample-interval", "0", "--checkpoint-interval", "0"}, "coord-run-2.log");
  ASSERT_TRUE(wait_for([&] { return first_line(status()).find(": running") != std::string::npos; }, 30))
      << logs();
  again.signal(SIGINT);
  EXPECT_EQ(again.wait(60), 0) << logs();
  st = status();
  EXPECT_NE(first_line(st).find("coordinator not running"), std::string::npos) << st;
}

// A run bounded by --iterations stops in its last update's commit: no unit
// of the iteration after it is claimed or computed, the workers with
// --exit-when-done exit, and status says 'stopped' with iteration N of N.
TEST_F(OpsLife, BoundedRunComputesNoUnitItWillNotUse) {
  coord_cmd("init", small_run(64, 8, 2, 4));
  if (HasFatalFailure()) return;
  Proc& a = start_worker("a", {"--batch-size", "8", "--exit-when-done"});
  Proc& b = start_worker("b", {"--batch-size", "8", "--exit-when-done"}, 2);
  Proc& run = start_coord_run({"--iterations", "3", "--sample-interval", "0", "--checkpoint-interval", "0"});
  ASSERT_EQ(run.wait(120), 0) << logs();
  EXPECT_EQ(a.wait(60), 0) << logs();
  EXPECT_EQ(b.wait(60), 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE iteration >= 3"), 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE attempt > 0 AND state <> 'done'"), 0) << logs();
  const std::string st = status();
  EXPECT_NE(first_line(st).find(": stopped"), std::string::npos) << st;
  EXPECT_NE(st.find("iteration 3 of 3 (--iterations)"), std::string::npos) << st;
  EXPECT_NE(st.find("epoch 1 of"), std::string::npos) << st;
}

// The last epoch done: 'finished', the --exit-when-done worker exits, the
// other one says why it waits; status --watch redraws until Ctrl-C.
TEST_F(OpsLife, FinishedRunSaysSo) {
  std::vector<std::string> args = small_run(32, 8, 2, 6);
  args.insert(args.end(), {"--epochs", "1"});
  coord_cmd("init", args);
  if (HasFatalFailure()) return;
  Proc& a = start_worker("a", {"--batch-size", "8", "--exit-when-done"});
  Proc& b = start_worker("b", {"--batch-size", "8"}, 2);
  Proc& run = start_coord_run({"--sample-interval", "0", "--checkpoint-interval", "0"});
  ASSERT_EQ(run.wait(120), 0) << logs();
  EXPECT_NE(run.log().find("all epochs done"), std::string::npos) << run.log();
  EXPECT_EQ(a.wait(60), 0) << logs();
  ASSERT_TRUE(wait_for([&] { return b.log().find("the run is finished; waiting for a new run") != std::string::npos; },
                       30)) << logs();
  const std::string st = status();
  EXPECT_NE(first_line(st).find(": finished"), std::string::npos) << st;
  EXPECT_NE(st.find("iteration 2 of 2,"), std::string::npos) << st;
  EXPECT_EQ(st.find("units open"), std::string::npos) << "nothing is pending after the end:\n" << st;

  Proc watch({kCoordBin, "status", "--db", coord_db(), "--watch", "--interval", "0.3"},
             (dir_ / "status-watch.log").string());
  ASSERT_TRUE(wait_for([&] { return occurrences(watch.log(), ": finished") >= 2; }, 30)) << watch.log();
  watch.signal(SIGINT);
  EXPECT_EQ(watch.wait(10), 0) << watch.log();
}

// A worker started before the instructor's init waits, with one line, and
// joins once the run exists.
TEST_F(OpsLife, WorkerStartedBeforeInitWaitsForTheRun) {
  Proc& w = start_worker("early", {"--batch-size", "8", "--exit-when-done"});
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ASSERT_TRUE(w.running()) << w.log();
  EXPECT_EQ(occurrences(w.log(), "waiting for the instructor's 'gannf-coord init'"), 1) << w.log();
  EXPECT_EQ(w.log().find("error"), std::string::npos) << w.log();
  coord_cmd("init", small_run(32, 8, 2, 5));
  if (HasFatalFailure()) return;
  Proc& run = start_coord_run({"--iterations", "1", "--sample-interval", "0", "--checkpoint-interval", "0"});
  EXPECT_EQ(run.wait(120), 0) << logs();
  EXPECT_EQ(w.wait(60), 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 1) << logs();
}

// A wrong password is said once, as such, and ends the program with 1 —
// before gannf-coord init reads any dataset.
TEST_F(OpsLife, WrongPasswordIsSaidOnceAndExits) {
  // A private server on TCP, where logins need their passwords (the
  // fixture's trusts its Unix socket).
  PrivateServer server(dir_ / "pg");
  ASSERT_EQ(server.script("start", "--tcp"), 0) << "see " << (dir_ / "pg-script.log");
  const std::string tcp = "host=127.0.0.1 port=" + server.port() + " dbname=gannf password=wrong-password";
  Proc& w = start_worker("pw", {"--db", tcp + " user=gannf_student"});
  auto rc = w.wait(60);
  ASSERT_TRUE(rc.has_value()) << w.log();
  EXPECT_EQ(*rc, 1) << w.log();
  EXPECT_EQ(occurrences(w.log(), "refused this login"), 1) << w.log();
  EXPECT_EQ(w.log().find("retrying"), std::string::npos) << w.log();

  // init with a dataset that does not exist: the login is what it reports.
  auto [irc, iout] = coord_out("init", {"--dataset", (dir_ / "no-such-dataset").string()}, tcp + " user=gannf_coord");
  EXPECT_EQ(irc, 1) << iout;
  EXPECT_NE(iout.find("refused the instructor's login"), std::string::npos) << iout;
  EXPECT_EQ(iout.find("no-such-dataset"), std::string::npos) << iout;
  auto [src, sout] = coord_out("status", {}, tcp + " user=gannf_coord");
  EXPECT_EQ(src, 1) << sout;
  EXPECT_NE(sout.find("refused the instructor's login"), std::string::npos) << sout;
}

TEST_F(OpsLife, FlagsAreNamedByTheirOwnName) {
  auto [rc, out] = coord_out("init", {"--dataset", "synthetic:32", "--lease", "10"});
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("--lease 10"), std::string::npos) << out;
  // No run yet: each command says what to do.
  auto [src, sout] = coord_out("stop");
  EXPECT_EQ(src, 1) << sout;
  EXPECT_NE(sout.find("gannf-coord init"), std::string::npos) << sout;
}

// (tensor name, offset of its first data byte) for each tensor of a
// safetensors file, read from its header on its own.
std::vector<std::pair<std::string, uint64_t>> tensor_offsets(const fs::path& file) {
  std::ifstream f(file, std::ios::binary);
  uint64_t hlen = 0;
  f.read(reinterpret_cast<char*>(&hlen), 8);
  std::string header(hlen, '\0');
  f.read(header.data(), (std::streamsize)hlen);
  std::vector<std::pair<std::string, uint64_t>> out;
  const auto j = nlohmann::json::parse(header);  // kept: items() only points into it
  for (auto& [name, v] : j.items())
    if (name != "__metadata__") out.emplace_back(name, 8 + hlen + v.at("data_offsets")[0].get<uint64_t>());
  return out;
}

// The programs themselves: one flipped bit in any tensor of any file of a
// checkpoint makes `gannf-train --resume` and `gannf-generate` exit 1 with a
// line naming the file and the tensor. (Checkpoint.DamageInAnyTensorIsRefused
// checks the same through the library.)
// gannf-coord settings: the class's trust settings without SQL. Listed,
// each with its value, its default where it differs and what it does (every
// column of gannf.trust_settings has a line: a column added without one
// fails here); NAME=VALUE changes several in one transaction, NAME=default
// and NAME=null put one back or clear it; a name that does not exist, a
// value its column refuses (its CHECK, its type), a word that is not
// NAME=VALUE and a student's login each get one line and change nothing.
TEST_F(OpsLife, SettingsAreListedChangedAndCheckedInOneTransaction) {
  coord_cmd("init", small_run(64, 8, 2, 5));
  if (HasFatalFailure()) return;
  auto [lrc, listed] = coord_out("settings");
  ASSERT_EQ(lrc, 0) << listed;
  listed = "\n" + listed;
  pg::Result cols = coord().exec(
      "SELECT attname::text FROM pg_attribute WHERE attrelid = 'gannf.trust_settings'::regclass AND attnum > 0 "
      "AND NOT attisdropped AND attname <> 'singleton'");
  ASSERT_GE(cols.rows(), 17);
  for (int i = 0; i < cols.rows(); ++i)
    EXPECT_NE(listed.find("\n" + cols.get<std::string>(i, 0) + " "), std::string::npos)
        << cols.get<std::string>(i, 0) << " is not listed:\n" << listed;
  EXPECT_EQ(listed.find("knows nothing of this setting"), std::string::npos) << listed;
  EXPECT_EQ(listed.find("(default "), std::string::npos) << "nothing changed yet:\n" << listed;

  auto [src, set] = coord_out("settings", {"hold_factor=8", "first_late_floor=3 minutes", "accepted_backends=cpu,cuda",
                                           "max_units_per_iteration=2"});
  ASSERT_EQ(src, 0) << set;
  EXPECT_NE(set.find("hold_factor: 4 -> 8"), std::string::npos) << set;
  EXPECT_NE(set.find("first_late_floor: 00:01:00 -> 00:03:00"), std::string::npos) << set;
  EXPECT_NE(set.find("accepted_backends: NULL -> {cpu,cuda}"), std::string::npos) << set;
  EXPECT_NE(set.find("max_units_per_iteration: NULL -> 2"), std::string::npos) << set;
  EXPECT_EQ(count("SELECT (hold_factor = 8 AND first_late_floor = '3 minutes' AND accepted_backends = '{cpu,cuda}' "
                  "AND max_units_per_iteration = 2)::int FROM gannf.trust_settings"),
            1);
  auto [l2rc, listed2] = coord_out("settings");
  EXPECT_NE(listed2.find("(default 4)"), std::string::npos) << listed2;
  const std::string status = this->status();
  EXPECT_NE(status.find("back ends accepted: cpu, cuda"), std::string::npos) << status;
  EXPECT_NE(status.find("trust settings changed: max_units_per_iteration 2 (default NULL), hold_factor 8 (default 4), "
                        "first_late_floor 00:03:00 (default 00:01:00)"),
            std::string::npos)
      << status;

  // All or nothing: a good value, then one its CHECK refuses.
  auto [brc, bad] = coord_out("settings", {"late_floor=9 seconds", "hold_factor=0.5"});
  EXPECT_EQ(brc, 1) << bad;
  EXPECT_NE(bad.find("hold_factor=0.5"), std::string::npos) << bad;
  EXPECT_NE(bad.find("trust_settings_hold_sane"), std::string::npos) << bad;
  EXPECT_NE(bad.find("nothing was changed"), std::string::npos) << bad;
  EXPECT_EQ(count("SELECT extract(epoch FROM late_floor)::int FROM gannf.trust_settings"), 5);
  auto [trc, type] = coord_out("settings", {"late_floor=soon"});
  EXPECT_EQ(trc, 1) << type;
  EXPECT_NE(type.find("invalid input syntax for type interval"), std::string::npos) << type;
  auto [nrc, name] = coord_out("settings", {"hold_facter=8"});
  EXPECT_EQ(nrc, 2) << name;
  EXPECT_NE(name.find("there is no setting 'hold_facter'; the settings: strike_threshold,"), std::string::npos)
      << name;
  auto [wrc, word] = coord_out("settings", {"hold_factor"});
  EXPECT_EQ(wrc, 2) << word;
  EXPECT_NE(word.find("is not NAME=VALUE"), std::string::npos) << word;
  auto [arc, backend] = coord_out("settings", {"accepted_backends=cpu,tpu"});
  EXPECT_EQ(arc, 2) << backend;
  EXPECT_NE(backend.find("accepted_backends:"), std::string::npos) << backend;

  auto [drc, back] = coord_out("settings", {"hold_factor=default", "max_units_per_iteration=null", "accepted_backends="});
  ASSERT_EQ(drc, 0) << back;
  EXPECT_NE(back.find("accepted_backends: {cpu,cuda} -> NULL"), std::string::npos) << "an empty list: all\n" << back;
  EXPECT_NE(back.find("hold_factor: 8 -> 4"), std::string::npos) << back;
  EXPECT_NE(back.find("max_units_per_iteration: 2 -> NULL"), std::string::npos) << back;

  // A student's login may not change them.
  auto [urc, student] = coord_out("settings", {"hold_factor=1"}, worker_db(1));
  EXPECT_EQ(urc, 1) << student;
  EXPECT_NE(student.find("permission denied"), std::string::npos) << student;
  EXPECT_NE(student.find("the class's settings are the instructor's; run it as gannf_coord"), std::string::npos)
      << student;
  EXPECT_EQ(count("SELECT hold_factor::int FROM gannf.trust_settings"), 4);
}

TEST_F(OpsLife, DamagedCheckpointIsRefusedByTrainAndGenerate) {
  const std::string train = std::string(GANNF_BINARY_DIR) + "/tools/gannf-train",
                    generate = std::string(GANNF_BINARY_DIR) + "/tools/gannf-generate";
  auto train_args = [&](const fs::path& out, const std::string& steps) {
    return std::vector<std::string>{train, "--dataset", "synthetic:32", "--image-size", "32", "--channels", "1",
                                    "--latent-dim", "16", "--ngf", "8", "--ndf", "8", "--batch-size", "8",
                                    "--steps", steps, "--threads", "1", "--quiet", "--output-dir", out.string(),
                                    "--sample-interval", "0"};
  };
  {
    Proc p(train_args(dir_ / "good", "2"), (dir_ / "train-good.log").string());
    ASSERT_EQ(p.wait(120), 0) << p.log();
  }
  const fs::path ck = dir_ / "good" / "checkpoints" / "step-00000002";
  ASSERT_TRUE(fs::is_directory(ck));
  int cases = 0;
  for (const char* file : {"generator.safetensors", "discriminator.safetensors", "state.safetensors"})
    for (const auto& [name, at] : tensor_offsets(ck / file)) {
      SCOPED_TRACE(std::string(file) + " " + name);
      const fs::path out = dir_ / "bad";
      fs::remove_all(out);
      fs::create_directories(out);
      fs::copy(dir_ / "good", out, fs::copy_options::recursive);
      const fs::path victim = out / "checkpoints" / "step-00000002" / file;
      {
        std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg((std::streamoff)at);
        const char c = (char)f.get();
        f.seekp((std::streamoff)at);
        f.put((char)(c ^ 1));
      }
      auto expect_refused = [&](std::vector<std::string> args, const std::string& who) {
        Proc p(std::move(args), (dir_ / (who + ".log")).string());
        EXPECT_EQ(p.wait(120), 1) << p.log();
        EXPECT_NE(p.log().find(victim.string() + ": tensor '" + name + "' is damaged"), std::string::npos) << p.log();
      };
      std::vector<std::string> resume = train_args(out, "4");
      resume.insert(resume.end(), {"--resume", "auto"});
      expect_refused(resume, "resume");
      if (std::string(file) == "generator.safetensors")
        expect_refused({generate, "grid", "--checkpoint", out.string(), "--out", (out / "grid.png").string()},
                       "generate");
      cases++;
    }
  EXPECT_GE(cases, 25);
}

}  // namespace
