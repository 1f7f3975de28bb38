// The options of a gannf-train run small enough for a test: the synthetic
// set at 32x32x1, nz 16, narrow nets, no cache, no samples or checkpoints
// unless a test asks, quiet. Each test sets what it is about on top.
#pragma once
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "trainer.h"

namespace gannf::test {

inline TrainOptions small_train_options(const std::string& output_dir, int images, int width,
                                        int batch, int micro_batch, uint64_t seed) {
  TrainOptions o;
  o.dataset = "synthetic:" + std::to_string(images);
  o.image_size = 32;
  o.channels = 1;
  o.nz = 16;
  o.ngf = o.ndf = width;
  o.batch_size = batch;
  o.micro_batch = micro_batch;
  o.seed = seed;
  o.output_dir = output_dir;
  o.sample_interval = o.checkpoint_interval = 0;
  o.cache = false;
  o.quiet = true;
  return o;
}

// (step, epoch) of each row of a run's losses.csv, read on their own (not
// through RunOutputs), for tests of what people see in the file.
inline std::vector<std::pair<int64_t, int64_t>> losses_csv_steps(const std::string& path) {
  std::vector<std::pair<int64_t, int64_t>> rows;
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  if (line != "step,epoch,d_loss,g_loss,d_real,d_fake,d_acc") return rows;
  long long s = 0, e = 0;
  while (std::getline(f, line))
    if (std::sscanf(line.c_str(), "%lld,%lld,", &s, &e) == 2) rows.push_back({s, e});
  return rows;
}

}  // namespace gannf::test
