// batchnorm2d: training forward (batch statistics), eval forward (running
// statistics), the running-statistics update, and the backward.
//
// As in kernels/cpu/batchnorm2d.cpp, per-channel sums are accumulated in
// double: a channel of the first G layer at batch 128 sums 128*32*32 = 131072
// values, where float accumulation would lose about 4 digits of the mean. The
// double adds are a few per element, negligible beside the memory traffic
// even at consumer GPUs' 1/64-rate FP64.
//
// One block per channel walks the channel's B segments of HW values as one
// flat index (so 4x4 and 32x32 maps both keep every thread busy) and reduces
// with block_sum's fixed tree: the statistics are the same on every run. The
// block re-reads its channel for the second and third pass; at 512 KB per
// channel and at most a few hundred channels that stays in L2.
//
// A following ReLU / LeakyReLU is fused in (kernels/common/bn_act.h): the
// kernels are templates on it, so the forward's last pass writes act(bn(x))
// and the backward applies act' to dout as it reads it -- one pass over the
// tensor fewer each way than BN and the activation kernels one after the other.
#include <cmath>

#include "common.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

namespace {

constexpr int kBnThreads = 512;

template <BnAct A>
__global__ void __launch_bounds__(kBnThreads)
    bn_forward_train_kernel(float* out, float* mean, float* var, const float* inp,
                            const float* weight, const float* bias, int B, int C, FastDiv hw,
                            float eps, float slope) {
  __shared__ double red[32];
  const int c = blockIdx.x;
  const uint32_t HW = hw.d, n = (uint32_t)B * HW;
  const size_t cstride = (size_t)C * HW;
  const float* x = inp + (size_t)c * HW;
  float* y = out + (size_t)c * HW;

  double s = 0;
  for (uint32_t j = threadIdx.x; j < n; j += kBnThreads) {
    uint32_t i;
    const uint32_t b = hw.divmod(j, i);
    s += x[b * cstride + i];
  }
  const double m = block_sum<kBnThreads>(s, red) / (double)n;
  // Two passes (mean, then squared deviations): no cancellation when |mean| >> std.
  double ss = 0;
  for (uint32_t j = threadIdx.x; j < n; j += kBnThreads) {
    uint32_t i;
    const uint32_t b = hw.divmod(j, i);
    const double dx = x[b * cstride + i] - m;
    ss += dx * dx;
  }
  const double v = block_sum<kBnThreads>(ss, red) / (double)n;
  if (threadIdx.x == 0) {
    mean[c] = (float)m;
    var[c] = (float)v;
  }
  const float scale = (float)(weight[c] / sqrt(v + (double)eps));
  const float shift = (float)(bias[c] - m * scale);
  for (uint32_t j = threadIdx.x; j < n; j += kBnThreads) {
    uint32_t i;
    const uint32_t b = hw.divmod(j, i);
    y[b * cstride + i] = bn_act<A>(x[b * cstride + i] * scale + shift, slope);
  }
}

// Grid (B*C planes, chunks of a plane): every thread derives its plane's
// scale and shift itself -- two double operations, cheaper than a pass.
template <BnAct A>
__global__ void __launch_bounds__(256)
    bn_forward_eval_kernel(float* out, const float* inp, const float* weight, const float* bias,
                           const float* running_mean, const float* running_var, int C, int HW,
                           float eps, float slope) {
  const size_t plane = blockIdx.x;
  const int c = (int)(plane % C);
  const float scale = (float)(weight[c] / sqrt((double)running_var[c] + (double)eps));
  const float shift = (float)(bias[c] - running_mean[c] * scale);
  const float* x = inp + plane * HW;
  float* y = out + plane * HW;
  for (int i = blockIdx.y * 256 + threadIdx.x; i < HW; i += gridDim.y * 256)
    y[i] = bn_act<A>(x[i] * scale + shift, slope);
}

__global__ void __launch_bounds__(256)
    bn_update_running_kernel(float* running_mean, float* running_var, const float* mean,
                             const float* var, int C, float momentum, float unbias) {
  const int c = blockIdx.x * 256 + threadIdx.x;
  if (c >= C) return;
  running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean[c];
  running_var[c] = (1.f - momentum) * running_var[c] + momentum * var[c] * unbias;
}

template <BnAct A>
__global__ void __launch_bounds__(kBnThreads)
    bn_backward_kernel(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, const float* mean, const float* var,
                       int B, int C, FastDiv hw, float eps, float slope, const float* act_out) {
  __shared__ double red[32];
  const int c = blockIdx.x;
  const uint32_t HW = hw.d, n = (uint32_t)B * HW;
  const size_t cstride = (size_t)C * HW;
  const size_t base = (size_t)c * HW;
  const double m = mean[c];
  const double istd = 1.0 / sqrt((double)var[c] + (double)eps);

  double sdy = 0, sdyx = 0;  // sum dy, sum dy * xhat
  for (uint32_t j = threadIdx.x; j < n; j += kBnThreads) {
    uint32_t i;
    const uint32_t b = hw.divmod(j, i);
    const size_t at = base + b * cstride + i;
    const double dy = bn_act_grad<A>(dout[at], A == BnAct::none ? 0.f : act_out[at], slope);
    sdy += dy;
    sdyx += dy * ((inp[at] - m) * istd);
  }
  sdy = block_sum<kBnThreads>(sdy, red);
  sdyx = block_sum<kBnThreads>(sdyx, red);
  if (threadIdx.x == 0) {
    if (dbias) dbias[c] += (float)sdy;
    if (dweight) dweight[c] += (float)sdyx;
  }
  // dx = gamma * istd * (dy - mean(dy) - xhat * mean(dy * xhat)); each thread
  // reads dout[at] before it writes dinp[at], so dinp may alias dout.
  const float k = (float)(weight[c] * istd);
  const float mdy = (float)(sdy / n), mdyx = (float)(sdyx / n);
  const float tm = (float)m, ti = (float)istd;
  for (uint32_t j = threadIdx.x; j < n; j += kBnThreads) {
    uint32_t i;
    const uint32_t b = hw.divmod(j, i);
    const size_t at = base + b * cstride + i;
    const float dy = bn_act_grad<A>(dout[at], A == BnAct::none ? 0.f : act_out[at], slope);
    dinp[at] = k * (dy - mdy - (inp[at] - tm) * ti * mdyx);
  }
}

void check_bn(int B, int C, int HW) {
  if (B <= 0 || C <= 0 || HW <= 0 || (uint64_t)B * HW >= ((uint64_t)1 << 32))
    throw std::invalid_argument("batchnorm2d: bad dimensions (B=" + std::to_string(B) +
                                " C=" + std::to_string(C) + " HW=" + std::to_string(HW) + ")");
}

// The instance of kernel template K for a run-time activation.
#define GANNF_FOR_ACT(K, act)                      \
  ((act) == BnAct::relu         ? K<BnAct::relu>       \
   : (act) == BnAct::leaky_relu ? K<BnAct::leaky_relu> \
                                : K<BnAct::none>)

}  // namespace

