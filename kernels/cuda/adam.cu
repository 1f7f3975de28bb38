// Adam over one flat buffer, with kernels/cpu/adam.cpp's arithmetic in the
// same order (torch.optim.Adam's single-tensor path: weight_decay 0, amsgrad
// off), and a finiteness scan.
//
// The float operations are written out with _rn intrinsics for the square root
// and the division so that no compiler flag (--use_fast_math, -prec-div=false)
// can turn them into approximations: the update must match the CPU's to the
// last bit or two, step after step.
#include <cmath>

#include "common.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    adam_kernel(float* params, float* m, float* v, const float* grads, size_t n, float step_size,
                float bc2_sqrt, float one_m_b1, float b2, float one_m_b2, float eps) {
  for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < n;
       i += (size_t)gridDim.x * kThreads) {
    const float g = grads[i];
    const float mi = m[i] + one_m_b1 * (g - m[i]);
    const float vi = v[i] * b2 + one_m_b2 * g * g;
    const float denom = __fdiv_rn(__fsqrt_rn(vi), bc2_sqrt) + eps;
    params[i] = params[i] - step_size * __fdiv_rn(mi, denom);
    m[i] = mi;
    v[i] = vi;
  }
}

// Cleared to 1 before a scan; any thread that meets a non-finite value stores
// 0. Concurrent stores of the same value: the result does not depend on order.
__device__ int g_all_finite;

__global__ void __launch_bounds__(kThreads) all_finite_kernel(const float* x, size_t n) {
  bool ok = true;
  for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < n;
       i += (size_t)gridDim.x * kThreads)
    ok = ok && isfinite(x[i]);
  if (!ok) g_all_finite = 0;
}

}  // namespace

void adam_update(float* params, float* m, float* v, const float* grads, size_t n,
                 const AdamParams& p, int64_t step, cudaStream_t stream) {
  if (!n) return;
  // Bias corrections in double on the host, as the CPU does, then rounded once.
  const double bc1 = 1.0 - std::pow((double)p.beta1, (double)step);
  const double bc2 = 1.0 - std::pow((double)p.beta2, (double)step);
  const float step_size = (float)(p.lr / bc1);
  const float bc2_sqrt = (float)std::sqrt(bc2);
  const float one_m_b1 = (float)(1.0 - p.beta1), b2 = (float)p.beta2,
              one_m_b2 = (float)(1.0 - p.beta2);
  launch("adam_update", adam_kernel, dim3(elementwise_blocks(n, kThreads)), dim3(kThreads), stream,
         params, m, v, grads, n, step_size, bc2_sqrt, one_m_b1, b2, one_m_b2, (float)p.eps);
}

bool all_finite(const float* x, size_t n, cudaStream_t stream) {
  if (!n) return true;
  int flag = 1;
#ifdef GANNF_CUDA_EMULATE
  g_all_finite = 1;
#else
  GANNF_CUDA_CHECK(cudaMemcpyToSymbolAsync(g_all_finite, &flag, sizeof flag, 0,
                                           cudaMemcpyHostToDevice, stream),
                   "clearing the finiteness flag");
#endif
  launch("all_finite", all_finite_kernel, dim3(elementwise_blocks(n, kThreads)), dim3(kThreads),
         stream, x, n);
#ifdef GANNF_CUDA_EMULATE
  flag = g_all_finite;
#else
  GANNF_CUDA_CHECK(cudaMemcpyFromSymbolAsync(&flag, g_all_finite, sizeof flag, 0,
                                             cudaMemcpyDeviceToHost, stream),
                   "reading the finiteness flag");
  GANNF_CUDA_CHECK(cudaStreamSynchronize(stream), "waiting for the finiteness scan");
#endif
  return flag != 0;
}

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
