// Adam over one flat buffer, exactly as torch.optim.Adam's single-tensor path
// computes it (weight_decay 0, amsgrad off), and a finiteness scan.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ops.h"

namespace gannf::cpu {

template <class T>
void adam_update(T* params, T* m, T* v, const T* grads, size_t n, const AdamParams& p,
                 int64_t step) {
  // Same operation order as PyTorch so that float rounding agrees: bias
  // corrections in double, m by lerp, denom = sqrt(v)/sqrt(bc2) + eps.
  const double bc1 = 1.0 - std::pow((double)p.beta1, (double)step);
  const double bc2 = 1.0 - std::pow((double)p.beta2, (double)step);
  const T step_size = (T)(p.lr / bc1);
  const T bc2_sqrt = (T)std::sqrt(bc2);
  const T one_m_b1 = (T)(1.0 - p.beta1), b2 = (T)p.beta2, one_m_b2 = (T)(1.0 - p.beta2);
  const T eps = (T)p.eps;
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) {
    const T g = grads[i];
    m[i] = m[i] + one_m_b1 * (g - m[i]);
    v[i] = v[i] * b2 + one_m_b2 * g * g;
    const T denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    params[i] = params[i] - step_size * (m[i] / denom);
  }
}

// inf and NaN are the values whose exponent field is all ones. An OR over
// "exponent == all ones" on the bits vectorises; `ok && isfinite(x)` did not,
// and ran at a quarter of the copy bandwidth (docs/benchmarks.md).
template <class T>
bool all_finite(const T* x, size_t n) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr U kExp = sizeof(T) == 4 ? (U)0x7f800000u : (U)0x7ff0000000000000ull;
  unsigned bad = 0;
#pragma omp parallel for simd reduction(| : bad) schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) {
    U u;
    std::memcpy(&u, x + i, sizeof u);
    bad |= (unsigned)((u & kExp) == kExp);
  }
  return bad == 0;
}

template void adam_update<float>(float*, float*, float*, const float*, size_t, const AdamParams&,
                                 int64_t);
template void adam_update<double>(double*, double*, double*, const double*, size_t,
                                  const AdamParams&, int64_t);
template bool all_finite<float>(const float*, size_t);
template bool all_finite<double>(const double*, size_t);

}  // namespace gannf::cpu
