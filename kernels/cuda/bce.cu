// Binary cross-entropy on logits, forward (mean loss) and backward, in double
// like kernels/cpu/bce.cpp: n is one logit per image, so the cost is nil and
// the results match the CPU's to the last float bit but for exp's rounding.
#include <cmath>

#include "common.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

namespace {

constexpr int kThreads = 256;

// The forward's result: it returns to the host, and ops take no scratch.
__device__ double g_bce_sum;

__global__ void __launch_bounds__(kThreads)
    bce_forward_kernel(const float* logits, float target, int n) {
  __shared__ double red[32];
  double s = 0;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    // max(x,0) - x*t + log1p(exp(-|x|)): exp never overflows, and for large
    // |x| the log1p term vanishes gracefully instead of computing log(0).
    const double x = logits[i];
    s += fmax(x, 0.0) - x * (double)target + log1p(exp(-fabs(x)));
  }
  s = block_sum<kThreads>(s, red);
  if (threadIdx.x == 0) g_bce_sum = s;
}

__global__ void __launch_bounds__(kThreads)
    bce_backward_kernel(float* dlogits, const float* logits, float target, int n, float scale) {
  for (int i = blockIdx.x * kThreads + threadIdx.x; i < n; i += gridDim.x * kThreads) {
    const double x = logits[i];
    // sigmoid without overflow on either side
    const double sg = x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    dlogits[i] = (float)((sg - (double)target) * (double)scale);
  }
}

}  // namespace

double bce_with_logits_forward(const float* logits, float target, int n, cudaStream_t stream) {
  if (n <= 0) throw std::invalid_argument("bce_with_logits_forward: n must be positive");
  launch("bce_with_logits_forward", bce_forward_kernel, dim3(1), dim3(kThreads), stream, logits,
         target, n);
  double s = 0;
#ifdef GANNF_CUDA_EMULATE
  s = g_bce_sum;
#else
  GANNF_CUDA_CHECK(cudaMemcpyFromSymbolAsync(&s, g_bce_sum, sizeof s, 0, cudaMemcpyDeviceToHost,
                                             stream),
                   "reading the loss back");
  GANNF_CUDA_CHECK(cudaStreamSynchronize(stream), "waiting for the loss");
#endif
  return s / n;
}

void bce_with_logits_backward(float* dlogits, const float* logits, float target, int n,
                              float scale, cudaStream_t stream) {
  if (n <= 0) return;
  launch("bce_with_logits_backward", bce_backward_kernel,
         dim3(elementwise_blocks((size_t)n, kThreads, 1)), dim3(kThreads), stream, dlogits, logits,
         target, n, scale);
}

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
