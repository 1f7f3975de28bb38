// Checkpoints: exact resume, PyTorch-named model files, refusal of bad files,
// and running statistics that make eval-mode samples match training.
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>

#include "check.h"
#include "small_train.h"
#include "trainer.h"

namespace fs = std::filesystem;
using namespace gannf;

namespace {

fs::path temp_dir(const std::string& tag) {
  fs::path d = fs::temp_directory_path() / ("gannf-ckpt-" + tag + "-" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TrainOptions small(const fs::path& out) {
  TrainOptions o = test::small_train_options(out.string(), 96, 8, 8, 4, 5);
  o.epochs = 100;
  return o;
}

TEST(Checkpoint, ResumeIsBitExact) {
  const auto dir = temp_dir("resume");
  // 16 steps straight (crossing an epoch boundary: 12 steps per epoch) ...
  auto a = small(dir / "a");
  a.max_steps = 16;
  Trainer ta(a);
  ta.run();
  // ... against 8 steps, a checkpoint, a fresh process-like restart, 8 more.
  auto b = small(dir / "b");
  b.max_steps = 8;
  { Trainer tb(b); tb.run(); }
  b.max_steps = 16;
  b.resume = "auto";
  Trainer tb2(b);
  EXPECT_EQ(tb2.global_step(), 8);
  tb2.run();
  EXPECT_EQ(tb2.global_step(), 16);
  EXPECT_EQ(ta.G().get_params(), tb2.G().get_params());
  EXPECT_EQ(ta.D().get_params(), tb2.D().get_params());
  EXPECT_EQ(ta.G().get_stats(), tb2.G().get_stats());
  EXPECT_EQ(ta.D().get_stats(), tb2.D().get_stats());
  EXPECT_EQ(ta.G().num_batches_tracked, tb2.G().num_batches_tracked);
  // losses.csv continues instead of repeating: the same 16 rows as the run
  // straight through, steps and epochs counted from 1 (12 steps per epoch).
  const auto rows = test::losses_csv_steps((dir / "b" / "losses.csv").string());
  ASSERT_EQ(rows.size(), 16u);
  for (int i = 0; i < 16; i++) {
    EXPECT_EQ(rows[i].first, i + 1);
    EXPECT_EQ(rows[i].second, i < 12 ? 1 : 2) << "step " << i + 1;
  }
  auto text = [](const fs::path& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  EXPECT_EQ(text(dir / "a" / "losses.csv"), text(dir / "b" / "losses.csv"));
  fs::remove_all(dir);
}

TEST(Checkpoint, ModelFilesUseStateDictNames) {
  const auto dir = temp_dir("names");
  auto o = small(dir);
  o.max_steps = 2;
  Trainer t(o);
  t.run();
  const std::string ck = latest_checkpoint(o.output_dir);
  ASSERT_FALSE(ck.empty());
  const auto st = SafeTensors::load(ck + "/generator.safetensors");
  EXPECT_TRUE(st.has("main.0.weight"));
  EXPECT_TRUE(st.has("main.1.running_var"));
  EXPECT_TRUE(st.has("main.1.num_batches_tracked"));
  EXPECT_EQ(st.at("main.1.num_batches_tracked").dtype, "I64");
  EXPECT_EQ(st.ints("main.1.num_batches_tracked")[0], t.G().num_batches_tracked);
  EXPECT_EQ(st.at("main.0.weight").shape, (std::vector<int64_t>{16, 32, 4, 4}));
  const auto cfg = read_model_config(ck + "/generator.safetensors");
  EXPECT_EQ(cfg.nz, 16);
  EXPECT_EQ(cfg.image_size, 32);
  fs::remove_all(dir);
}

TEST(Checkpoint, BadFilesAreRefusedWithAReason) {
  const auto dir = temp_dir("bad");
  auto o = small(dir);
  o.max_steps = 1;
  Trainer t(o);
  t.run();
  const std::string g = latest_checkpoint(o.output_dir) + "/generator.safetensors";
  auto expect_refusal = [&](const std::string& path, const std::string& words) {
    try {
      load_model(path, t.G());
      ADD_FAILURE() << path << " was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  // truncated
  const auto size = fs::file_size(g);
  fs::copy_file(g, dir / "trunc.safetensors");
  fs::resize_file(dir / "trunc.safetensors", size - 100);
  expect_refusal((dir / "trunc.safetensors").string(), "trunc.safetensors");
  // corrupted header
  fs::copy_file(g, dir / "corrupt.safetensors");
  {
    std::fstream f(dir / "corrupt.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(12);
    f.write("\x01\x02\x03", 3);
  }
  expect_refusal((dir / "corrupt.safetensors").string(), "corrupt.safetensors");
  // another architecture: a 64x64 generator's file into this 32x32 one
  auto be = make_backend<float>("cpu");
  Net<float> G64(*be, "generator");
  DcganConfig c64;
  c64.image_size = 64, c64.nz = 16, c64.ngf = 8, c64.nc = 1;
  build_generator(G64, c64, 2);
  save_model((dir / "g64.safetensors").string(), G64, c64);
  expect_refusal((dir / "g64.safetensors").string(), "architecture mismatch");
  // the discriminator's file for the generator
  expect_refusal(latest_checkpoint(o.output_dir) + "/discriminator.safetensors", "discriminator");
  // a missing file names itself
  expect_refusal((dir / "nope.safetensors").string(), "nope.safetensors");
  fs::remove_all(dir);
}

// Where a tensor's data starts in a safetensors file: 8 + header length +
// its data_offsets[0], read here on its own (not through the reader under test).
uint64_t tensor_data_offset(const fs::path& file, const std::string& name) {
  std::ifstream f(file, std::ios::binary);
  uint64_t hlen = 0;
  f.read(reinterpret_cast<char*>(&hlen), 8);
  std::string header(hlen, '\0');
  f.read(header.data(), (std::streamsize)hlen);
  const auto j = nlohmann::json::parse(header);
  return 8 + hlen + j.at(name).at("data_offsets")[0].get<uint64_t>();
}

// The lowest bit of the first byte of tensor `name`'s data in `file`, flipped.
void flip_first_bit(const fs::path& file, const std::string& name) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  const auto at = (std::streamoff)tensor_data_offset(file, name);
  f.seekg(at);
  char c = 0;
  f.get(c);
  f.seekp(at);
  f.put((char)(c ^ 1));
}

// One flipped bit in any tensor of any file of a checkpoint: --resume (the
// Trainer's load) and gannf-generate's load (generator_file + load_model)
// refuse it, naming the file and the tensor. The lowest bit of a value gives
// a plausible number, so only the checksum can tell.
TEST(Checkpoint, DamageInAnyTensorIsRefused) {
  const auto dir = temp_dir("damage");
  auto o = small(dir / "good");
  o.max_steps = 2;
  { Trainer t(o); t.run(); }
  const fs::path good = latest_checkpoint(o.output_dir);
  ASSERT_FALSE(good.empty());
  int cases = 0;
  for (const char* file : {"generator.safetensors", "discriminator.safetensors", "state.safetensors"}) {
    const auto names = SafeTensors::load((good / file).string()).names();
    ASSERT_GE(names.size(), 5u) << file;
    for (const std::string& name : names) {
      SCOPED_TRACE(std::string(file) + " " + name);
      const fs::path out = dir / "bad";
      fs::remove_all(out);
      fs::create_directories(out / "checkpoints");
      fs::copy(good, out / "checkpoints" / good.filename());
      std::ofstream(out / "checkpoints" / "latest") << good.filename().string() << "\n";
      const fs::path victim = out / "checkpoints" / good.filename() / file;
      flip_first_bit(victim, name);
      auto expect_refused = [&](const std::function<void()>& load, const char* who) {
        try {
          load();
          ADD_FAILURE() << who << " accepted a damaged " << file << " (tensor " << name << ")";
        } catch (const std::runtime_error& e) {
          const std::string m = e.what();
          EXPECT_NE(m.find(victim.string()), std::string::npos) << who << ": " << m;
          EXPECT_NE(m.find("'" + name + "' is damaged"), std::string::npos) << who << ": " << m;
        }
      };
      auto r = small(out);
      r.max_steps = 4;
      r.resume = "auto";
      expect_refused([&] { Trainer t(r); }, "--resume");
      if (std::string(file) == "generator.safetensors") {
        Trainer t(small(dir / "fresh"));
        expect_refused([&] { load_model(generator_file(out.string()), t.G()); }, "gannf-generate");
      }
      cases++;
    }
  }
  EXPECT_GE(cases, 25);
  fs::remove_all(dir);
}

// A checkpoint whose files do not read back as they were written (a write
// that went wrong without an error) never becomes `latest`: the run stops
// naming the damaged tensor, and the previous checkpoint stays, unpruned and
// loadable. The damage is made by a test seam between write and read-back.
TEST(Checkpoint, LatestNeverMovesToACheckpointThatFailsItsReadBack) {
  const auto dir = temp_dir("readback");
  auto o = small(dir);
  o.max_steps = 2;
  { Trainer t(o); t.run(); }
  const std::string good = latest_checkpoint(o.output_dir);
  ASSERT_FALSE(good.empty());

  int damaged = 0;
  struct Unhook {
    ~Unhook() { checkpoint_written_test_hook = nullptr; }
  } unhook;
  checkpoint_written_test_hook = [&](const std::string& tmp) {
    const fs::path victim = fs::path(tmp) / "discriminator.safetensors";
    flip_first_bit(victim, SafeTensors::load(victim.string()).names().back());
    ++damaged;
  };
  auto r = small(dir);
  r.max_steps = 4;
  r.resume = "auto";
  try {
    Trainer t(r);
    t.run();
    ADD_FAILURE() << "a checkpoint that fails its read-back was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("is damaged"), std::string::npos) << e.what();
  }
  checkpoint_written_test_hook = nullptr;
  EXPECT_GE(damaged, 1);
  EXPECT_EQ(latest_checkpoint(o.output_dir), good);
  EXPECT_FALSE(fs::exists(fs::path(o.output_dir) / "checkpoints" / step_name(4)));
  for (const char* f : {"generator.safetensors", "discriminator.safetensors", "state.safetensors"})
    EXPECT_NO_THROW(SafeTensors::load((fs::path(good) / f).string())) << f;
  // And a run resumes from it.
  checkpoint_written_test_hook = nullptr;
  auto again = small(dir);
  again.max_steps = 3;
  again.resume = "auto";
  EXPECT_NO_THROW({
    Trainer t(again);
    t.run();
  });
  EXPECT_EQ(latest_checkpoint(o.output_dir), (fs::path(o.output_dir) / "checkpoints" / step_name(3)).string());
  fs::remove_all(dir);
}

// Files from before the checksums still load (with a warning), and a file
// that names a checksum for a tensor it lacks is refused.
TEST(Checkpoint, FilesWithoutChecksumsStillLoad) {
  const auto dir = temp_dir("old");
  auto o = small(dir);
  o.max_steps = 1;
  Trainer t(o);
  t.run();
  const std::string g = latest_checkpoint(o.output_dir) + "/generator.safetensors";
  const auto st = SafeTensors::load(g);
  EXPECT_TRUE(st.checksummed());
  StEntries entries;
  for (const auto& n : st.names()) entries.emplace_back(n, st.at(n));
  auto meta = st.metadata;
  meta.erase(kStChecksumKey);
  save_safetensors((dir / "old.safetensors").string(), entries, meta);
  EXPECT_FALSE(SafeTensors::load((dir / "old.safetensors").string()).checksummed());
  EXPECT_NO_THROW(load_model((dir / "old.safetensors").string(), t.G()));
  auto extra = with_checksums(entries, meta);
  entries.pop_back();
  save_safetensors((dir / "extra.safetensors").string(), entries, extra);
  EXPECT_THROW(SafeTensors::load((dir / "extra.safetensors").string()), std::runtime_error);
  fs::remove_all(dir);
}

// Sampling runs in eval mode on running statistics; after training they must
// describe the activations training saw, so eval and train outputs of the
// same noise agree (the reference project samples with running stats its
// coordinator never updated).
TEST(Checkpoint, EvalModeSamplesMatchTrainMode) {
  const auto dir = temp_dir("bn");
  auto o = small(dir);
  o.max_steps = 60;
  Trainer t(o);
  t.run();
  auto& G = t.G();
  const int B = G.max_batch();
  const auto z = gannf::test::randn<float>((size_t)B * 16, 99);
  const float* ye = G.forward(z.data(), B, Mode::Eval);
  std::vector<float> eval(ye, ye + (size_t)B * G.out_size());
  const float* yt = G.forward(z.data(), B, Mode::Train, false);
  double diff = 0;
  for (size_t i = 0; i < eval.size(); i++) diff += std::fabs(eval[i] - yt[i]);
  diff /= eval.size();
  // Mean |eval - train| in pixel units of [-1, 1]; untrained running stats
  // (mean 0, var 1) give about 0.3 here.
  EXPECT_LT(diff, 0.05) << "eval/train mean abs difference " << diff;
  fs::remove_all(dir);
}

}  // namespace
