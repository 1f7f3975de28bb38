// gannf CUDA kernels: every op of the DCGAN, forward and backward, on the GPU.
//
// This file mirrors kernels/cpu/ops.h function for function: the same names,
// the same argument order (outputs, inputs, forward caches, dimensions,
// workspace), the same accumulate/overwrite rules. The differences:
//  - Pointers are DEVICE pointers, and each op takes the stream it runs on as
//    its last argument (default: the legacy default stream). Ops only enqueue
//    work; none synchronises the host, except the three that return a value
//    to it (bce_with_logits_forward, all_finite) -- they must wait for it.
//  - float only: training runs in FP32 by default (results agree with the CPU
//    back end to ~1e-5 relative); double is the CPU's reference path. The
//    convolutions take an opt-in ConvMath::tf32 (below).
//  - Deterministic: every reduction has a fixed order and no kernel uses
//    floating-point atomics, so two runs of the same op on the same inputs,
//    dimensions and workspace size give bit-identical results on any GPU.
//    (Split-K counts and tile shapes are functions of the dimensions alone,
//    never of the GPU; a workspace smaller than *_workspace_size() may lower
//    the split count and so change the rounding, never the correctness.)
//
// Conventions (as on the CPU):
//  - Parameter gradients ACCUMULATE (+=) so that micro-batches add up;
//    activation gradients OVERWRITE (=).
//  - Tensors are NCHW, row-major, contiguous. A shape comment names each one.
//  - Kernels never allocate. Ops that need scratch memory (the convolutions)
//    take a workspace pointer and its size in elements; *_workspace_size()
//    says how much lets them run at full speed, and they work (slower) with
//    any workspace of at least *_workspace_min().
//
// This header is host code: .cpp files compiled by the host compiler include it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "bn_act.h"
#include "check.cuh"
#include "conv_dims.h"

// The kernels are also compiled for the host emulator (emu/emu.h), in a
// namespace of their own so that one binary can hold both builds.
#ifdef GANNF_CUDA_EMULATE
#define GANNF_CUDA_ABI emulated
#else
#define GANNF_CUDA_ABI gpu
#endif

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

// The geometry of a convolution, gannf::ConvDims with conv_dims() and
// friends, is kernels/common/conv_dims.h: one type for both back ends.

// How the convolutions' GEMMs multiply:
//  - fp32 (the default): FP32 FMA on the CUDA cores.
//  - tf32 (opt-in, compute capability 8.0 or newer): the tensor cores, each
//    operand rounded to TF32 (10 mantissa bits, nearest, ties away from zero),
//    products and sums in FP32 -- what PyTorch's default (cuDNN with TF32)
//    computes. Equal to the FP32 convolution of TF32-rounded tensors up to
//    FP32 summation; about 5e-4 relative from the FP32 result. Deterministic
//    run to run on one GPU model (fixed tiles and split-K, no atomics); the
//    order in which a tensor core adds its products is the hardware's.
//    The workspace sizes below are for the math given (tf32's stage the
//    forward GEMM's operands there; with less, a slower TF32 kernel runs).
//  - bf16 (compute capability 8.0 or newer): the tensor cores on operands
//    rounded to BF16 (8 mantissa bits, nearest, ties to even), products and
//    sums in FP32; only the staged kernels compute it, so its workspace must
//    hold their operands (*_workspace_min(d, ConvMath::bf16)). The
//    cuda-bf16 back end (FP32 master weights, BN, activations and Adam).
enum class ConvMath { fp32, tf32, bf16 };

// A benchmarking knob for the large FP32 GEMM tile (128x128, 256 threads):
// compiled for 2 blocks per SM (default: at most 128 registers a thread, a few
// bytes of spill, twice the warps to hide latency; 2% faster an H100 step) or
// 1 (ptxas may use up to 255). Same arithmetic in the same order: results are
// bit for bit the same, only speed differs; bench_cuda times both.
// Process-wide; before any call, $GANNF_GEMM_BLOCKS_PER_SM=1 sets it too.
void set_gemm_blocks_per_sm(int blocks);  // 1 or 2; 0: back to the default

// A benchmarking knob for TF32: the staged tensor-core kernels (operands laid
// out in the workspace first, cp.async + ldmatrix + mma.sync; the default
// where the workspace holds them) or always the WMMA kernel that stages
// nothing (the earlier one, and the fallback for a small workspace). Both
// compute the FP32 convolution of the TF32-rounded operands, in another order
// of summation: results differ in the last bits. Process-wide; before any
// call, $GANNF_TF32_STAGED=0 selects the WMMA kernel too.
void set_tf32_staging(int mode);  // 1 staged, 0 WMMA only; -1: back to the default
// GEMMs launched on the staged kernels so far in this process (for tests:
// that a workspace of *_workspace_size(d, tf32) gets them).
uint64_t tf32_staged_gemms();

