// A start-up check of a non-CPU back end, before its gradients go anywhere.
// gannf-worker, gannf-train and gannf-info run it for --backend cuda and
// cuda-tf32, and the first two refuse to go on when it fails, so that a GPU
// on which the kernels compute wrong values (an architecture they were never
// run on, a broken driver or card) stops with one line instead of sending a
// cluster gradients that pass the coordinator's range checks and are wrong.
#pragma once
#include <string>

#include "backend.h"

namespace gannf {

struct SelfCheck {
  // One GAN step of a 32x32x1 DCGAN (f = 8, nz = 16, batch 4) in FP32 against
  // the CPU's double path from the same weights and inputs: relative L2
  // distance of G's and D's gradients, relative difference of D's loss.
  double g_err = 0, d_err = 0, loss_err = 0;
  // cuda-tf32 and cuda-bf16 only (else -1): every convolution of that DCGAN,
  // forward, backward-data and backward-weight, on the tensor cores against
  // the CPU's double convolution of the same TF32- (BF16-) rounded operands
  // (worst relative L2).
  double conv_err = -1;
  const char* conv_math = "TF32";
  double bound = 0;  // for each of the above
  bool ok = false;
  // "G 3.6e-07, D 4.1e-07, D's loss 3.1e-08 from the CPU's (bound 1e-03)"
  std::string describe() const;
};

// Bound 1e-3: the FP32 step is 3.6e-7 / 4.1e-7 off on the emulated GPU, at
// most 4.4e-7 for float against double on the CPU over 200 seeds; a kernel
// 1% wrong in part of one gradient is ~5e-2 off. A whole TF32 step cannot be
// held to a tight bound -- operands straddling TF32 rounding boundaries on
// the two paths cascade through the layers (5e-5 to 5e-2 over 200 seeds, on
// the CPU model of it) -- so for cuda-tf32 the step runs in FP32 on `fp32`
// (the same BN, activation, loss and Adam kernels; null: a "cuda" back end is
// made for it) and the TF32 convolutions are checked one by one, where only
// the order of FP32 sums differs. Takes a few milliseconds on a GPU.
SelfCheck self_check(Backend<float>& be, Backend<float>* fp32 = nullptr);

// What gannf-worker and gannf-train do with `be` before using it: nothing for
// the CPU back end (""); otherwise the self-check, throwing one line -- what
// is wrong and what to do -- when it fails, and returning the line to log
// ("self-check of --backend cuda: G 3.6e-07, ...") when it passes.
std::string require_self_check(Backend<float>& be);

}  // namespace gannf
