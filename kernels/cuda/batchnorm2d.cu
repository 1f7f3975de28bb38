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
// flat index, in float4s where it can (so 4x4 and 32x32 maps both keep every
// thread busy, with several loads in flight per thread), and reduces
// with block_sum's fixed tree: the statistics are the same on every run. The
// block re-reads its channel for the second and third pass; at 512 KB per
// channel and at most a few hundred channels that stays in L2. Layers of few
// wide channels instead cut each channel over several blocks (bn_chunks):
// two kernels, partial sums in a scratch, added in a fixed order.
//
// A following ReLU / LeakyReLU is fused in (kernels/common/bn_act.h): the
// kernels are templates on it, so the forward's last pass writes act(bn(x))
// and the backward applies act' to dout as it reads it -- one pass over the
// tensor fewer each way than BN and the activation kernels one after the other.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "common.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

namespace {

constexpr int kBnThreads = 512;

// A channel's values are read V at a time: V = 4 (float4 loads) when a plane
// is a whole number of 16-byte vectors (HW % 4 == 0, every DCGAN map) and
// the tensors are 16-byte aligned (the arena's are), else V = 1. One block
// per channel gives a wide layer few blocks (64 channels at 32x32: half of an
// H100's SMs), so each thread needs several loads in flight to cover memory
// latency; vector loads and the unrolled loops below give it that. The sums
// are the same on every run for a given shape and alignment.
template <int V>
__device__ __forceinline__ void load_v(const float* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
  } else {
    v[0] = *p;
  }
}
template <int V>
__device__ __forceinline__ void store_v(float* p, const float (&v)[V]) {
  if constexpr (V == 4)
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  else
    *p = v[0];
}

// Vector j of a channel (B planes of hwv.d vectors, C*HW floats apart) -> its
// offset from the channel's first value.
__device__ __forceinline__ size_t channel_offset(uint32_t j, FastDiv hwv, int V, size_t cstride) {
  uint32_t i;
  const uint32_t b = hwv.divmod(j, i);
  return b * cstride + (size_t)i * V;
}

// y = act(gamma * (x - m) / sqrt(var + eps) + beta) over vectors [lo, hi) of
// a channel (x, y at its first value), the block's threads striding.
template <BnAct A, int V>
__device__ __forceinline__ void bn_normalise(float* y, const float* x, double m, double var_c,
                                             float gamma, float beta, float eps, float slope,
                                             uint32_t lo, uint32_t hi, FastDiv hwv,
                                             size_t cstride) {
  const float scale = (float)(gamma / sqrt(var_c + (double)eps));
  const float shift = (float)(beta - m * scale);
#pragma unroll 4
  for (uint32_t j = lo + threadIdx.x; j < hi; j += kBnThreads) {
    const size_t at = channel_offset(j, hwv, V, cstride);
    float v[V];
    load_v<V>(x + at, v);
    for (int k = 0; k < V; ++k) v[k] = bn_act<A>(v[k] * scale + shift, slope);
    store_v<V>(y + at, v);
  }
}

//   out = act(gamma * (x - mean) / sqrt(var + eps) + beta), mean/var over (B, HW)
//   inp, out: [B, C, HW]; mean, var: [C] (biased var); grid C, hwv = HW / V.
template <BnAct A, int V>
__global__ void __launch_bounds__(kBnThreads)
    bn_forward_train_kernel(float* out, float* mean, float* var, const float* inp,
                            const float* weight, const float* bias, int B, int C, FastDiv hwv,
                            float eps, float slope) {
  __shared__ double red[32];
  const int c = blockIdx.x;
  const uint32_t HW = hwv.d * V, nv = (uint32_t)B * hwv.d, n = nv * V;
  const size_t cstride = (size_t)C * HW;
  const float* x = inp + (size_t)c * HW;
  float* y = out + (size_t)c * HW;

  double s = 0;
#pragma unroll 4
  for (uint32_t j = threadIdx.x; j < nv; j += kBnThreads) {
    float v[V];
    load_v<V>(x + channel_offset(j, hwv, V, cstride), v);
    for (int k = 0; k < V; ++k) s += v[k];
  }
  const double m = block_sum<kBnThreads>(s, red) / (double)n;
  // Two passes (mean, then squared deviations): no cancellation when |mean| >> std.
  double ss = 0;
#pragma unroll 4
  for (uint32_t j = threadIdx.x; j < nv; j += kBnThreads) {
    float v[V];
    load_v<V>(x + channel_offset(j, hwv, V, cstride), v);
    for (int k = 0; k < V; ++k) {
      const double dx = v[k] - m;
      ss += dx * dx;
    }
  }
  const double var_c = block_sum<kBnThreads>(ss, red) / (double)n;
  if (threadIdx.x == 0) {
    mean[c] = (float)m;
    var[c] = (float)var_c;
  }
  bn_normalise<A, V>(y, x, m, var_c, weight[c], bias[c], eps, slope, 0, nv, hwv, cstride);
}

