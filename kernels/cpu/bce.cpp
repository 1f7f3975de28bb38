// Binary cross-entropy on logits, forward (mean loss) and backward.
#include <algorithm>
#include <cmath>

#include "ops.h"

namespace gannf::cpu {

template <class T>
double bce_with_logits_forward(const T* logits, T target, int n) {
  // max(x,0) - x*t + log1p(exp(-|x|)): exp never overflows, and for large |x|
  // the log1p term vanishes gracefully instead of computing log(0).
  double s = 0;
  for (int i = 0; i < n; i++) {
    const double x = logits[i];
    s += std::max(x, 0.0) - x * (double)target + std::log1p(std::exp(-std::fabs(x)));
  }
  return s / n;
}

template <class T>
void bce_with_logits_backward(T* dlogits, const T* logits, T target, int n, T scale) {
  for (int i = 0; i < n; i++) {
    const double x = logits[i];
    // sigmoid without overflow on either side
    const double sg = x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
    dlogits[i] = (T)((sg - (double)target) * (double)scale);
  }
}

template double bce_with_logits_forward<float>(const float*, float, int);
template double bce_with_logits_forward<double>(const double*, double, int);
template void bce_with_logits_backward<float>(float*, const float*, float, int, float);
template void bce_with_logits_backward<double>(double*, const double*, double, int, double);

}  // namespace gannf::cpu
