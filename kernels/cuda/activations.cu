// ReLU, LeakyReLU and tanh: forward and backward. out may alias inp and dinp
// may alias dout (each element is read, then written, by one thread); each
// backward reads the forward's output, not its input.
//
// Grid-stride loops over a capped grid: these are pure bandwidth, and a
// thread that walks several elements costs no more than several threads.
#include "common.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

namespace {

constexpr int kThreads = 256;

#define GANNF_FOR_EACH(i, n) \
  for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < (n); i += (size_t)gridDim.x * kThreads)

__global__ void __launch_bounds__(kThreads) relu_forward_kernel(float* out, const float* inp, size_t n) {
  GANNF_FOR_EACH(i, n) out[i] = inp[i] > 0.f ? inp[i] : 0.f;
}
__global__ void __launch_bounds__(kThreads)
    relu_backward_kernel(float* dinp, const float* dout, const float* out, size_t n) {
  GANNF_FOR_EACH(i, n) dinp[i] = out[i] > 0.f ? dout[i] : 0.f;
}
__global__ void __launch_bounds__(kThreads)
    leaky_relu_forward_kernel(float* out, const float* inp, size_t n, float slope) {
  GANNF_FOR_EACH(i, n) out[i] = inp[i] > 0.f ? inp[i] : inp[i] * slope;
}
__global__ void __launch_bounds__(kThreads)
    leaky_relu_backward_kernel(float* dinp, const float* dout, const float* out, size_t n,
                               float slope) {
  GANNF_FOR_EACH(i, n) dinp[i] = out[i] > 0.f ? dout[i] : dout[i] * slope;
}
__global__ void __launch_bounds__(kThreads) tanh_forward_kernel(float* out, const float* inp, size_t n) {
  GANNF_FOR_EACH(i, n) out[i] = tanhf(inp[i]);
}
__global__ void __launch_bounds__(kThreads)
    tanh_backward_kernel(float* dinp, const float* dout, const float* out, size_t n) {
  GANNF_FOR_EACH(i, n) dinp[i] = dout[i] * (1.f - out[i] * out[i]);
}

#undef GANNF_FOR_EACH

dim3 grid_for(size_t n) { return dim3(elementwise_blocks(n, kThreads)); }

}  // namespace

void relu_forward(float* out, const float* inp, size_t n, cudaStream_t s) {
  if (n) launch("relu_forward", relu_forward_kernel, grid_for(n), dim3(kThreads), s, out, inp, n);
}
void relu_backward(float* dinp, const float* dout, const float* out, size_t n, cudaStream_t s) {
  if (n)
    launch("relu_backward", relu_backward_kernel, grid_for(n), dim3(kThreads), s, dinp, dout, out,
           n);
}
void leaky_relu_forward(float* out, const float* inp, size_t n, float slope, cudaStream_t s) {
  if (n)
    launch("leaky_relu_forward", leaky_relu_forward_kernel, grid_for(n), dim3(kThreads), s, out,
           inp, n, slope);
}
void leaky_relu_backward(float* dinp, const float* dout, const float* out, size_t n, float slope,
                         cudaStream_t s) {
  if (n)
    launch("leaky_relu_backward", leaky_relu_backward_kernel, grid_for(n), dim3(kThreads), s, dinp,
           dout, out, n, slope);
}
void tanh_forward(float* out, const float* inp, size_t n, cudaStream_t s) {
  if (n) launch("tanh_forward", tanh_forward_kernel, grid_for(n), dim3(kThreads), s, out, inp, n);
}
void tanh_backward(float* dinp, const float* dout, const float* out, size_t n, cudaStream_t s) {
  if (n)
    launch("tanh_backward", tanh_backward_kernel, grid_for(n), dim3(kThreads), s, dinp, dout, out,
           n);
}

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
