// A start-up check of a non-CPU back end, before its gradients go anywhere:
// one GAN step of a small DCGAN on it and on the CPU in double from the same
// weights and batch. gannf-worker and gannf-train run it for --backend cuda
// and cuda-tf32 and refuse to go on when it fails, so that a GPU on which the
// kernels compute wrong values (an architecture they were never run on, a
// broken driver or card) stops with one line instead of sending a cluster
// gradients that pass the coordinator's range checks and are still wrong.
#pragma once
#include <string>

#include "backend.h"

namespace gannf {

struct SelfCheck {
  double g_err = 0, d_err = 0;  // relative L2 distance of G's and D's gradients
  double loss_err = 0;          // |D's loss - the reference's|, relative
  double bound = 0;             // the largest of the three that passes
  bool ok = false;
  // "G 3.1e-07, D 2.4e-07, D's loss 1.2e-08 from the CPU's (bound 1e-03)"
  std::string describe() const;
};

// One step of a 32x32x1 DCGAN (f = 8, nz = 16, batch 4) on `be` against the
// CPU's double path -- with TF32-rounded convolution operands for cuda-tf32
// (Tf32RoundingCpu) -- from the same weights and inputs. Bound: 1e-3 for
// FP32, 2e-2 for TF32; the emulated GPU is 1e-6 and 1e-3 off; a wrong kernel
// is off by O(1). Takes a few milliseconds.
SelfCheck self_check(Backend<float>& be);

}  // namespace gannf