// Grid (B*C planes, chunks of a plane): every thread derives its plane's
// scale and shift itself -- two double operations, cheaper than a pass.
template <BnAct A, int V>
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
  for (int i = (blockIdx.y * 256 + threadIdx.x) * V; i < HW; i += gridDim.y * 256 * V) {
    float v[V];
    load_v<V>(x + i, v);
    for (int k = 0; k < V; ++k) v[k] = bn_act<A>(v[k] * scale + shift, slope);
    store_v<V>(y + i, v);
  }
}

__global__ void __launch_bounds__(256)
    bn_update_running_kernel(float* running_mean, float* running_var, const float* mean,
                             const float* var, int C, float momentum, float unbias) {
  const int c = blockIdx.x * 256 + threadIdx.x;
  if (c >= C) return;
  running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean[c];
  running_var[c] = (1.f - momentum) * running_var[c] + momentum * var[c] * unbias;
}

// Vector `at` of dy = act'(dout) (from the forward's output where there is an
// activation) and of x.
template <BnAct A, int V>
__device__ __forceinline__ void load_dy_x(size_t at, const float* dout, const float* act_out,
                                          const float* inp, float slope, float (&dy)[V],
                                          float (&x)[V]) {
  load_v<V>(dout + at, dy);
  if constexpr (A != BnAct::none) {
    float o[V];
    load_v<V>(act_out + at, o);
    for (int k = 0; k < V; ++k) dy[k] = bn_act_grad<A>(dy[k], o[k], slope);
  }
  load_v<V>(inp + at, x);
}

// This thread's share of sum dy and sum dy * xhat (xhat = (x - m) * istd)
// over vectors [lo, hi) of the channel at `base`.
template <BnAct A, int V>
__device__ __forceinline__ void bn_gradient_sums(double& sdy, double& sdyx, const float* dout,
                                                 const float* act_out, const float* inp,
                                                 size_t base, double m, double istd, float slope,
                                                 uint32_t lo, uint32_t hi, FastDiv hwv,
                                                 size_t cstride) {
#pragma unroll 2
  for (uint32_t j = lo + threadIdx.x; j < hi; j += kBnThreads) {
    float dy[V], x[V];
    load_dy_x<A, V>(base + channel_offset(j, hwv, V, cstride), dout, act_out, inp, slope, dy, x);
    for (int k = 0; k < V; ++k) {
      sdy += dy[k];
      sdyx += dy[k] * ((x[k] - m) * istd);
    }
  }
}

// dinp = gamma * istd * (dy - mean(dy) - xhat * mean(dy * xhat)) over vectors
// [lo, hi) of the channel at `base`, from its sums (sdy, sdyx over n values).
// Each thread reads dout[at] before it writes dinp[at], so dinp may alias dout.
template <BnAct A, int V>
__device__ __forceinline__ void bn_input_gradient(float* dinp, const float* dout,
                                                  const float* act_out, const float* inp,
                                                  size_t base, float gamma, float mean, double istd,
                                                  double sdy, double sdyx, double n, float slope,
                                                  uint32_t lo, uint32_t hi, FastDiv hwv,
                                                  size_t cstride) {
  const float k_ = (float)(gamma * istd);
  const float mdy = (float)(sdy / n), mdyx = (float)(sdyx / n);
  const float tm = mean, ti = (float)istd;
#pragma unroll 2
  for (uint32_t j = lo + threadIdx.x; j < hi; j += kBnThreads) {
    const size_t at = base + channel_offset(j, hwv, V, cstride);
    float dy[V], x[V];
    load_dy_x<A, V>(at, dout, act_out, inp, slope, dy, x);
    for (int k = 0; k < V; ++k) dy[k] = k_ * (dy[k] - mdy - (x[k] - tm) * ti * mdyx);
    store_v<V>(dinp + at, dy);
  }
}

