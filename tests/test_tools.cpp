// The command-line programs as a user meets them: --help, one clear line and a
// non-zero exit for bad values, Ctrl-C that checkpoints and exits 0.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "run_command.h"
#include "safetensors.h"
#ifdef GANNF_HAVE_WORKER
#include "config.h"
#endif

namespace fs = std::filesystem;
using gannf::SafeTensors;

namespace {

const std::string kTools = std::string(GANNF_BINARY_DIR) + "/tools/";

using Out = gannf::test::Output;
Out run(const std::string& cmd) { return gannf::test::run_command(cmd); }

TEST(Tools, EveryProgramHasHelp) {
  std::vector<std::string> programs = {"gannf-train", "gannf-generate", "gannf-info"};
#ifdef GANNF_HAVE_WORKER
  programs.insert(programs.end(), {"gannf-coord", "gannf-coord init", "gannf-coord run", "gannf-coord status",
                                   "gannf-coord add-students", "gannf-coord remove-students", "gannf-worker"});
#endif
  for (const std::string& t : programs) {
    const auto o = run(kTools + t + " --help");
    EXPECT_EQ(o.code, 0) << t << "\n" << o.text;
    EXPECT_NE(o.text.find("usage:"), std::string::npos) << t << "\n" << o.text;
  }
}

#ifdef GANNF_HAVE_WORKER
// Every key of the configuration (src/cluster/config.cpp's table, which
// config.sample.yaml is made from) names a flag its programs really have.
TEST(Tools, EveryConfigKeysFlagIsInItsProgramsHelp) {
  std::map<std::string, std::string> help;
  for (const auto& k : gannf::config_keys()) {
    const std::string flag = k.flag.substr(0, k.flag.find(' '));
    std::stringstream programs(k.programs);
    for (std::string prog; std::getline(programs, prog, ',');) {
      prog.erase(0, prog.find_first_not_of(' '));
      if (prog == "gannf-coord") prog = "gannf-coord run";  // --db: every command has it
      if (!help.count(prog)) help[prog] = run(kTools + prog + " --help").text;
      EXPECT_NE(help[prog].find("  " + flag + " "), std::string::npos)
          << k.section << "." << k.key << ": " << prog << " --help has no " << flag << "\n" << help[prog];
    }
  }
}
#endif

TEST(Tools, BadValuesAreRefusedBeforeAnyWork) {
  struct Case {
    const char* args;
    const char* says;
  } cases[] = {
      {"--image-size 48", "--image-size must be 32 or 64"},
      {"--lr -1", "--lr must be a positive number"},
      {"--lr fast", "--lr: 'fast' is not a number"},
      {"--batch-size -4", "--batch-size must be at least 2"},
      {"--epochs 0", "--epochs must be positive"},
      {"--bogus 1", "unknown option --bogus"},
      {"--batch-size", "--batch-size needs a value"},
      {"--mode sideways", "--mode must be 'simultaneous' or 'alternating'"},
      {"--image-size 048", "--image-size must be 32 or 64, got 48"},  // base 10, never octal
      {"--seed -1", "--seed: '-1' must not be negative"},
      {"--steps 1.5", "--steps: '1.5' is not a whole number"},
      {"--quiet=please", "--quiet takes no value"},
      {"sideways", "unexpected argument 'sideways'"},
  };
  for (auto& c : cases) {
    const auto o = run(kTools + "gannf-train --output-dir /nonexistent/never " + c.args);
    EXPECT_EQ(o.code, 2) << c.args << "\n" << o.text;
    EXPECT_NE(o.text.find(c.says), std::string::npos) << c.args << "\n" << o.text;
    EXPECT_FALSE(fs::exists("/nonexistent/never"));
  }
  const auto missing = run(kTools + "gannf-train --quiet --dataset /no/such/folder --output-dir " +
                           (fs::temp_directory_path() / "gannf-tools-missing").string());
  EXPECT_EQ(missing.code, 1) << missing.text;
  EXPECT_NE(missing.text.find("/no/such/folder"), std::string::npos) << missing.text;
}

// The cluster programs parse as the others do, doubles included (the learning
// rate, the lease, the worker's intervals), before they touch the database.
TEST(Tools, ClusterProgramsRefuseBadValuesBeforeTheDatabase) {
#ifndef GANNF_HAVE_WORKER
  GTEST_SKIP() << "gannf-coord and gannf-worker are not built here (they need libpq)";
#endif
  const std::string db = " --db postgresql://nobody@127.0.0.1:1/none ";
  struct Case {
    const char* program;
    const char* args;
    const char* says;
  } cases[] = {
      {"gannf-coord init", "--dataset synthetic:64 --lr 2e-4x", "--lr: '2e-4x' is not a number"},
      {"gannf-coord init", "--dataset synthetic:64 --lease", "--lease needs a value"},
      {"gannf-coord run", "--iterations -1", "--iterations and the intervals must be 0 or positive"},
      {"gannf-coord status", "--bogus", "unknown option --bogus (see gannf-coord status --help)"},
      {"gannf-worker", "--heartbeat-interval 0", "--heartbeat-interval must be a positive number of seconds"},
      {"gannf-worker", "--poll-interval soon", "--poll-interval: 'soon' is not a number"},
      {"gannf-worker", "--sum-units 0", "--sum-units must be a number from 1 to 64, or auto, not '0'"},
      {"gannf-worker", "--sum-units 4x", "--sum-units must be a number from 1 to 64, or auto, not '4x'"},
  };
  for (auto& c : cases) {
    const auto o = run(kTools + c.program + db + c.args);
    EXPECT_EQ(o.code, 2) << c.program << " " << c.args << "\n" << o.text;
    EXPECT_NE(o.text.find(c.says), std::string::npos) << c.program << " " << c.args << "\n" << o.text;
    EXPECT_EQ(o.text.find("127.0.0.1"), std::string::npos) << c.args << ": the database came first\n" << o.text;
  }
  // Defaults are shown as given: 2e-4 is the double 2e-4, not a float's rounding.
  const auto help = run(kTools + "gannf-coord init --help");
  EXPECT_EQ(help.code, 0) << help.text;
  EXPECT_NE(help.text.find("--lr FLOAT=0.0002 "), std::string::npos) << help.text;
  EXPECT_NE(help.text.find("--lease FLOAT=300 "), std::string::npos) << help.text;
}

// `--backend cuda` (and cuda-tf32, cuda-bf16) where no GPU can be used: one line that
// says why and what to do, exit 1, nothing written -- never a crash. The GPU
// is hidden (CUDA_VISIBLE_DEVICES="") so that this holds on GPU machines too;
// builds without CUDA say so in their line. The worker stops before it
// touches the database.
TEST(Tools, CudaBackendWithoutAUsableGpuIsOneClearLine) {
  for (const char* backend : {"cuda", "cuda-tf32", "cuda-bf16"}) {
    const fs::path out = fs::temp_directory_path() / ("gannf-tools-nogpu-" + std::to_string(getpid()));
    fs::remove_all(out);
    const std::string env = "CUDA_VISIBLE_DEVICES= ";
    const auto train = run(env + kTools + "gannf-train --dataset synthetic:64 --no-cache --image-size 32 "
                           "--channels 1 --ngf 8 --ndf 8 --batch-size 8 --steps 1 --quiet --backend " +
                           backend + " --output-dir " + out.string());
#ifdef GANNF_HAVE_WORKER
    const auto worker = run(env + kTools + "gannf-worker --backend " + backend +
                            " --db postgresql://nobody@127.0.0.1:1/none --max-units 1");
    const std::vector<const decltype(train)*> outputs = {&train, &worker};
#else
    const std::vector<const decltype(train)*> outputs = {&train};  // no gannf-worker (no libpq)
#endif
    for (const auto* o : outputs) {
      const char* who = o == &train ? "gannf-train" : "gannf-worker";
      EXPECT_EQ(o->code, 1) << who << " --backend " << backend << "\n" << o->text;
      EXPECT_EQ(o->text.find('\n'), o->text.size() - 1) << who << ": one line, please\n" << o->text;
      EXPECT_NE(o->text.find("--backend cpu"), std::string::npos) << who << ": say what to do\n" << o->text;
      EXPECT_EQ(o->text.find("127.0.0.1"), std::string::npos) << who << ": the database came first\n" << o->text;
    }
    EXPECT_FALSE(fs::exists(out)) << "gannf-train wrote its output folder before failing";
  }
  const auto unknown = run(kTools + "gannf-train --backend tpu --quiet --output-dir /nonexistent/never");
  EXPECT_NE(unknown.code, 0) << unknown.text;
  EXPECT_NE(unknown.text.find("choose cpu, cuda, cuda-tf32, cuda-bf16 or auto"), std::string::npos) << unknown.text;
  // --backend auto without a usable GPU: the CPU, and one line saying why.
  const fs::path out = fs::temp_directory_path() / ("gannf-tools-auto-" + std::to_string(getpid()));
  fs::remove_all(out);
  const auto autob = run("CUDA_VISIBLE_DEVICES= " + kTools +
                         "gannf-train --dataset synthetic:64 --no-cache --image-size 32 --channels 1 "
                         "--ngf 8 --ndf 8 --batch-size 8 --steps 1 --backend auto --output-dir " +
                         out.string());
  EXPECT_EQ(autob.code, 0) << autob.text;
  EXPECT_NE(autob.text.find("--backend auto: using the CPU ("), std::string::npos) << autob.text;
  EXPECT_NE(autob.text.find("OpenBLAS"), std::string::npos) << "the CPU back end described\n" << autob.text;
  fs::remove_all(out);
}

// A worker's name is checked before it connects (the database would refuse
// it at registration with a constraint's name instead).
TEST(Tools, WorkerNameIsCheckedBeforeTheDatabase) {
#ifndef GANNF_HAVE_WORKER
  GTEST_SKIP() << "gannf-worker is not built here (it needs libpq)";
#endif
  const auto o = run(kTools + "gannf-worker --name " + std::string(65, 'x') +
                     " --db postgresql://nobody@127.0.0.1:1/none --max-units 1");
  EXPECT_EQ(o.code, 1) << o.text;
  EXPECT_NE(o.text.find("--name must be 1 to 64 printable characters"), std::string::npos) << o.text;
  EXPECT_EQ(o.text.find("127.0.0.1"), std::string::npos) << "the name came first\n" << o.text;
}

// The generator of a run's newest checkpoint (checkpoints/latest names it).
SafeTensors newest_generator(const fs::path& out) {
  std::ifstream latest(out / "checkpoints" / "latest");
  std::string name;
  latest >> name;
  return SafeTensors::load((out / "checkpoints" / name / "generator.safetensors").string());
}

// PyTorch's DCGAN step (D's update, then G's against the updated D), in
// micro-batches (3 + 3 + 2), and it is recorded in the checkpoint. The same
// run in the default simultaneous mode ends with other weights: the flag
// changed the computation, not only the label.
TEST(Tools, AlternatingModeTrainsAndIsRecorded) {
  std::map<std::string, SafeTensors> gens;
  for (const std::string mode : {"alternating", "simultaneous"}) {
    const fs::path out = fs::temp_directory_path() / ("gannf-tools-" + mode + "-" + std::to_string(getpid()));
    fs::remove_all(out);
    const auto o = run(kTools +
                       "gannf-train --dataset synthetic:64 --no-cache --image-size 32 --channels 1 --ngf 8 --ndf 8 "
                       "--batch-size 8 --micro-batch 3 --steps 3 --quiet --mode " + mode + " --output-dir " +
                       out.string());
    ASSERT_EQ(o.code, 0) << o.text;
    gens.emplace(mode, newest_generator(out));
    fs::remove_all(out);
  }
  const SafeTensors& alt = gens.at("alternating");
  ASSERT_EQ(alt.metadata.count("gannf.training"), 1u);
  const auto training = nlohmann::json::parse(alt.metadata.at("gannf.training"));
  EXPECT_EQ(training.at("mode"), "alternating") << training.dump();
  EXPECT_EQ(training.at("micro_batch"), 3) << training.dump();
  EXPECT_EQ(nlohmann::json::parse(gens.at("simultaneous").metadata.at("gannf.training")).at("mode"),
            "simultaneous");
  ASSERT_EQ(alt.names(), gens.at("simultaneous").names());
  size_t differ = 0;
  for (const std::string& name : alt.names())
    if (name.find("weight") != std::string::npos)
      differ += alt.floats(name) != gens.at("simultaneous").floats(name);
  EXPECT_GT(differ, 0u) << "--mode alternating trained the same weights as --mode simultaneous";
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The folder `export` writes is what gets published: the code that loads the
// weights, credits, a licence, numbers as people write them, and nothing of
// the trainer's machine (a dataset's local path, the output folder).
TEST(Tools, ExportIsCompleteCreditsTheClassAndHasNoLocalPaths) {
  const fs::path tmp = fs::temp_directory_path() / ("gannf-export-" + std::to_string(getpid()));
  fs::remove_all(tmp);
  // A dataset at a local path: a folder of PNGs drawn by a first tiny run.
  auto o = run(kTools + "gannf-train --dataset synthetic:64 --no-cache --image-size 32 --channels 1 --ngf 8 "
               "--ndf 8 --batch-size 8 --steps 1 --quiet --output-dir " + (tmp / "seedrun").string());
  ASSERT_EQ(o.code, 0) << o.text;
  o = run(kTools + "gannf-generate images --checkpoint " + (tmp / "seedrun").string() + " --seeds 0-15 --out " +
          (tmp / "my-shapes").string());
  ASSERT_EQ(o.code, 0) << o.text;
  o = run(kTools + "gannf-train --dataset " + (tmp / "my-shapes").string() + " --no-cache --image-size 32 "
          "--channels 1 --ngf 8 --ndf 8 --batch-size 8 --steps 2 --quiet --output-dir " + (tmp / "run").string());
  ASSERT_EQ(o.code, 0) << o.text;
  std::ofstream(tmp / "contributors.csv") << "login,units,images\nalice,12,3072\nbob,3,768\n";
  o = run(kTools + "gannf-generate export --checkpoint " + (tmp / "run").string() + " --out " +
          (tmp / "hub").string() + " --contributors " + (tmp / "contributors.csv").string());
  ASSERT_EQ(o.code, 0) << o.text;
  EXPECT_NE(o.text.find("hf upload <user>/<repo> ."), std::string::npos) << o.text;
  const std::string card = read_text(tmp / "hub" / "README.md");
  const std::string config = read_text(tmp / "hub" / "config.json");
  for (const std::string* text : {&card, &config}) {
    EXPECT_EQ(text->find(tmp.string()), std::string::npos) << *text;
    EXPECT_EQ(text->find(fs::temp_directory_path().string()), std::string::npos) << *text;
    EXPECT_EQ(text->find("0.000199999"), std::string::npos) << *text;
  }
  EXPECT_NE(card.find("| lr | 0.0002 |"), std::string::npos) << card;
  EXPECT_NE(card.find("| beta2 | 0.999 |"), std::string::npos) << card;
  EXPECT_NE(config.find("\"lr\": 0.0002,"), std::string::npos) << config;
  EXPECT_NE(card.find("| dataset | my-shapes |"), std::string::npos) << card;
  EXPECT_NE(card.find("| alice | 12 | 3072 |"), std::string::npos) << card;
  EXPECT_NE(card.find("| bob | 3 | 768 |"), std::string::npos) << card;
  EXPECT_NE(card.find("\nlicense: cc-by-4.0\n"), std::string::npos) << card;
  EXPECT_NE(card.find("## Licence"), std::string::npos) << card;
  EXPECT_NE(card.find("hf upload <user>/<repo> ."), std::string::npos) << card;
  EXPECT_EQ(card.find("huggingface-cli"), std::string::npos) << card;
  EXPECT_NE(card.find("from generator import Generator"), std::string::npos) << card;
  // The Generator the card imports is in the folder, as in the repository.
  EXPECT_EQ(read_text(tmp / "hub" / "generator.py"),
            read_text(fs::path(GANNF_SOURCE_DIR) / "tools" / "hub" / "generator.py"));
  EXPECT_TRUE(fs::exists(tmp / "hub" / "generator.safetensors"));
  // A bad contributors file is one clear line.
  std::ofstream(tmp / "bad.csv") << "alice,many\n";
  o = run(kTools + "gannf-generate export --checkpoint " + (tmp / "run").string() + " --out " +
          (tmp / "hub2").string() + " --contributors " + (tmp / "bad.csv").string());
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.text.find("bad.csv:1: expected login,units,images"), std::string::npos) << o.text;
  if (!HasFailure()) fs::remove_all(tmp);
}

TEST(Tools, CtrlCFinishesTheStepCheckpointsAndExitsZero) {
  const fs::path out = fs::temp_directory_path() / ("gannf-tools-sigint-" + std::to_string(getpid()));
  fs::remove_all(out);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string bin = kTools + "gannf-train";
    execl(bin.c_str(), bin.c_str(), "--dataset", "synthetic:4000", "--no-cache", "--image-size",
          "32", "--channels", "1", "--ngf", "8", "--ndf", "8", "--batch-size", "16", "--epochs",
          "50", "--sample-interval", "0", "--checkpoint-interval", "0", "--quiet", "--output-dir",
          out.c_str(), (char*)nullptr);
    _exit(127);
  }
  // Wait until training has taken some steps (losses.csv grows), then Ctrl-C.
  const auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(out / "losses.csv") && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(pid, SIGINT);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
  EXPECT_TRUE(fs::exists(out / "checkpoints" / "latest"));
  EXPECT_TRUE(fs::exists(out / "loss-curve.png"));
  fs::remove_all(out);
}

}  // namespace