// ---- conv2d (no bias) -------------------------------------------------------
// weight: (C_out, C_in, K, K), PyTorch's Conv2d layout.
// Forward is an implicit-GEMM (im2col fused into the GEMM's tile loads);
// backward-data is GEMM + col2im; backward-weight is an implicit GEMM whose
// reduction runs over the batch, split into fixed slices and summed in a
// second, fixed-order pass (no atomics).
size_t conv2d_workspace_size(const ConvDims& d, ConvMath math = ConvMath::fp32);
size_t conv2d_workspace_min(const ConvDims& d, ConvMath math = ConvMath::fp32);
void conv2d_forward(float* out,                       // (B, C_out, H_out, W_out)
                    const float* inp,                 // (B, C_in, H_in, W_in)
                    const float* weight,              // (C_out, C_in, K, K)
                    const ConvDims& d, float* ws, size_t ws_size, cudaStream_t stream = 0,
                    ConvMath math = ConvMath::fp32);
// dinp or dweight may be null to skip that half.
void conv2d_backward(float* dinp,                     // (B, C_in, H_in, W_in)      =
                     float* dweight,                  // (C_out, C_in, K, K)        +=
                     const float* dout,               // (B, C_out, H_out, W_out)
                     const float* inp,                // (B, C_in, H_in, W_in)
                     const float* weight,             // (C_out, C_in, K, K)
                     const ConvDims& d, float* ws, size_t ws_size, cudaStream_t stream = 0,
                     ConvMath math = ConvMath::fp32);

// ---- conv_transpose2d (no bias) ---------------------------------------------
// weight: (C_in, C_out, K, K), PyTorch's ConvTranspose2d layout. The mirror of
// conv2d: forward is GEMM + col2im (conv2d's backward-data), backward-data is
// the implicit im2col GEMM (conv2d's forward), backward-weight the same
// batch-reduced GEMM with the roles of input and output gradient swapped.
size_t conv_transpose2d_workspace_size(const ConvDims& d, ConvMath math = ConvMath::fp32);
size_t conv_transpose2d_workspace_min(const ConvDims& d, ConvMath math = ConvMath::fp32);
void conv_transpose2d_forward(float* out,             // (B, C_out, H_out, W_out)
                              const float* inp,       // (B, C_in, H_in, W_in)
                              const float* weight,    // (C_in, C_out, K, K)
                              const ConvDims& d, float* ws, size_t ws_size,
                              cudaStream_t stream = 0, ConvMath math = ConvMath::fp32);
void conv_transpose2d_backward(float* dinp,           // (B, C_in, H_in, W_in)    =
                               float* dweight,        // (C_in, C_out, K, K)      +=
                               const float* dout,     // (B, C_out, H_out, W_out)
                               const float* inp,      // (B, C_in, H_in, W_in)
                               const float* weight,   // (C_in, C_out, K, K)
                               const ConvDims& d, float* ws, size_t ws_size,
                               cudaStream_t stream = 0, ConvMath math = ConvMath::fp32);

// ---- batchnorm2d --------------------------------------------------------------
// As on the CPU: per-channel sums in double, reduced in a fixed order (the
// same results on every run). One thread block per channel, two passes (mean,
// then squared deviations) -- or, with a scratch (kBnScratchDoubles) and a
// layer of few wide channels, each channel in fixed chunks over several
// blocks, whose partial sums (shifted by the channel's first value, so no
// cancellation when |mean| >> std) a second kernel adds in chunk order. act: a
// ReLU / LeakyReLU (slope) fused into the normalising pass (bn_act.h), bit
// for bit what the two kernels give one after the other.
constexpr size_t kBnScratchDoubles = 4096;
void batchnorm2d_forward_train(float* out,            // (B, C, HW)
                               float* mean,           // (C)  cache: batch mean
                               float* var,            // (C)  cache: biased batch variance
                               const float* inp,      // (B, C, HW)
                               const float* weight,   // (C)  gamma
                               const float* bias,     // (C)  beta
                               int B, int C, int HW, float eps, BnAct act = BnAct::none,
                               float slope = 0.f, cudaStream_t stream = 0,
                               double* scratch = nullptr);  // kBnScratchDoubles, or null