//   xhat = (x - mean) * istd, dy = act'(dout), dbias += sum dy, dweight += sum dy * xhat,
//   dinp = gamma * istd * (dy - mean(dy) - xhat * mean(dy * xhat))
// Shapes as the forward; act_out = the forward's output (read only for an
// activation); dinp may alias dout. Grid C, hwv = HW / V.
template <BnAct A, int V>
__global__ void __launch_bounds__(kBnThreads)
    bn_backward_kernel(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, const float* mean, const float* var,
                       int B, int C, FastDiv hwv, float eps, float slope, const float* act_out) {
  __shared__ double red[32];
  const int c = blockIdx.x;
  const uint32_t HW = hwv.d * V, nv = (uint32_t)B * hwv.d, n = nv * V;
  const size_t cstride = (size_t)C * HW;
  const size_t base = (size_t)c * HW;
  const double m = mean[c];
  const double istd = 1.0 / sqrt((double)var[c] + (double)eps);
  double sdy = 0, sdyx = 0;  // sum dy, sum dy * xhat
  bn_gradient_sums<A, V>(sdy, sdyx, dout, act_out, inp, base, m, istd, slope, 0, nv, hwv, cstride);
  sdy = block_sum<kBnThreads>(sdy, red);
  sdyx = block_sum<kBnThreads>(sdyx, red);
  if (threadIdx.x == 0) {
    if (dbias) dbias[c] += (float)sdy;
    if (dweight) dweight[c] += (float)sdyx;
  }
  bn_input_gradient<A, V>(dinp, dout, act_out, inp, base, weight[c], mean[c], istd, sdy, sdyx,
                          (double)n, slope, 0, nv, hwv, cstride);
}

// ---- a channel over several blocks ---------------------------------------------
// For layers of few wide channels (64 channels of 128 x 32 x 32: one block
// each would leave half of an H100 idle), each channel's walk is cut into
// `chunks` fixed pieces, one block each (grid (chunks, C)). A first kernel
// writes each piece's sums in double to the scratch, (C, chunks, 3); a second
// adds a channel's pieces in chunk order and normalises its own piece. The
// chunking depends only on the shape: the same results on every run and GPU.
// The forward's sums are of x - x0, x0 the channel's first value (stored in
// the scratch, as the output may overwrite it): var = E[(x-x0)^2] - E[x-x0]^2
// in double then cancels only as much as x0 is off the mean in units of std.
constexpr int kBnTargetBlocks = 512;   // ~4 per SM of the largest GPUs
constexpr int kBnMaxChunks = 32;
constexpr uint64_t kBnMinChunk = 8192; // values: 4 float4s per thread of a block

int bn_chunks(int B, int C, int HW) {
  const uint64_t n = (uint64_t)B * HW;
  int k = std::min((kBnTargetBlocks + C - 1) / C, kBnMaxChunks);
  k = (int)std::min<uint64_t>((uint64_t)k, std::max<uint64_t>(1, n / kBnMinChunk));
  return (size_t)3 * C * k <= kBnScratchDoubles ? k : 1;
}

// Vectors [lo, hi) of nv: chunk blockIdx.x of gridDim.x.
__device__ __forceinline__ void chunk_range(uint32_t nv, uint32_t& lo, uint32_t& hi) {
  const uint32_t per = (nv + gridDim.x - 1) / gridDim.x;
  lo = min(nv, blockIdx.x * per);
  hi = min(nv, lo + per);
}

//   part[c][chunk] = {sum (x - x0), sum (x - x0)^2, x0}
template <int V>
__global__ void __launch_bounds__(kBnThreads)
    bn_stats_partial_kernel(double* part, const float* inp, int C, FastDiv hwv, uint32_t nv) {
  __shared__ double red[32];
  const int c = blockIdx.y;
  const size_t HW = (size_t)hwv.d * V, cstride = (size_t)C * HW;
  const float* x = inp + (size_t)c * HW;
  const double x0 = x[0];
  uint32_t lo, hi;
  chunk_range(nv, lo, hi);
  double s = 0, ss = 0;
#pragma unroll 4
  for (uint32_t j = lo + threadIdx.x; j < hi; j += kBnThreads) {
    float v[V];
    load_v<V>(x + channel_offset(j, hwv, V, cstride), v);
    for (int k = 0; k < V; ++k) {
      const double d = v[k] - x0;
      s += d;
      ss += d * d;
    }
  }
  s = block_sum<kBnThreads>(s, red);
  ss = block_sum<kBnThreads>(ss, red);
  if (threadIdx.x == 0) {
    double* p = part + ((size_t)c * gridDim.x + blockIdx.x) * 3;
    p[0] = s, p[1] = ss, p[2] = x0;
  }
}

