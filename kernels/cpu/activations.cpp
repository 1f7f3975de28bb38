// ReLU, LeakyReLU and tanh: forward and backward. out may alias inp and dinp
// may alias dout; each backward reads the forward's output, not its input.
#include <cmath>

#include "ops.h"

namespace gannf::cpu {

// Below this many elements a parallel region costs more than it saves.
constexpr size_t kParallelMin = 1 << 15;

template <class T>
void relu_forward(T* out, const T* inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) out[i] = inp[i] > T(0) ? inp[i] : T(0);
}
template <class T>
void relu_backward(T* dinp, const T* dout, const T* out, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) dinp[i] = out[i] > T(0) ? dout[i] : T(0);
}

template <class T>
void leaky_relu_forward(T* out, const T* inp, size_t n, T slope) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) out[i] = inp[i] > T(0) ? inp[i] : inp[i] * slope;
}
template <class T>
void leaky_relu_backward(T* dinp, const T* dout, const T* out, size_t n, T slope) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) dinp[i] = out[i] > T(0) ? dout[i] : dout[i] * slope;
}

template <class T>
void tanh_forward(T* out, const T* inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin / 8)
  for (size_t i = 0; i < n; i++) out[i] = std::tanh(inp[i]);
}
template <class T>
void tanh_backward(T* dinp, const T* dout, const T* out, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * (T(1) - out[i] * out[i]);
}

#define GANNF_INSTANTIATE(T)                                                  \
  template void relu_forward<T>(T*, const T*, size_t);                        \
  template void relu_backward<T>(T*, const T*, const T*, size_t);             \
  template void leaky_relu_forward<T>(T*, const T*, size_t, T);               \
  template void leaky_relu_backward<T>(T*, const T*, const T*, size_t, T);    \
  template void tanh_forward<T>(T*, const T*, size_t);                        \
  template void tanh_backward<T>(T*, const T*, const T*, size_t);
GANNF_INSTANTIATE(float)
GANNF_INSTANTIATE(double)
#undef GANNF_INSTANTIATE

}  // namespace gannf::cpu