void batchnorm2d_forward_eval(float* out,             // (B, C, HW)
                              const float* inp,       // (B, C, HW)
                              const float* weight,    // (C)
                              const float* bias,      // (C)
                              const float* running_mean,  // (C)
                              const float* running_var,   // (C)
                              int B, int C, int HW, float eps, BnAct act = BnAct::none,
                              float slope = 0.f, cudaStream_t stream = 0);
// PyTorch's rule: r_mean = (1-m) r_mean + m mean;
//                 r_var  = (1-m) r_var  + m var * n/(n-1)   (n = B*HW, unbiased)
void batchnorm2d_update_running(float* running_mean,  // (C)
                                float* running_var,   // (C)
                                const float* mean,    // (C)
                                const float* var,     // (C) biased
                                int C, int64_t n, float momentum, cudaStream_t stream = 0);
// dweight and dbias may be null (a pass that wants only the input gradient);
// dinp may alias dout. With a fused act, dout is the gradient of act's output
// and act_out that output; act' is applied as dout is read.
void batchnorm2d_backward(float* dinp,                // (B, C, HW)   =
                          float* dweight,             // (C)          +=
                          float* dbias,               // (C)          +=
                          const float* dout,          // (B, C, HW)
                          const float* inp,           // (B, C, HW)
                          const float* weight,        // (C)
                          const float* mean,          // (C) cache
                          const float* var,           // (C) cache
                          int B, int C, int HW, float eps, BnAct act = BnAct::none,
                          float slope = 0.f,
                          const float* act_out = nullptr,  // (B, C, HW) act's output
                          cudaStream_t stream = 0,
                          double* scratch = nullptr);  // kBnScratchDoubles, or null

// ---- activations (out may alias inp; dinp may alias dout) --------------------
// Each backward takes its derivative from the forward's OUTPUT: relu' = out > 0,
// leaky' = out > 0 ? 1 : slope (valid for slope > 0), tanh' = 1 - out^2.
void relu_forward(float* out, const float* inp, size_t n, cudaStream_t stream = 0);
void relu_backward(float* dinp, const float* dout, const float* out, size_t n,
                   cudaStream_t stream = 0);
void leaky_relu_forward(float* out, const float* inp, size_t n, float slope,
                        cudaStream_t stream = 0);
void leaky_relu_backward(float* dinp, const float* dout, const float* out, size_t n, float slope,
                         cudaStream_t stream = 0);
void tanh_forward(float* out, const float* inp, size_t n, cudaStream_t stream = 0);
void tanh_backward(float* dinp, const float* dout, const float* out, size_t n,
                   cudaStream_t stream = 0);

// ---- binary cross-entropy with logits ------------------------------------------
// loss = mean_i [ max(x,0) - x*t + log1p(exp(-|x|)) ], stable for any |x|,
// summed in double in a fixed order; waits for the stream (returns to the host).
// The backward writes dlogits = (sigmoid(x) - t) * scale, computed in double.
double bce_with_logits_forward(const float* logits, float target, int n, cudaStream_t stream = 0);
void bce_with_logits_backward(float* dlogits, const float* logits, float target, int n,
                              float scale, cudaStream_t stream = 0);

// ---- Adam over a whole flat buffer ---------------------------------------------
// Exactly kernels/cpu/adam.cpp's arithmetic, in the same order (torch.optim.Adam,
// weight_decay 0, amsgrad off): bias corrections in double on the host, m by
// lerp, denom = sqrt(v)/sqrt(bc2) + eps, IEEE sqrt and division.
struct AdamParams {
  float lr = 2e-4f, beta1 = 0.5f, beta2 = 0.999f, eps = 1e-8f;
};
void adam_update(float* params, float* m, float* v, const float* grads, size_t n,
                 const AdamParams& p, int64_t step, cudaStream_t stream = 0);

// ---- misc ---------------------------------------------------------------------------
// true when every element is finite; waits for the stream.
bool all_finite(const float* x, size_t n, cudaStream_t stream = 0);
// out[i] = x[i] rounded to BF16 (nearest, ties to even, as the BF16 staging
// passes round; NaN stays NaN), its 16 bits. Not used in training: bench_cuda
// casts cuDNN's BF16 inputs with it (convert.cu).
void to_bf16(uint16_t* out, const float* x, size_t n, cudaStream_t stream = 0);

// ---- what this build can run --------------------------------------------------------
// cudaSuccess when the kernels of this build can run on the current device;
// cudaErrorNoKernelImageForDevice (or similar) when it was built for other GPUs.
cudaError_t kernel_image_status();
// The GPU architectures this build carries code for, e.g. "sm_75 sm_80 ... +PTX".
std::string compiled_architectures();

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