// The statistics from the parts (every block of the channel alike), then
// this block's piece normalised: bn_forward_train_kernel's last pass.
template <BnAct A, int V>
__global__ void __launch_bounds__(kBnThreads)
    bn_forward_finish_kernel(float* out, float* mean, float* var, const float* inp,
                             const double* part, const float* weight, const float* bias, int C,
                             FastDiv hwv, uint32_t nv, float eps, float slope) {
  const int c = blockIdx.y;
  const size_t HW = (size_t)hwv.d * V, cstride = (size_t)C * HW;
  const double* p = part + (size_t)c * gridDim.x * 3;
  double s = 0, ss = 0;
  for (uint32_t k = 0; k < gridDim.x; k++) s += p[3 * k], ss += p[3 * k + 1];
  const double n = (double)nv * V, d = s / n;
  const double m = p[2] + d;
  const double var_c = fmax(ss / n - d * d, 0.0);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    mean[c] = (float)m;
    var[c] = (float)var_c;
  }
  uint32_t lo, hi;
  chunk_range(nv, lo, hi);
  bn_normalise<A, V>(out + (size_t)c * HW, inp + (size_t)c * HW, m, var_c, weight[c], bias[c], eps,
                     slope, lo, hi, hwv, cstride);
}

//   part[c][chunk] = {sum dy, sum dy * xhat} over the piece (bn_backward_kernel's first pass)
template <BnAct A, int V>
__global__ void __launch_bounds__(kBnThreads)
    bn_backward_partial_kernel(double* part, const float* dout, const float* inp, const float* mean,
                               const float* var, int C, FastDiv hwv, uint32_t nv, float eps,
                               float slope, const float* act_out) {
  __shared__ double red[32];
  const int c = blockIdx.y;
  const size_t HW = (size_t)hwv.d * V, cstride = (size_t)C * HW, base = (size_t)c * HW;
  const double m = mean[c];
  const double istd = 1.0 / sqrt((double)var[c] + (double)eps);
  uint32_t lo, hi;
  chunk_range(nv, lo, hi);
  double sdy = 0, sdyx = 0;
  bn_gradient_sums<A, V>(sdy, sdyx, dout, act_out, inp, base, m, istd, slope, lo, hi, hwv, cstride);
  sdy = block_sum<kBnThreads>(sdy, red);
  sdyx = block_sum<kBnThreads>(sdyx, red);
  if (threadIdx.x == 0) {
    double* p = part + ((size_t)c * gridDim.x + blockIdx.x) * 2;
    p[0] = sdy, p[1] = sdyx;
  }
}

// The channel's sums from the parts, then this block's piece of dinp
// (bn_backward_kernel's second pass); dinp may alias dout (each thread reads
// an element before it writes it, and the first kernel has read them all).
template <BnAct A, int V>
__global__ void __launch_bounds__(kBnThreads)
    bn_backward_finish_kernel(float* dinp, float* dweight, float* dbias, const double* part,
                              const float* dout, const float* inp, const float* weight,
                              const float* mean, const float* var, int C, FastDiv hwv, uint32_t nv,
                              float eps, float slope, const float* act_out) {
  const int c = blockIdx.y;
  const size_t HW = (size_t)hwv.d * V, cstride = (size_t)C * HW, base = (size_t)c * HW;
  const double* p = part + (size_t)c * gridDim.x * 2;
  double sdy = 0, sdyx = 0;
  for (uint32_t k = 0; k < gridDim.x; k++) sdy += p[2 * k], sdyx += p[2 * k + 1];
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (dbias) dbias[c] += (float)sdy;
    if (dweight) dweight[c] += (float)sdyx;
  }
  const double istd = 1.0 / sqrt((double)var[c] + (double)eps);
  uint32_t lo, hi;
  chunk_range(nv, lo, hi);
  bn_input_gradient<A, V>(dinp, dout, act_out, inp, base, weight[c], mean[c], istd, sdy, sdyx,
                          (double)nv * V, slope, lo, hi, hwv, cstride);
}

void check_bn(int B, int C, int HW) {
  if (B <= 0 || C <= 0 || HW <= 0 || (uint64_t)B * HW >= ((uint64_t)1 << 32))
    throw std::invalid_argument("batchnorm2d: bad dimensions (B=" + std::to_string(B) +
                                " C=" + std::to_string(C) + " HW=" + std::to_string(HW) + ")");
}

// The instance of kernel template K for a run-time activation and vector width.
#define GANNF_FOR_ACT(K, act, V)                      \
  ((act) == BnAct::relu         ? K<BnAct::relu, V>       \
   : (act) == BnAct::leaky_relu ? K<BnAct::leaky_relu, V> \
                                : K<BnAct::none, V>)

