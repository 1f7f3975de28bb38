// TFLOP/s of the cluster, from images/s and the model's FLOPs per image,
// computed from the layer shapes the networks are built with (src/nn), never
// typed in: a run at 32x32 with width 8 and one at 64x64 with width 64 differ
// by three orders of magnitude.
#pragma once
#include "dcgan.h"

namespace gannf::monitor {

struct StepFlops {
  double g_forward = 0, d_forward = 0;  // one image through G, through D
  double per_image = 0;                 // one image's share of the whole GAN step
};

// The convolutions of one image's share of the step a worker computes
// (GanStep::accumulate): G forward; D forward and backward (weights, and data
// but for the first layer) on the real image and on the fake; D backward
// (data only, the first layer included) for G's loss; G backward (weights,
// and data but for the first layer). A backward pass for data or for weights
// costs what the forward costs (conv_dims.h). Batch norm, activations and the
// loss are left out: they are memory-bound and under 1% of the FLOPs.
StepFlops gan_step_flops(const DcganConfig& cfg);

}  // namespace gannf::monitor
