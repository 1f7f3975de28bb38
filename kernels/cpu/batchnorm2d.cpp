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
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "ops.h"

namespace gannf::cpu {

// Channels are processed in blocks whose data over the whole batch (about
// kBlockBytes) stays in the L2 cache, read image by image. Channel by channel,
// the 4x4 maps of the deep layers are 64-byte planes 32 KB apart in memory:
// one cache line per step, which the prefetchers cannot follow (BN on 512
// channels of 4x4 at batch 64 took 1.0 ms forward and 1.5 ms backward in the
// training step; blocked, 0.33 and 0.49 ms). Within a block each image's
// planes are one contiguous run, and the later passes over the block find it
// in cache. The order of the additions is the same as channel by channel.
constexpr size_t kBlockBytes = 512 * 1024;
constexpr int kMaxBlock = 256;  // channels; the per-channel sums live on the stack
template <class T>
static int bn_block(int B, int C, int HW) {
  const size_t per_channel = (size_t)B * HW * sizeof(T);
  int cb = (int)std::max<size_t>(1, kBlockBytes / per_channel);
  const int nt = omp_get_max_threads();
  cb = std::min(cb, (C + nt - 1) / nt);  // a block for every thread
  return std::clamp(cb, 1, kMaxBlock);
}

template <class T>
void batchnorm2d_forward_train(T* out, T* mean, T* var, const T* inp, const T* weight,
                               const T* bias, int B, int C, int HW, T eps) {
  const double n = (double)B * HW;
  const int cb = bn_block<T>(B, C, HW), nblocks = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < nblocks; blk++) {
    const int c0 = blk * cb, c1 = std::min(C, c0 + cb);
    double s[kMaxBlock] = {}, ss[kMaxBlock] = {};
    for (int b = 0; b < B; b++)
      for (int c = c0; c < c1; c++) {
        const T* x = inp + ((size_t)b * C + c) * HW;
        double sc = s[c - c0];
#pragma omp simd reduction(+ : sc)
        for (int i = 0; i < HW; i++) sc += x[i];
        s[c - c0] = sc;
      }
    // Two passes (mean, then squared deviations): no cancellation when |mean| >> std.
    for (int b = 0; b < B; b++)
      for (int c = c0; c < c1; c++) {
        const T* x = inp + ((size_t)b * C + c) * HW;
        const double m = s[c - c0] / n;
        double sc = ss[c - c0];
#pragma omp simd reduction(+ : sc)
        for (int i = 0; i < HW; i++) {
          const double dx = x[i] - m;
          sc += dx * dx;
        }
        ss[c - c0] = sc;
      }
    T scale[kMaxBlock], shift[kMaxBlock];
    for (int c = c0; c < c1; c++) {
      const double m = s[c - c0] / n, v = ss[c - c0] / n;
      mean[c] = (T)m;
      var[c] = (T)v;
      scale[c - c0] = (T)(weight[c] / std::sqrt(v + (double)eps));
      shift[c - c0] = (T)(bias[c] - m * scale[c - c0]);
    }
    for (int b = 0; b < B; b++)
      for (int c = c0; c < c1; c++) {
        const T* x = inp + ((size_t)b * C + c) * HW;
        T* y = out + ((size_t)b * C + c) * HW;
        const T k = scale[c - c0], o = shift[c - c0];
        for (int i = 0; i < HW; i++) y[i] = x[i] * k + o;
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
  const int cb = bn_block<T>(B, C, HW), nblocks = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < nblocks; blk++) {
    const int c0 = blk * cb, c1 = std::min(C, c0 + cb);
    double sdy[kMaxBlock] = {}, sdyx[kMaxBlock] = {};  // sum dy, sum dy * xhat
    for (int b = 0; b < B; b++)
      for (int c = c0; c < c1; c++) {
        const T* x = inp + ((size_t)b * C + c) * HW;
        const T* dy = dout + ((size_t)b * C + c) * HW;
        const double m = mean[c];
        const double istd = 1.0 / std::sqrt((double)var[c] + (double)eps);
        double a = sdy[c - c0], q = sdyx[c - c0];
#pragma omp simd reduction(+ : a, q)
        for (int i = 0; i < HW; i++) {
          a += dy[i];
          q += dy[i] * ((x[i] - m) * istd);
        }
        sdy[c - c0] = a;
        sdyx[c - c0] = q;
      }
    // dx = gamma * istd * (dy - mean(dy) - xhat * mean(dy * xhat))
    T k[kMaxBlock], mdy[kMaxBlock], mdyx[kMaxBlock], ti[kMaxBlock];
    for (int c = c0; c < c1; c++) {
      const double istd = 1.0 / std::sqrt((double)var[c] + (double)eps);
      if (dbias) dbias[c] += (T)sdy[c - c0];
      if (dweight) dweight[c] += (T)sdyx[c - c0];
      k[c - c0] = (T)(weight[c] * istd);
      mdy[c - c0] = (T)(sdy[c - c0] / n);
      mdyx[c - c0] = (T)(sdyx[c - c0] / n);
      ti[c - c0] = (T)istd;
    }
    for (int b = 0; b < B; b++)
      for (int c = c0; c < c1; c++) {
        const T* x = inp + ((size_t)b * C + c) * HW;
        const T* dy = dout + ((size_t)b * C + c) * HW;
        T* dx = dinp + ((size_t)b * C + c) * HW;
        const T kc = k[c - c0], md = mdy[c - c0], mq = mdyx[c - c0], tm = mean[c], t = ti[c - c0];
        for (int i = 0; i < HW; i++) dx[i] = kc * (dy[i] - md - (x[i] - tm) * t * mq);
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