// The vector width of a channel walk: 4 when planes are whole float4s and
// every tensor it touches (null ones aside) is 16-byte aligned.
int bn_vector_width(int HW, std::initializer_list<const void*> tensors) {
  if (HW % 4 != 0) return 1;
  for (const void* p : tensors)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 1;
  return 4;
}

}  // namespace

void batchnorm2d_forward_train(float* out, float* mean, float* var, const float* inp,
                               const float* weight, const float* bias, int B, int C, int HW,
                               float eps, BnAct act, float slope, cudaStream_t stream,
                               double* scratch) {
  check_bn(B, C, HW);
  check_bn_act(act, out, slope);
  const int V = bn_vector_width(HW, {out, inp});
  const int chunks = scratch ? bn_chunks(B, C, HW) : 1;
  if (chunks > 1) {
    const uint32_t nv = (uint32_t)B * (HW / V);
    const dim3 grid((unsigned)chunks, (unsigned)C);
    launch("batchnorm2d_forward_train (partial sums)",
           V == 4 ? bn_stats_partial_kernel<4> : bn_stats_partial_kernel<1>, grid,
           dim3(kBnThreads), stream, scratch, inp, C, FastDiv(HW / V), nv);
    launch("batchnorm2d_forward_train",
           V == 4 ? GANNF_FOR_ACT(bn_forward_finish_kernel, act, 4)
                  : GANNF_FOR_ACT(bn_forward_finish_kernel, act, 1),
           grid, dim3(kBnThreads), stream, out, mean, var, inp, (const double*)scratch, weight,
           bias, C, FastDiv(HW / V), nv, eps, slope);
    return;
  }
  launch("batchnorm2d_forward_train",
         V == 4 ? GANNF_FOR_ACT(bn_forward_train_kernel, act, 4)
                : GANNF_FOR_ACT(bn_forward_train_kernel, act, 1),
         dim3(C), dim3(kBnThreads), stream, out, mean, var, inp, weight, bias, B, C,
         FastDiv(HW / V), eps, slope);
}

void batchnorm2d_forward_eval(float* out, const float* inp, const float* weight, const float* bias,
                              const float* running_mean, const float* running_var, int B, int C,
                              int HW, float eps, BnAct act, float slope, cudaStream_t stream) {
  check_bn(B, C, HW);
  check_bn_act(act, out, slope);
  const int V = bn_vector_width(HW, {out, inp});
  const unsigned chunks = (unsigned)std::min<size_t>((HW / V + 1023) / 1024, 64);
  launch("batchnorm2d_forward_eval",
         V == 4 ? GANNF_FOR_ACT(bn_forward_eval_kernel, act, 4)
                : GANNF_FOR_ACT(bn_forward_eval_kernel, act, 1),
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
                          float slope, const float* act_out, cudaStream_t stream,
                          double* scratch) {
  check_bn(B, C, HW);
  check_bn_act(act, act_out, slope);
  const int V = bn_vector_width(HW, {dinp, dout, inp, act_out});
  const int chunks = scratch ? bn_chunks(B, C, HW) : 1;
  if (chunks > 1) {
    const uint32_t nv = (uint32_t)B * (HW / V);
    const dim3 grid((unsigned)chunks, (unsigned)C);
    launch("batchnorm2d_backward (partial sums)",
           V == 4 ? GANNF_FOR_ACT(bn_backward_partial_kernel, act, 4)
                  : GANNF_FOR_ACT(bn_backward_partial_kernel, act, 1),
           grid, dim3(kBnThreads), stream, scratch, dout, inp, mean, var, C, FastDiv(HW / V), nv,
           eps, slope, act_out);
    launch("batchnorm2d_backward",
           V == 4 ? GANNF_FOR_ACT(bn_backward_finish_kernel, act, 4)
                  : GANNF_FOR_ACT(bn_backward_finish_kernel, act, 1),
           grid, dim3(kBnThreads), stream, dinp, dweight, dbias, (const double*)scratch, dout, inp,
           weight, mean, var, C, FastDiv(HW / V), nv, eps, slope, act_out);
    return;
  }
  launch("batchnorm2d_backward",
         V == 4 ? GANNF_FOR_ACT(bn_backward_kernel, act, 4) : GANNF_FOR_ACT(bn_backward_kernel, act, 1),
         dim3(C), dim3(kBnThreads), stream, dinp, dweight, dbias, dout, inp, weight, mean, var, B, C,
         FastDiv(HW / V), eps, slope, act_out);
}

#undef GANNF_FOR_ACT

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
