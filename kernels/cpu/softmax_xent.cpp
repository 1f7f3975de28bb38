// Softmax cross-entropy over class logits: forward (mean loss, softmax cached)
// and backward. The classifier behind gannf-eval trains with it.
#include <algorithm>
#include <cmath>

#include "ops.h"

namespace gannf::cpu {

template <class T>
double softmax_xent_forward(T* probs, const T* logits, const int32_t* targets, int B, int C) {
  double total = 0;
  for (int b = 0; b < B; b++) {
    const T* x = logits + (size_t)b * C;
    T* p = probs + (size_t)b * C;
    // Shifted by the row's largest logit: every exp is <= 1, so none
    // overflows, and the largest is exactly 1, so the sum is never 0.
    double mx = x[0];
    for (int c = 1; c < C; c++) mx = std::max(mx, (double)x[c]);
    double sum = 0;
    for (int c = 0; c < C; c++) sum += std::exp((double)x[c] - mx);
    const double log_sum = std::log(sum);
    for (int c = 0; c < C; c++) p[c] = (T)std::exp((double)x[c] - mx - log_sum);
    // -log softmax(x)_t = log sum_c exp(x_c - mx) - (x_t - mx): no log(0)
    // however small the target's probability.
    total += log_sum - ((double)x[targets[b]] - mx);
  }
  return total / B;
}

template <class T>
void softmax_xent_backward(T* dlogits, const T* probs, const int32_t* targets, int B, int C,
                           T scale) {
  for (int b = 0; b < B; b++) {
    const size_t row = (size_t)b * C;
    for (int c = 0; c < C; c++) {
      const T onehot = c == targets[b] ? T(1) : T(0);
      dlogits[row + c] = (probs[row + c] - onehot) * scale;
    }
  }
}

template double softmax_xent_forward<float>(float*, const float*, const int32_t*, int, int);
template double softmax_xent_forward<double>(double*, const double*, const int32_t*, int, int);
template void softmax_xent_backward<float>(float*, const float*, const int32_t*, int, int, float);
template void softmax_xent_backward<double>(double*, const double*, const int32_t*, int, int,
                                            double);

}  // namespace gannf::cpu
