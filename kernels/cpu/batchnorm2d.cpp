// batchnorm2d: training forward (batch statistics), eval forward (running
// statistics), the running-statistics update, and the backward.
//
// Per-channel sums are accumulated in double whatever T is: a channel of the
// first G layer at batch 64 sums 64*32*32 = 65536 values, where float
// accumulation would lose about 4 digits of the mean. The sums are written as
// `omp simd` reductions: a plain `s += x[i]` into one double cannot be
// vectorised (it would reorder the additions), and the chain of dependent
// scalar adds made BN a tenth of the whole training step; eight double lanes
// (then summed) keep double accuracy at vector speed.
#include <cmath>

#include "ops.h"

namespace gannf::cpu {

template <class T>
void batchnorm2d_forward_train(T* out, T* mean, T* var, const T* inp, const T* weight,
                               const T* bias, int B, int C, int HW, T eps) {
  const double n = (double)B * HW;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) {
    double s = 0;
    for (int b = 0; b < B; b++) {
      const T* x = inp + ((size_t)b * C + c) * HW;
#pragma omp simd reduction(+ : s)
      for (int i = 0; i < HW; i++) s += x[i];
    }
    const double m = s / n;
    // Two passes (mean, then squared deviations): no cancellation when |mean| >> std.
    double ss = 0;
    for (int b = 0; b < B; b++) {
      const T* x = inp + ((size_t)b * C + c) * HW;
#pragma omp simd reduction(+ : ss)
      for (int i = 0; i < HW; i++) {
        const double dx = x[i] - m;
        ss += dx * dx;
      }
    }
    const double v = ss / n;
    mean[c] = (T)m;
    var[c] = (T)v;
    const T scale = (T)(weight[c] / std::sqrt(v + (double)eps));
    const T shift = (T)(bias[c] - m * scale);
    for (int b = 0; b < B; b++) {
      const T* x = inp + ((size_t)b * C + c) * HW;
      T* y = out + ((size_t)b * C + c) * HW;
      for (int i = 0; i < HW; i++) y[i] = x[i] * scale + shift;
    }
  }
}

template <class T>
void batchnorm2d_forward_eval(T* out, const T* inp, const T* weight, const T* bias,
                              const T* running_mean, const T* running_var, int B, int C, int HW,
                              T eps) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++) {
      const T scale = (T)(weight[c] / std::sqrt((double)running_var[c] + (double)eps));
      const T shift = (T)(bias[c] - running_mean[c] * scale);
      const T* x = inp + ((size_t)b * C + c) * HW;
      T* y = out + ((size_t)b * C + c) * HW;
      for (int i = 0; i < HW; i++) y[i] = x[i] * scale + shift;
    }
}

template <class T>
void batchnorm2d_update_running(T* running_mean, T* running_var, const T* mean, const T* var,
                                int C, int64_t n, T momentum) {
  // n == 1 has no unbiased variance; PyTorch refuses such a batch in training
  // mode, and so do the layers above this kernel.
  const T unbias = n > 1 ? (T)((double)n / (double)(n - 1)) : T(1);
  for (int c = 0; c < C; c++) {
    running_mean[c] = (T(1) - momentum) * running_mean[c] + momentum * mean[c];
    running_var[c] = (T(1) - momentum) * running_var[c] + momentum * var[c] * unbias;
  }
}

template <class T>
void batchnorm2d_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                          const T* weight, const T* mean, const T* var, int B, int C, int HW,
                          T eps) {
  const double n = (double)B * HW;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) {
    const double m = mean[c];
    const double istd = 1.0 / std::sqrt((double)var[c] + (double)eps);
    double sdy = 0, sdyx = 0;  // sum dy, sum dy * xhat
    for (int b = 0; b < B; b++) {
      const T* x = inp + ((size_t)b * C + c) * HW;
      const T* dy = dout + ((size_t)b * C + c) * HW;
#pragma omp simd reduction(+ : sdy, sdyx)
      for (int i = 0; i < HW; i++) {
        sdy += dy[i];
        sdyx += dy[i] * ((x[i] - m) * istd);
      }
    }
    if (dbias) dbias[c] += (T)sdy;
    if (dweight) dweight[c] += (T)sdyx;
    // dx = gamma * istd * (dy - mean(dy) - xhat * mean(dy * xhat))
    const T k = (T)(weight[c] * istd);
    const T mdy = (T)(sdy / n), mdyx = (T)(sdyx / n);
    const T tm = (T)m, ti = (T)istd;
    for (int b = 0; b < B; b++) {
      const T* x = inp + ((size_t)b * C + c) * HW;
      const T* dy = dout + ((size_t)b * C + c) * HW;
      T* dx = dinp + ((size_t)b * C + c) * HW;
      for (int i = 0; i < HW; i++) dx[i] = k * (dy[i] - mdy - (x[i] - tm) * ti * mdyx);
    }
  }
}

#define GANNF_INSTANTIATE(T)                                                                     \
  template void batchnorm2d_forward_train<T>(T*, T*, T*, const T*, const T*, const T*, int, int,  \
                                             int, T);                                            \
  template void batchnorm2d_forward_eval<T>(T*, const T*, const T*, const T*, const T*, const T*, \
                                            int, int, int, T);                                   \
  template void batchnorm2d_update_running<T>(T*, T*, const T*, const T*, int, int64_t, T);       \
  template void batchnorm2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,       \
                                        const T*, int, int, int, T);
GANNF_INSTANTIATE(float)
GANNF_INSTANTIATE(double)
#undef GANNF_INSTANTIATE

}  // namespace gannf::cpu
