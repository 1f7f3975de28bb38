// What a training run leaves in its output folder. gannf-train (one machine)
// and gannf-coord (the cluster) both write through this, so gannf-generate,
// the PyTorch scripts and people read either run the same way:
//   OUT/losses.csv            step,epoch,d_loss,g_loss,d_real,d_fake,d_acc: a row
//                             per optimisation step (the cluster's update); step
//                             and epoch count from 1, epoch is the one the step's
//                             last image came from
//   OUT/loss-curve.png        D's and G's loss over the steps
//   OUT/samples/step-N.png    8x8 grid of a fixed noise drawn from the run's seed
//                             (the same for both programs), eval mode;
//                             samples/latest.txt names the newest
//   OUT/checkpoints/step-N/   generator, discriminator, state (Adam moments,
//                             counters); checkpoints/latest names the newest
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dcgan.h"
#include "net.h"

namespace gannf {

struct LossRow {
  int64_t step;   // from 1: the step's number once it is done
  int64_t epoch;  // from 1
  StepStats s;
};

class RunOutputs {
 public:
  // Creates OUT/samples and OUT/checkpoints. `program` titles the loss curve.
  RunOutputs(std::string dir, std::string program, const DcganConfig& cfg, uint64_t seed);

  const std::string& dir() const { return dir_; }

  // A row at the end of losses.csv (the header first in a new file) and of the history.
  void append_loss(const LossRow& r);
  // losses.csv and the history replaced by `rows` (written atomically): a
  // resumed run continues the file without gaps or repeats.
  void rewrite_losses(std::vector<LossRow> rows);
  // The rows of OUT/losses.csv up to step `last`, as an earlier life of the run wrote them.
  std::vector<LossRow> read_losses(int64_t last) const;
  const std::vector<LossRow>& history() const { return history_; }

  // The grid of step `step` from G in eval mode; updates samples/latest.txt.
  // Returns the grid's path.
  std::string write_samples(Net<float>& G, int64_t step);
  // OUT/loss-curve.png from the history (nothing while it is empty).
  void write_loss_curve() const;
  // OUT/checkpoints/step-N through write_checkpoint_folder, `training` as the
  // files' "gannf.training" metadata. Returns the folder's path.
  std::string save_checkpoint(int64_t step, Net<float>& G, Net<float>& D, Adam<float>& adamG,
                              Adam<float>& adamD, const std::vector<int64_t>& counters,
                              const nlohmann::json& training) const;

 private:
  std::string dir_, program_;
  DcganConfig cfg_;
  std::vector<float> fixed_noise_;  // 64 x nz
  std::vector<LossRow> history_;
};

// Writes a checkpoint folder (generator, discriminator, state: Adam moments and
// `counters` = step, epoch, position, G's and D's Adam steps) atomically: under a
// temporary name, fsync'ed, renamed into place; updates `latest` and keeps the
// newest few step-* folders.
void write_checkpoint_folder(const std::string& dir, Net<float>& G, Net<float>& D,
                             const DcganConfig& cfg, Adam<float>& adamG, Adam<float>& adamD,
                             const std::vector<int64_t>& counters,
                             const std::map<std::string, std::string>& meta);

// Test seam, unset in every program: called with the temporary folder once its
// files are written and before they are read back, so that a test can damage
// one the way a disk or a bad write would (test_checkpoint).
extern std::function<void(const std::string& tmp_dir)> checkpoint_written_test_hook;

// The newest checkpoint folder under <output_dir>/checkpoints (its `latest`);
// empty when there is none.
std::string latest_checkpoint(const std::string& output_dir);

// The generator file a user's PATH names (gannf-generate, gannf-eval): PATH
// itself when it is a file, a checkpoint folder's generator.safetensors, or
// that of an output folder's latest checkpoint. Throws std::runtime_error
// when PATH is none of these.
std::string generator_file(const std::string& path);

// The name of step N's sample grid (+ ".png") and checkpoint folder: "step-00000042".
std::string step_name(int64_t step);

}  // namespace gannf
