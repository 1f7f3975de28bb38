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
//
// A ReLU or LeakyReLU that follows may be fused in (kernels/common/bn_act.h):
// the forward applies it in the normalising pass, the backward applies its
// derivative as it reads the incoming gradient. The bodies are templates on
// the activation, so the unfused paths are what they were.
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ops.h"

namespace gannf::cpu {

// Channels are processed in blocks whose data over the whole batch (about
// kBlockBytes) stays in the L2 cache, read image by image. Channel by channel,
// the 4x4 maps of the deep layers are 64-byte planes 32 KB apart in memory:
// one cache line per step, which the prefetchers cannot follow (about three
// times slower: docs/benchmarks.md, Kernel changes). Within a block each image's
// planes are one contiguous run, and the later passes over the block find it
// in cache. The order of the additions is the same as channel by channel.
constexpr size_t kBlockBytes = 512 * 1024;
constexpr int kMaxBlock = 256;  // channels; the per-channel sums live on the stack
// f.template operator()<A>() with the run-time activation made a compile-time one.
template <class F>
static void with_act(BnAct act, F&& f) {
  switch (act) {
    case BnAct::relu: return f.template operator()<BnAct::relu>();
    case BnAct::leaky_relu: return f.template operator()<BnAct::leaky_relu>();
    default: return f.template operator()<BnAct::none>();
  }
}

template <class T>
static int bn_block(int B, int C, int HW) {
  const size_t per_channel = (size_t)B * HW * sizeof(T);
  int cb = (int)std::max<size_t>(1, kBlockBytes / per_channel);
  const int nt = omp_get_max_threads();
  cb = std::min(cb, (C + nt - 1) / nt);  // a block for every thread
  return std::clamp(cb, 1, kMaxBlock);
}

template <BnAct A, class T>
static void forward_train(T* out, T* mean, T* var, const T* inp, const T* weight, const T* bias,
                          int B, int C, int HW, T eps, T slope) {
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
        for (int i = 0; i < HW; i++) y[i] = bn_act<A>(x[i] * k + o, slope);
      }
  }
}

template <class T>
void batchnorm2d_forward_train(T* out, T* mean, T* var, const T* inp, const T* weight,
                               const T* bias, int B, int C, int HW, T eps, BnAct act, T slope) {
  check_bn_act(act, out, (double)slope);
  with_act(act, [&]<BnAct A>() {
    forward_train<A>(out, mean, var, inp, weight, bias, B, C, HW, eps, slope);
  });
}

template <BnAct A, class T>
static void forward_eval(T* out, const T* inp, const T* weight, const T* bias,
                         const T* running_mean, const T* running_var, int B, int C, int HW, T eps,
                         T slope) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++) {
      const T scale = (T)(weight[c] / std::sqrt((double)running_var[c] + (double)eps));
      const T shift = (T)(bias[c] - running_mean[c] * scale);
      const T* x = inp + ((size_t)b * C + c) * HW;
      T* y = out + ((size_t)b * C + c) * HW;
      for (int i = 0; i < HW; i++) y[i] = bn_act<A>(x[i] * scale + shift, slope);
    }
}

template <class T>
void batchnorm2d_forward_eval(T* out, const T* inp, const T* weight, const T* bias,
                              const T* running_mean, const T* running_var, int B, int C, int HW,
                              T eps, BnAct act, T slope) {
  check_bn_act(act, out, (double)slope);
  with_act(act, [&]<BnAct A>() {
    forward_eval<A>(out, inp, weight, bias, running_mean, running_var, B, C, HW, eps, slope);
  });
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

// act'(out) * g for the backward, as bit masks rather than bn_act_grad's
// selects -- the same bits (+0 where ReLU masks), but GCC turned a select
// inside the double reductions below into a branch, and a loop with a branch
// is not vectorised: the fused backward ran 6x slower than BN and ReLU apart,
// and its reductions, left scalar, added in another order than the plain
// backward's vector lanes (LeakyReLU on aarch64, where GCC does not if-convert
// a conditional product: no masked vector multiply). LeakyReLU's product is
// therefore made whatever the sign.
template <BnAct A, class T>
static inline T act_grad(T g, T out, T slope) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const U mask = out > T(0) ? ~U(0) : U(0);
  if constexpr (A == BnAct::relu) {
    return std::bit_cast<T>(std::bit_cast<U>(g) & mask);
  } else if constexpr (A == BnAct::leaky_relu) {
    const T gs = g * slope;  // bn_act_grad's mul_rn: the kernels build with -ffp-contract=off
    return std::bit_cast<T>((std::bit_cast<U>(g) & mask) | (std::bit_cast<U>(gs) & ~mask));
  } else {
    return g;
  }
}

