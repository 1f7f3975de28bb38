// ReLU, LeakyReLU and tanh: forward and backward. out may alias inp and dinp
// may alias dout; each backward reads the forward's output, not its input.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

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

// Float tanh that vectorises: std::tanh is a libm call per element, and G's
// last activation is large (786k values at batch 64); this runs 16 lanes at a
// time (docs/benchmarks.md, Kernel changes). Checked against tanh in double
// for every float in [-30, 30]: at most 2.4 ulp off; +-0, +-inf and NaN pass
// through as tanh's. double keeps std::tanh (it is the reference path).
namespace {
inline float tanh_vec(float x) {
  const float a = std::fabs(x), a2 = a * a;
  // |x| < 0.3: the odd Taylor series; the first omitted term (x^13) is 2e-9
  // relative, and (1 - e)/(1 + e) below would lose digits to cancellation here.
  const float small =
      a + a * a2 *
              (-1.f / 3 +
               a2 * (2.f / 15 + a2 * (-17.f / 315 + a2 * (62.f / 2835 + a2 * (-1382.f / 155925)))));
  // Otherwise (1 - e)/(1 + e) with e = exp(-2|x|); tanh(9) already rounds to 1.
  // exp(y) = 2^k exp(r): k rounded by the 1.5*2^23 trick (std::floor does not
  // vectorise here), r = y - k ln2 in two parts (Cody-Waite), exp(r) by its
  // Taylor series to r^7 (|r| <= ln2/2: error 5e-9 relative).
  const float y = -2.f * std::min(a, 9.f);
  const float k = (y * 1.44269504f + 12582912.f) - 12582912.f;
  const float r = (y - k * 0.693359375f) + k * 2.12194440e-4f;
  const float p =
      1.f +
      r * (1.f + r * (0.5f + r * (1.f / 6 +
                                  r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720 + r / 5040))))));
  const float e = p * std::bit_cast<float>(((int32_t)k + 127) << 23);
  const float t = a < 0.3f ? small : (1.f - e) / (1.f + e);
  return std::copysign(t, x);
}
}  // namespace
template <>
void tanh_forward<float>(float* out, const float* inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) out[i] = tanh_vec(inp[i]);
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