void batchnorm2d_forward_train(float* out, float* mean, float* var, const float* inp,
                               const float* weight, const float* bias, int B, int C, int HW,
                               float eps, BnAct act, float slope, cudaStream_t stream) {
  check_bn(B, C, HW);
  check_bn_act(act, out, slope);
  launch("batchnorm2d_forward_train", GANNF_FOR_ACT(bn_forward_train_kernel, act), dim3(C),
         dim3(kBnThreads), stream, out, mean, var, inp, weight, bias, B, C, FastDiv(HW), eps,
         slope);
}

void batchnorm2d_forward_eval(float* out, const float* inp, const float* weight, const float* bias,
                              const float* running_mean, const float* running_var, int B, int C,
                              int HW, float eps, BnAct act, float slope, cudaStream_t stream) {
  check_bn(B, C, HW);
  check_bn_act(act, out, slope);
  const unsigned chunks = (unsigned)std::min<size_t>((HW + 1023) / 1024, 64);
  launch("batchnorm2d_forward_eval", GANNF_FOR_ACT(bn_forward_eval_kernel, act),
         dim3((unsigned)B * C, chunks), dim3(256), stream, out, inp, weight, bias, running_mean,
         running_var, C, HW, eps, slope);
}

void batchnorm2d_update_running(float* running_mean, float* running_var, const float* mean,
                                const float* var, int C, int64_t n, float momentum,
                                cudaStream_t stream) {
  // n == 1 has no unbiased variance; PyTorch refuses such a batch in training
  // mode, and so do the layers above this kernel.
  const float unbias = n > 1 ? (float)((double)n / (double)(n - 1)) : 1.f;
  launch("batchnorm2d_update_running", bn_update_running_kernel, dim3((C + 255) / 256), dim3(256),
         stream, running_mean, running_var, mean, var, C, momentum, unbias);
}

void batchnorm2d_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const float* weight, const float* mean,
                          const float* var, int B, int C, int HW, float eps, BnAct act,
                          float slope, const float* act_out, cudaStream_t stream) {
  check_bn(B, C, HW);
  check_bn_act(act, act_out, slope);
  launch("batchnorm2d_backward", GANNF_FOR_ACT(bn_backward_kernel, act), dim3(C),
         dim3(kBnThreads), stream, dinp, dweight, dbias, dout, inp, weight, mean, var, B, C,
         FastDiv(HW), eps, slope, act_out);
}

#undef GANNF_FOR_ACT

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