// dout is the gradient of the fused activation's output (of BN's own when
// A = none); act' comes from that activation's output, act_out.
template <BnAct A, class T>
static void backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     const T* mean, const T* var, int B, int C, int HW, T eps, T slope,
                     const T* act_out) {
  const double n = (double)B * HW;
  const int cb = bn_block<T>(B, C, HW), nblocks = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < nblocks; blk++) {
    const int c0 = blk * cb, c1 = std::min(C, c0 + cb);
    double sdy[kMaxBlock] = {}, sdyx[kMaxBlock] = {};  // sum dy, sum dy * xhat
    for (int b = 0; b < B; b++)
      for (int c = c0; c < c1; c++) {
        const size_t at = ((size_t)b * C + c) * HW;
        const T* x = inp + at;
        const T* g = dout + at;
        const T* o = A == BnAct::none ? nullptr : act_out + at;
        const double m = mean[c];
        const double istd = 1.0 / std::sqrt((double)var[c] + (double)eps);
        double a = sdy[c - c0], q = sdyx[c - c0];
#pragma omp simd reduction(+ : a, q)
        for (int i = 0; i < HW; i++) {
          const T dy = act_grad<A>(g[i], A == BnAct::none ? T(0) : o[i], slope);
          a += dy;
          q += dy * ((x[i] - m) * istd);
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
        const size_t at = ((size_t)b * C + c) * HW;
        const T* x = inp + at;
        const T* g = dout + at;
        const T* o = A == BnAct::none ? nullptr : act_out + at;
        T* dx = dinp + at;
        const T kc = k[c - c0], md = mdy[c - c0], mq = mdyx[c - c0], tm = mean[c], t = ti[c - c0];
        for (int i = 0; i < HW; i++) {
          const T dy = act_grad<A>(g[i], A == BnAct::none ? T(0) : o[i], slope);
          dx[i] = kc * (dy - md - (x[i] - tm) * t * mq);
        }
      }
  }
}

template <class T>
void batchnorm2d_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                          const T* weight, const T* mean, const T* var, int B, int C, int HW,
                          T eps, BnAct act, T slope, const T* act_out) {
  check_bn_act(act, act_out, (double)slope);
  with_act(act, [&]<BnAct A>() {
    backward<A>(dinp, dweight, dbias, dout, inp, weight, mean, var, B, C, HW, eps, slope, act_out);
  });
}

#define GANNF_INSTANTIATE(T)                                                                     \
  template void batchnorm2d_forward_train<T>(T*, T*, T*, const T*, const T*, const T*, int, int,  \
                                             int, T, BnAct, T);                                  \
  template void batchnorm2d_forward_eval<T>(T*, const T*, const T*, const T*, const T*, const T*, \
                                            int, int, int, T, BnAct, T);                         \
  template void batchnorm2d_update_running<T>(T*, T*, const T*, const T*, int, int64_t, T);       \
  template void batchnorm2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,       \
                                        const T*, int, int, int, T, BnAct, T, const T*);
GANNF_INSTANTIATE(float)
GANNF_INSTANTIATE(double)
#undef GANNF_INSTANTIATE

}  // namespace gannf::cpu
