// The options of a gannf-train run small enough for a test: the synthetic
// set at 32x32x1, nz 16, narrow nets, no cache, no samples or checkpoints
// unless a test asks, quiet. Each test sets what it is about on top.
#pragma once
#include <cstdint>
#include <string>

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

}  // namespace gannf::test
