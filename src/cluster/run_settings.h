// The settings of one training run, as gannf-coord stores them in
// gannf.training_state.config (JSON in the YAML config's sections: training,
// data, worker), so that every worker builds the same networks and draws the
// same images and noise for a unit without any file of the coordinator's.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config.h"
#include "blob_codec.h"
#include "dcgan.h"

namespace gannf::cluster {

struct RunSettings {
  // data
  std::string dataset = "synthetic";   // as the coordinator named it; a worker may keep it elsewhere
  int64_t dataset_size = 0;
  std::string dataset_hash;            // packed cache content hash (hex); "" when unknown
  // model
  int image_size = 64, channels = 3, nz = 100, ngf = 64, ndf = 64;
  // training
  int images_per_work_unit = 256;
  int num_workunits_per_update = 4;
  // Units open at once beyond num_workunits_per_update, so that fast workers
  // are not idle while a slow one finishes; the iteration still closes after
  // num_workunits_per_update submissions and the rest are served again.
  int extra_units = 0;
  double learning_rate = 2e-4, beta1 = 0.5, beta2 = 0.999, adam_eps = 1e-8;
  uint64_t seed = 0;
  int epochs = 5;
  double lease_seconds = 300;          // worker.work_unit_timeout
  // trust (issue 12): how submissions are combined and checked; aggregate.h
  // and validate.h say what each does. The defaults are the config table's
  // (config.h, one source); runs made before them read as made: the exact
  // mean, no checks (from_json).
  std::string aggregation = Config::Trust{}.aggregation;
  double clip_factor = Config::Trust{}.clip_factor;
  int trim = Config::Trust{}.trim;
  double norm_ratio = Config::Trust{}.norm_ratio;
  double spot_check = Config::Trust{}.spot_check;
  double quorum = Config::Trust{}.quorum;  // absent in runs made before it: 1 (wait for every unit)
  // wire (issue 17): the format of the gradient blobs workers submit
  // (blob_codec.h: f32, bf16, f16s); sql/0014's submit() checks its sizes.
  // Absent in runs made before it: f32.
  std::string blob_format = "f32";

  DcganConfig dcgan() const;
  AdamParams adam() const;
  BlobFormat grad_format() const { return parse_blob_format(blob_format); }
  int open_units() const { return num_workunits_per_update + extra_units; }
  // Throws std::invalid_argument naming the first bad value.
  void validate() const;
  std::string to_json() const;
  // Throws std::runtime_error naming what is missing or wrong.
  static RunSettings from_json(const std::string& text);
};

// How a unit of `total` images is split into forward passes of `micro_batch`:
// micro_batch each, and a trailing single image folded into the pass before
// (batch norm needs two). The same rule as gannf-train's step, so that a unit
// computed by a worker equals the same images in a local step; the
// coordinator uses it to fold BN statistics with the right counts.
std::vector<int> micro_batches(int total, int micro_batch);

// The element counts of a layout's tensors, in order: the segments of an
// F16S blob (blob_codec.h), one scale per parameter tensor.
std::vector<size_t> tensor_sizes(const Layout& l);

}  // namespace gannf::cluster
