// Single-machine training: the loop behind gannf-train, and the baseline that
// distributed training must reproduce.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "dataset.h"
#include "dcgan.h"
#include "rng.h"
#include "run_outputs.h"

namespace gannf {

struct TrainOptions {
  std::string dataset = "synthetic";
  int image_size = 64;
  int channels = 0;           // 0: 1 for MNIST-style IDX data, else 3
  int epochs = 5;
  int64_t max_steps = 0;      // stop after this many steps in all (0: no limit)
  int batch_size = 64;        // images per optimisation step
  int micro_batch = 0;        // images per forward pass (0: the whole batch)
  AdamParams adam{2e-4f, 0.5f, 0.999f, 1e-8f};
  int nz = 100, ngf = 64, ndf = 64;
  std::string output_dir = "out";
  int64_t sample_interval = 200;      // steps between sample grids (0: only at the end)
  int64_t checkpoint_interval = 1000; // steps between checkpoints (0: only at the end)
  std::string resume;         // a checkpoint folder, or "auto" for output_dir's latest
  uint64_t seed = 0;
  std::string backend = "cpu";
  // simultaneous: G's and D's gradients against the same weights (the
  // cluster's step); alternating: D's update, then G's gradients against the
  // updated D (PyTorch's DCGAN example).
  std::string mode = "simultaneous";
  int threads = 0;            // 0: OpenMP's default
  bool cache = true;
  bool quiet = false;
  // Throws std::invalid_argument naming the first bad value.
  void validate() const;
};

class Trainer {
 public:
  explicit Trainer(const TrainOptions& opt);
  ~Trainer();
  // Runs until the epochs or max_steps are done or *stop becomes true (after
  // finishing the step in flight); writes samples, losses and a final checkpoint.
  void run(const std::atomic<bool>* stop = nullptr);
  // One optimisation step on the next batch of the epoch's permutation; its
  // row goes to losses.csv.
  StepStats step();
  void save_checkpoint(const std::string& dir);
  void load_checkpoint(const std::string& dir);
  std::string write_samples();  // this step's 8x8 grid of the fixed noise, eval mode; its path
  void write_loss_curve() { out_->write_loss_curve(); }

  Net<float>& G() { return *G_; }
  Net<float>& D() { return *D_; }
  const DcganConfig& config() const { return cfg_; }
  int64_t global_step() const { return step_; }
  int64_t epoch() const { return epoch_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  const TrainOptions& options() const { return opt_; }

 private:
  TrainOptions opt_;
  DcganConfig cfg_;
  std::unique_ptr<data::Dataset> data_;
  std::unique_ptr<Backend<float>> be_;
  std::unique_ptr<Net<float>> G_, D_;
  std::unique_ptr<GanStep<float>> gan_;
  std::unique_ptr<Adam<float>> adamG_, adamD_;
  int64_t step_ = 0, epoch_ = 0, pos_ = 0, steps_per_epoch_ = 0;
  std::vector<uint32_t> perm_;
  int64_t perm_epoch_ = -1;
  std::vector<float> real_, noise_;
  std::vector<uint64_t> idx_;
  std::unique_ptr<RunOutputs> out_;
  void ensure_permutation();
};

// Image channels a dataset gets when none are asked for: 1 for IDX files
// (MNIST, Fashion-MNIST: the file, or a folder holding them, or its raw/), else 3.
int default_channels(const std::string& dataset);

}  // namespace gannf
