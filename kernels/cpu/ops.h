// gannf CPU kernels: every op of the DCGAN, forward and backward.
//
// Conventions (shared with kernels/cuda/ops.cuh, which mirrors this file):
//  - Argument order: outputs first, then inputs, then what the forward cached
//    for the backward, then dimensions, then workspace.
//  - Gradients carry a `d` prefix. Parameter gradients ACCUMULATE (+=) so that
//    micro-batches add up; activation gradients OVERWRITE (=).
//  - Tensors are NCHW, row-major, contiguous. A shape comment names each one.
//  - Every kernel is a template over the scalar type: float is what training
//    runs, double is the reference path the finite-difference checks use.
//  - Kernels never allocate. Ops that need scratch memory (the convolutions)
//    take a workspace pointer and its size in elements; *_workspace_size()
//    says how much lets them run at full speed, and they work (slower) with
//    any workspace of at least *_workspace_min().
#pragma once
#include <cstddef>
#include <cstdint>

#include "bn_act.h"
#include "conv_dims.h"

namespace gannf::cpu {

// The geometry of a convolution, gannf::ConvDims with conv_dims() and
// friends, is kernels/common/conv_dims.h: one type for both back ends.

// ---- conv2d (no bias) -------------------------------------------------------
// weight: (C_out, C_in, K, K), PyTorch's Conv2d layout.
size_t conv2d_workspace_size(const ConvDims& d);
size_t conv2d_workspace_min(const ConvDims& d);
template <class T>
void conv2d_forward(T* out,                           // (B, C_out, H_out, W_out)
                    const T* inp,                     // (B, C_in, H_in, W_in)
                    const T* weight,                  // (C_out, C_in, K, K)
                    const ConvDims& d, T* ws, size_t ws_size);
// dinp or dweight may be null to skip that half.
template <class T>
void conv2d_backward(T* dinp,                         // (B, C_in, H_in, W_in)      =
                     T* dweight,                      // (C_out, C_in, K, K)        +=
                     const T* dout,                   // (B, C_out, H_out, W_out)
                     const T* inp,                    // (B, C_in, H_in, W_in)
                     const T* weight,                 // (C_out, C_in, K, K)
                     const ConvDims& d, T* ws, size_t ws_size);

// ---- conv_transpose2d (no bias) ---------------------------------------------
// weight: (C_in, C_out, K, K), PyTorch's ConvTranspose2d layout. The mirror of
// conv2d: forward is gemm + col2im, backward-data is im2col + gemm.
size_t conv_transpose2d_workspace_size(const ConvDims& d);
size_t conv_transpose2d_workspace_min(const ConvDims& d);
template <class T>
void conv_transpose2d_forward(T* out,                 // (B, C_out, H_out, W_out)
                              const T* inp,           // (B, C_in, H_in, W_in)
                              const T* weight,        // (C_in, C_out, K, K)
                              const ConvDims& d, T* ws, size_t ws_size);
template <class T>
void conv_transpose2d_backward(T* dinp,               // (B, C_in, H_in, W_in)    =
                               T* dweight,            // (C_in, C_out, K, K)      +=
                               const T* dout,         // (B, C_out, H_out, W_out)
                               const T* inp,          // (B, C_in, H_in, W_in)
                               const T* weight,       // (C_in, C_out, K, K)
                               const ConvDims& d, T* ws, size_t ws_size);

// ---- batchnorm2d --------------------------------------------------------------
// Training mode normalises with the batch's own statistics and caches them:
// mean and the biased variance (what the normalisation used). Eval mode uses
// the running statistics. The running-statistics update is its own kernel so
// that a coordinator can fold statistics computed elsewhere in the same order.
// act: a ReLU / LeakyReLU (slope) fused in (kernels/common/bn_act.h): out is
// then act(bn(x)), bit for bit what the two ops give one after the other.
template <class T>
void batchnorm2d_forward_train(T* out,                // (B, C, HW)
                               T* mean,               // (C)  cache: batch mean
                               T* var,                // (C)  cache: biased batch variance
                               const T* inp,          // (B, C, HW)
                               const T* weight,       // (C)  gamma
                               const T* bias,         // (C)  beta
                               int B, int C, int HW, T eps,
                               BnAct act = BnAct::none, T slope = T(0));
template <class T>
void batchnorm2d_forward_eval(T* out,                 // (B, C, HW)
                              const T* inp,           // (B, C, HW)
                              const T* weight,        // (C)
                              const T* bias,          // (C)
                              const T* running_mean,  // (C)
                              const T* running_var,   // (C)
                              int B, int C, int HW, T eps,
                              BnAct act = BnAct::none, T slope = T(0));
// PyTorch's rule: r_mean = (1-m) r_mean + m mean;
//                 r_var  = (1-m) r_var  + m var * n/(n-1)   (n = B*HW, unbiased)
template <class T>
void batchnorm2d_update_running(T* running_mean,      // (C)
                                T* running_var,       // (C)
                                const T* mean,        // (C)
                                const T* var,         // (C) biased
                                int C, int64_t n, T momentum);
// dweight and dbias may be null (a pass that wants only the input gradient);
// dinp may alias dout. With a fused act, dout is the gradient of act's output
// and act_out that output (the forward's out).
template <class T>
void batchnorm2d_backward(T* dinp,                    // (B, C, HW)   =
                          T* dweight,                 // (C)          +=
                          T* dbias,                   // (C)          +=
                          const T* dout,              // (B, C, HW)
                          const T* inp,               // (B, C, HW)
                          const T* weight,            // (C)
                          const T* mean,              // (C) cache
                          const T* var,               // (C) cache
                          int B, int C, int HW, T eps,
                          BnAct act = BnAct::none, T slope = T(0),
                          const T* act_out = nullptr);  // (B, C, HW) act's output

// ---- activations (out may alias inp; dinp may alias dout) --------------------
// Each backward takes its derivative from the forward's OUTPUT, so the input
// need not be kept: relu' = out > 0, leaky' = out > 0 ? 1 : slope (valid for
// slope > 0), tanh' = 1 - out^2.
template <class T> void relu_forward(T* out, const T* inp, size_t n);
template <class T> void relu_backward(T* dinp, const T* dout, const T* out, size_t n);
template <class T> void leaky_relu_forward(T* out, const T* inp, size_t n, T slope);
template <class T> void leaky_relu_backward(T* dinp, const T* dout, const T* out, size_t n, T slope);
template <class T> void tanh_forward(T* out, const T* inp, size_t n);
template <class T> void tanh_backward(T* dinp, const T* dout, const T* out, size_t n);

// ---- binary cross-entropy with logits ------------------------------------------
// loss = mean_i [ max(x,0) - x*t + log1p(exp(-|x|)) ], stable for any |x|.
// The backward writes dlogits = (sigmoid(x) - t) * scale; scale = 1/n gives
// the gradient of the mean, 1/N of a larger accumulation the gradient of that.
template <class T> double bce_with_logits_forward(const T* logits, T target, int n);
template <class T>
void bce_with_logits_backward(T* dlogits, const T* logits, T target, int n, T scale);

// ---- softmax cross-entropy ------------------------------------------------------
// loss = mean_b [ log sum_c exp(x_bc) - x_b,t_b ] over B rows of C class
// logits, computed in double around each row's largest logit (no overflow, no
// log(0)). The forward caches the softmax; the backward writes
// dlogits = (probs - onehot(t)) * scale (scale = 1/B: the mean's gradient).
// Each target is in [0, C) (the caller checks). dlogits may alias probs.
template <class T>
double softmax_xent_forward(T* probs,                 // (B, C) cache: softmax of each row
                            const T* logits,          // (B, C)
                            const int32_t* targets,   // (B)
                            int B, int C);
template <class T>
void softmax_xent_backward(T* dlogits,                // (B, C)   =
                           const T* probs,            // (B, C) cache
                           const int32_t* targets,    // (B)
                           int B, int C, T scale);

// ---- Adam over a whole flat buffer ---------------------------------------------
// Exactly torch.optim.Adam (weight_decay 0, amsgrad off): bias corrections,
// eps added outside the square root. `step` is the 1-based step number.
struct AdamParams {
  float lr = 2e-4f, beta1 = 0.5f, beta2 = 0.999f, eps = 1e-8f;
};
template <class T>
void adam_update(T* params, T* m, T* v, const T* grads, size_t n, const AdamParams& p,
                 int64_t step);

// ---- misc ---------------------------------------------------------------------------
// true when every element is finite.
template <class T> bool all_finite(const T* x, size_t n);

}  // namespace gannf::cpu
