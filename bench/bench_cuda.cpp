// The CUDA kernels against cuDNN, layer by layer, and the full training step
// on the GPU. cuDNN appears only here, as the yardstick; the training path
// never uses it.
//
// Per-op cases: every conv / conv-transpose layer of the reference 64x64
// DCGAN (f = 64, batch 128 unless flags say otherwise), each in three passes:
// forward, backward-data and backward-weight (accumulating, as training does).
// cuDNN runs the same shapes in FP32 with CUDNN_FMA_MATH -- no TF32 tensor
// cores, the precision of our default kernels -- through the fastest algorithm
// that cudnnFind*AlgorithmEx measures (given up to 1 GiB of workspace). With
// --tf32=1 (the default) every case runs a second time at TF32: our
// tensor-core kernels (ConvMath::tf32) against cuDNN with
// CUDNN_TENSOR_OP_MATH (TF32 for FP32 data, PyTorch's default), fastest
// algorithm of either math. FP32 cases also run our kernels with the large
// tile compiled for 1 block per SM (cuda::set_gemm_blocks_per_sm; "1/SM"
// column, and a step "fp32_1sm"), after checking it gives the same bits --
// the product's default is 2 blocks per SM (1-6% faster on an H100's step). TF32
// cases run, in that column, the WMMA kernel the staged ones replace
// (cuda::set_tf32_staging(0)), and the step a second time on it ("tf32_wmma"):
// the before and after of the staged kernels in the same run. For a
// transposed convolution the cuDNN calls are the conv ones with roles swapped:
// forward = BackwardData, backward-data = Forward, backward-weight =
// BackwardFilter with input and output gradient exchanged.
//
// Timing: CUDA events around each repetition, after a warm-up; before every
// repetition (outside the timed region) a buffer of twice the L2 size is
// rewritten so that no operand starts in cache. The median of the
// repetitions is reported, with GFLOP/s (2 per multiply-add).
// Correctness first: before timing, each of our outputs is compared with
// cuDNN's on random data; a relative L2 difference above 1e-4 is a MISMATCH
// line and exit status 1 -- the timings still run, marked as those of a
// wrong kernel, since a GPU session is too scarce to come back with nothing.
// At TF32 the two implementations round differently, so the bound is 5e-3.
//
// Full step: GanStep::accumulate over one batch (G forward; D on real,
// backward; D on the fakes, backward for D and for G) and Adam on both nets,
// on the CUDA back end -- what gannf-train does per iteration minus data
// loading. Its gradients are first checked against the CPU back end in
// double precision at batch 4. The TF32 step (cuda-tf32) is timed too; its
// gate is its distance from the FP32 step's gradients (a sanity bound:
// test_cuda is where TF32 is checked). bench/peer/torch_step.py --device cuda
// times the same step in PyTorch; tools/device-check.sh puts them side by side.
//
// --breakdown=1 (the default) then runs a few steps with every op timed alone
// (bench/op_timer.h: a wait before and after each) and prints where the
// step's time goes, for each math.
//
// --bf16=1 (the default; with --ops=1) then, last of all since it has not run
// on a GPU yet, times every case at BF16: gannf's ConvMath::bf16 on FP32
// tensors, as the cuda-bf16 back end calls it (its staging and rounding to
// BF16 are in its time), against cuDNN on BF16 tensors (CUDNN_DATA_BFLOAT16,
// NCHW; FP32 compute type, CUDNN_TENSOR_OP_MATH). Two cuDNN columns: "cuDNN"
// reads BF16 copies of the inputs made once at set-up (rounded on the host to
// nearest, ties to even, as gannf rounds); "+cast" casts the pass's two FP32
// inputs with cuda::to_bf16 before every call, as PyTorch's autocast casts
// (which, though, caches the weight's cast inside an autocast region, and may
// get an activation in BF16 already). cuDNN's outputs are BF16; its weight
// gradient is written (beta = 0); each algorithm runs in the math type
// cudnnFind measured it in. Each case first compares gannf's output
// with cuDNN's (relative L2; BF16 output rounding alone gives ~1e-3): above
// 5e-2 is a WARNING, never a MISMATCH. A pass cuDNN cannot run at BF16 is one
// "# bf16 per-op:" line and skipped, a failure of the table one "# bf16
// per-op table failed:" line; neither changes the exit status, and what was
// printed before is flushed first. A fixed 30 repetitions each (median), L2
// flushed as above.
//
//   bench_cuda [--batch=128] [--f=64] [--ops=1] [--step=1] [--check=1] [--tf32=1]
//              [--breakdown=1] [--layer=-1] [--bf16=1] [Google Benchmark flags]
// --layer=N keeps only the N-th conv layer (G.0, G.3, G.6, G.9, G.12, D.0, D.2,
// D.5, D.8, D.11: 0-9), e.g. for a profiler run of its kernels.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dcgan.h"
#include "step_trainer.h"
#include "ops.cuh"
#include "rng.h"
#include "tf32_reference.h"  // bf16_bits, bf16_value: the host twins of the kernels' rounding

using namespace gannf;

namespace {

#define CUDNN_CHECK(call)                                                                   \
  do {                                                                                      \
    const cudnnStatus_t s_ = (call);                                                        \
    if (s_ != CUDNN_STATUS_SUCCESS)                                                         \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) +     \
                               ": " #call " failed: " + cudnnGetErrorString(s_));           \
  } while (0)

// ---- flags ---------------------------------------------------------------------
// Ours are --name=value; they are taken out of argv before Google Benchmark
// sees it.
std::map<std::string, int> take_flags(int& argc, char** argv, std::map<std::string, int> v) {
  int out = 1;
  for (int i = 1; i < argc; i++) {
    bool mine = false;
    for (auto& [k, val] : v) {
      const std::string pre = "--" + k + "=";
      if (std::strncmp(argv[i], pre.c_str(), pre.size()) == 0) {
        val = std::atoi(argv[i] + pre.size());
        mine = true;
      }
    }
    if (!mine) argv[out++] = argv[i];
  }
  argc = out;
  return v;
}

// ---- device memory -------------------------------------------------------------
struct DevBuf {
  float* p = nullptr;
  size_t n = 0;
  DevBuf() = default;
  explicit DevBuf(size_t count) : n(count) {
    GANNF_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(float)), "bench buffer");
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(n, o.n);
    return *this;
  }
  void fill(Rng& r) {
    std::vector<float> h(n);
    for (auto& x : h) x = (float)(2 * r.uniform() - 1);
    GANNF_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice), "fill");
    settle();
  }
  std::vector<float> get() const {
    std::vector<float> h(n);
    GANNF_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), "get");
    return h;
  }
  void zero() {
    GANNF_CUDA_CHECK(cudaMemset(p, 0, n * sizeof(float)), "zero");
    settle();
  }
  // These run on the legacy default stream, which the benchmarks' non-blocking
  // stream does not wait for, and may return before the device is done (a
  // memset of device memory, a copy from pageable memory): wait, so that the
  // next kernel on the bench stream sees the data.
  static void settle() { GANNF_CUDA_CHECK(cudaDeviceSynchronize(), "bench buffer set-up"); }
};

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); i++) {
    const double d = (double)a[i] - ref[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// ---- timing ----------------------------------------------------------------------
struct Timer {
  cudaStream_t stream;
  cudaEvent_t t0, t1;
  DevBuf flush;
  // flush_bytes: what is rewritten before each repetition (twice the L2 or more).
  explicit Timer(cudaStream_t s, size_t flush_bytes) : stream(s), flush(flush_bytes / sizeof(float)) {
    GANNF_CUDA_CHECK(cudaEventCreate(&t0), "event");
    GANNF_CUDA_CHECK(cudaEventCreate(&t1), "event");
  }
  ~Timer() {
    cudaEventDestroy(t0);
    cudaEventDestroy(t1);
  }
  // Milliseconds of fn() on the stream, with L2 flushed before it.
  double time(const std::function<void()>& fn, int rep) {
    GANNF_CUDA_CHECK(cudaMemsetAsync(flush.p, rep & 0xff, flush.n * sizeof(float), stream), "flush");
    GANNF_CUDA_CHECK(cudaEventRecord(t0, stream), "event");
    fn();
    GANNF_CUDA_CHECK(cudaEventRecord(t1, stream), "event");
    GANNF_CUDA_CHECK(cudaEventSynchronize(t1), "a timed kernel failed");
    float ms = 0;
    GANNF_CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1), "event");
    return ms;
  }
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Result {
  double ms = 0, gflops = 0;
  std::string algo;
};
std::map<std::string, Result> g_results;  // by benchmark name

// ---- one layer, three passes, two implementations --------------------------------

enum class Pass { Fwd, BwdData, BwdWeight };
const char* pass_name(Pass p) {
  return p == Pass::Fwd ? "fwd" : p == Pass::BwdData ? "bwd_data" : "bwd_weight";
}

struct Layer {
  std::string name;  // e.g. D.2 conv 64->128 32x32
  bool transposed;
  ConvDims d;
};

// cuDNN's view of a layer: a convolution x (N, Cx, Hx, Wx) -> y (N, Cy, Hy, Wy)
// with filter (Cy, Cx, K, K). For conv2d x is the input; for conv_transpose2d
// x is the OUTPUT (the transposed conv is this conv's backward-data).
// data: the tensors' type (FP32, or BF16 for the BF16 table); the convolution
// computes in FP32 either way.
struct CudnnConv {
  cudnnHandle_t h;
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  CudnnConv(cudnnHandle_t handle, const Layer& l, bool tf32, cudnnDataType_t data = CUDNN_DATA_FLOAT)
      : h(handle) {
    const ConvDims& d = l.d;
    const int N = d.B;
    int Cx = d.C_in, Hx = d.H_in, Wx = d.W_in, Cy = d.C_out, Hy = d.H_out, Wy = d.W_out;
    if (l.transposed) std::swap(Cx, Cy), std::swap(Hx, Hy), std::swap(Wx, Wy);
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&xd));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&yd));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&wd));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&cd));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, data, N, Cx, Hx, Wx));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, data, N, Cy, Hy, Wy));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(wd, data, CUDNN_TENSOR_NCHW, Cy, Cx, d.K, d.K));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(cd, d.pad, d.pad, d.stride, d.stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    // FP32 without TF32, or tensor cores allowed (TF32 for FP32 data; BF16 data
    // runs on them anyway).
    CUDNN_CHECK(cudnnSetConvolutionMathType(cd, tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  }
  ~CudnnConv() {
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyFilterDescriptor(wd);
    cudnnDestroyConvolutionDescriptor(cd);
  }
};

// The fastest that succeeded (results come sorted by time); at FP32 only
// FMA-math algorithms count.
template <class Perf>
const Perf* pick(const Perf* perf, int n, bool tf32) {
  for (int i = 0; i < n; i++)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && (tf32 || perf[i].mathType == CUDNN_FMA_MATH))
      return &perf[i];
  return nullptr;
}

// gannf's convolution of layer l, pass p, in `math`: x, w, dy in; y, dx or dw
// out (dw accumulates, as in training).
void gannf_conv(const Layer& l, Pass p, cuda::ConvMath m, float* y, float* dx, float* dw,
                const float* x, const float* w, const float* dy, float* ws, size_t ws_n,
                cudaStream_t stream) {
  const ConvDims& cd = l.d;
  if (!l.transposed) {
    if (p == Pass::Fwd) cuda::conv2d_forward(y, x, w, cd, ws, ws_n, stream, m);
    if (p == Pass::BwdData) cuda::conv2d_backward(dx, nullptr, dy, x, w, cd, ws, ws_n, stream, m);
    if (p == Pass::BwdWeight) cuda::conv2d_backward(nullptr, dw, dy, x, w, cd, ws, ws_n, stream, m);
  } else {
    if (p == Pass::Fwd) cuda::conv_transpose2d_forward(y, x, w, cd, ws, ws_n, stream, m);
    if (p == Pass::BwdData)
      cuda::conv_transpose2d_backward(dx, nullptr, dy, x, w, cd, ws, ws_n, stream, m);
    if (p == Pass::BwdWeight)
      cuda::conv_transpose2d_backward(nullptr, dw, dy, x, w, cd, ws, ws_n, stream, m);
  }
}
double layer_flops(const Layer& l) {
  return l.transposed ? conv_transpose2d_flops(l.d) : conv2d_flops(l.d);
}

struct LayerBench {
  Layer l;
  bool tf32;
  cudaStream_t stream;
  cudnnHandle_t handle;
  std::unique_ptr<CudnnConv> cc;
  DevBuf x, w, y, dy, dx, dw, ws;  // x/y: the layer's input/output, as our kernels see it
  DevBuf& cws;                     // cuDNN's workspace, shared by all layers
  size_t ws_n = 0;
  cudnnConvolutionFwdAlgo_t fwd_algo{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo{};
  size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
  std::string algo_name[3];

  LayerBench(const Layer& layer, bool tf32_math, cudaStream_t s, cudnnHandle_t h,
             DevBuf& cudnn_ws, Rng& r)
      : l(layer), tf32(tf32_math), stream(s), handle(h),
        cc(std::make_unique<CudnnConv>(h, layer, tf32_math)),
        x((size_t)l.d.B * l.d.C_in * l.d.H_in * l.d.W_in),
        w((size_t)l.d.C_in * l.d.C_out * l.d.K * l.d.K),
        y((size_t)l.d.B * l.d.C_out * l.d.H_out * l.d.W_out), dy(y.n), dx(x.n), dw(w.n),
        cws(cudnn_ws) {
    const ConvDims& cd = dims();
    const cuda::ConvMath math = tf32 ? cuda::ConvMath::tf32 : cuda::ConvMath::fp32;
    ws_n = l.transposed ? cuda::conv_transpose2d_workspace_size(cd, math)
                        : cuda::conv2d_workspace_size(cd, math);
    ws = DevBuf(ws_n);
    x.fill(r), w.fill(r), dy.fill(r);
    find_algorithms();
  }
  const ConvDims& dims() const { return l.d; }
  double flops() const { return layer_flops(l); }

  // The tensors in the roles cuDNN's conv view gives them (x -> y, their
  // gradients dx, dy). For conv2d they are ours; a transposed convolution is
  // that conv's backward-data, so its output is the view's dx, its input the
  // view's dy, and our gradients y's and x's places.
  struct View {
    float *x, *y, *dx, *dy;
  };
  View view() {
    return l.transposed ? View{dy.p, dx.p, y.p, x.p} : View{x.p, y.p, dx.p, dy.p};
  }

  void find_algorithms() {
    const size_t cws_bytes = cws.n * sizeof(float);
    int n = 0;
    // Which cuDNN routine computes each of OUR passes (see the header comment).
    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    const View v = view();
    // Forward routine: the view's x -> y (our backward-data for conv_transpose2d).
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(handle, cc->xd, v.x, cc->wd, w.p, cc->cd,
                                                       cc->yd, v.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                       &n, fp, cws.p, cws_bytes));
    const auto* f = pick(fp, n, tf32);
    if (!f) throw std::runtime_error(l.name + ": cuDNN has no forward algorithm for this math");
    fwd_algo = f->algo, fwd_ws = f->memory;
    // BackwardData routine: the view's dy -> dx (our forward for conv_transpose2d).
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
        handle, cc->wd, w.p, cc->yd, v.dy, cc->cd, cc->xd, v.dx,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, dp, cws.p, cws_bytes));
    const auto* b = pick(dp, n, tf32);
    if (!b) throw std::runtime_error(l.name + ": cuDNN has no backward-data algorithm for this math");
    bwd_data_algo = b->algo, bwd_data_ws = b->memory;
    // BackwardFilter: the view's x and dy.
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
        handle, cc->xd, v.x, cc->yd, v.dy, cc->cd, cc->wd, dw.p,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, wp, cws.p, cws_bytes));
    const auto* g = pick(wp, n, tf32);
    if (!g) throw std::runtime_error(l.name + ": cuDNN has no backward-filter algorithm for this math");
    bwd_filter_algo = g->algo, bwd_filter_ws = g->memory;
    // Names as our passes see them.
    const std::string fa = "fwd_algo_" + std::to_string((int)fwd_algo);
    const std::string da = "bwd_data_algo_" + std::to_string((int)bwd_data_algo);
    const std::string wa = "bwd_filter_algo_" + std::to_string((int)bwd_filter_algo);
    algo_name[0] = l.transposed ? da : fa;
    algo_name[1] = l.transposed ? fa : da;
    algo_name[2] = wa;
    if (tf32)  // which math cuDNN's fastest used
      for (int i = 0; i < 3; i++) {
        const cudnnMathType_t m = i == 2 ? g->mathType : (i == 0) != l.transposed ? f->mathType : b->mathType;
        algo_name[i] += m == CUDNN_FMA_MATH ? "_fma" : "_tensor_op";
      }
  }

  void ours(Pass p) {
    gannf_conv(l, p, tf32 ? cuda::ConvMath::tf32 : cuda::ConvMath::fp32, y.p, dx.p, dw.p, x.p, w.p,
               dy.p, ws.p, ws_n, stream);
  }
  // beta = 1 for the weight gradient: it accumulates, as ours does.
  void theirs(Pass p) {
    const float one = 1.f, zero = 0.f;
    const bool fwd_routine = (p == Pass::Fwd) != l.transposed;
    const View v = view();
    if (p == Pass::BwdWeight) {
      CUDNN_CHECK(cudnnConvolutionBackwardFilter(handle, &one, cc->xd, v.x, cc->yd, v.dy, cc->cd,
                                                 bwd_filter_algo, cws.p, bwd_filter_ws, &one,
                                                 cc->wd, dw.p));
    } else if (fwd_routine) {
      CUDNN_CHECK(cudnnConvolutionForward(handle, &one, cc->xd, v.x, cc->wd, w.p, cc->cd, fwd_algo,
                                          cws.p, fwd_ws, &zero, cc->yd, v.y));
    } else {
      CUDNN_CHECK(cudnnConvolutionBackwardData(handle, &one, cc->wd, w.p, cc->yd, v.dy, cc->cd,
                                               bwd_data_algo, cws.p, bwd_data_ws, &zero, cc->xd,
                                               v.dx));
    }
  }
  DevBuf& output(Pass p) { return p == Pass::Fwd ? y : p == Pass::BwdData ? dx : dw; }

  // Our result with the large tile built for 1 and 2 blocks per SM: the same bits.
  bool same_bits_at_one_and_two_blocks_per_sm(Pass p) {
    DevBuf& o = output(p);
    std::vector<float> r[2];
    for (int b : {1, 2}) {
      cuda::set_gemm_blocks_per_sm(b);
      o.zero();
      ours(p);
      GANNF_CUDA_CHECK(cudaStreamSynchronize(stream), "our kernel");
      r[b - 1] = o.get();
    }
    cuda::set_gemm_blocks_per_sm(0);
    return r[0] == r[1];
  }
  // Our result against cuDNN's on the same inputs (the weight gradient from zero).
  double check(Pass p) {
    DevBuf& o = output(p);
    o.zero();
    ours(p);
    GANNF_CUDA_CHECK(cudaStreamSynchronize(stream), "our kernel");
    const auto a = o.get();
    o.zero();
    theirs(p);
    GANNF_CUDA_CHECK(cudaStreamSynchronize(stream), "cuDNN");
    return rel_l2(a, o.get());
  }
};

// impl: "gannf", "gannf1" (FP32: the large tile compiled for 1 block per SM;
// TF32: the WMMA kernel instead of the staged ones) or "cudnn".
void bm_op(benchmark::State& st, std::string name, LayerBench* lb, Pass p, std::string impl,
           Timer* timer) {
  const bool cudnn = impl == "cudnn";
  cuda::set_gemm_blocks_per_sm(impl == "gannf1" && !lb->tf32 ? 1 : 0);
  cuda::set_tf32_staging(impl == "gannf1" && lb->tf32 ? 0 : -1);
  auto fn = [&] { cudnn ? lb->theirs(p) : lb->ours(p); };
  for (int i = 0; i < 2; i++) timer->time(fn, i);  // warm-up
  std::vector<double> ms;
  int rep = 0;
  for (auto _ : st) {
    const double t = timer->time(fn, rep++);
    ms.push_back(t);
    st.SetIterationTime(t / 1e3);
  }
  Result r;
  r.ms = median(ms);
  r.gflops = lb->flops() / (r.ms / 1e3) / 1e9;
  r.algo = cudnn ? lb->algo_name[(int)p] : impl;
  g_results[name] = r;
  cuda::set_gemm_blocks_per_sm(0);
  cuda::set_tf32_staging(-1);
  st.counters["GFLOP/s"] = benchmark::Counter(lb->flops(), benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(r.algo);
}

std::vector<Layer> dcgan_layers(int B, int f) {
  DcganConfig cfg;
  cfg.ngf = cfg.ndf = f;
  auto cpu = make_backend<float>("cpu");
  Net<float> G(*cpu, "G"), D(*cpu, "D");
  build_generator(G, cfg, 1);
  build_discriminator(D, cfg, 1);
  std::vector<Layer> out;
  for (auto [net, tag] : {std::pair{&G, "G"}, std::pair{&D, "D"}})
    for (const auto& l : net->layers()) {
      if (l.kind != LayerKind::Conv && l.kind != LayerKind::ConvTranspose) continue;
      Layer x;
      x.transposed = l.kind == LayerKind::ConvTranspose;
      x.d = ConvDims{B, l.C_in, l.H_in, l.W_in, l.C_out, l.H_out, l.W_out, l.K, l.stride, l.pad};
      x.name = std::string(tag) + "." + std::to_string(l.index) + (x.transposed ? " convT " : " conv ") +
               std::to_string(l.C_in) + "->" + std::to_string(l.C_out) + " " +
               std::to_string(l.H_in) + "x" + std::to_string(l.W_in) + "->" +
               std::to_string(l.H_out) + "x" + std::to_string(l.W_out);
      out.push_back(x);
    }
  return out;
}

// ---- the full step -----------------------------------------------------------------

// The memory-bound ops' yardstick: the GPU's nominal bandwidth (memory clock x
// bus width x 2, from the device attributes) and what a device-to-device
// cudaMemcpy of 512 MB achieves (best of 5, read + write counted).
std::string memory_roof(cudaStream_t stream, int dev) {
  int clock_khz = 0, bus_bits = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
  const double nominal = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  const size_t n = (size_t)128 << 20;
  DevBuf a(n), b(n);
  Timer timer(stream, 0);
  double best_ms = 1e30;
  for (int rep = 0; rep < 6; rep++) {
    const double ms = timer.time(
        [&] {
          GANNF_CUDA_CHECK(cudaMemcpyAsync(b.p, a.p, n * sizeof(float), cudaMemcpyDeviceToDevice,
                                           stream),
                           "copy");
        },
        rep);
    if (rep > 0) best_ms = std::min(best_ms, ms);  // the first warms up
  }
  char line[160];
  std::snprintf(line, sizeof line,
                "a device-to-device copy of 512 MB runs at %.0f GB/s; nominal %.0f GB/s",
                2.0 * n * sizeof(float) / (best_ms / 1e3) / 1e9, nominal);
  return line;
}


// One step's gradients on the GPU against the CPU in double precision, batch 4:
// the bound of the workers' GPU self-check (src/nn/self_check.h), 1e-3 relative
// L2, looser than bench_step's CPU 1e-4 since this is a gate before timing
// (test_cuda holds the kernels to 1e-4 per tensor); the self-check measured 3.9e-7 on
// an H100 and 5.7e-2 for a convolution whose input gradient is 1% off.
bool check_step(const DcganConfig& cfg) {
  const int B = 4;
  bench::StepTrainer<float> g("cuda", cfg, B, 42);
  bench::StepTrainer<double> d("cpu", cfg, B, 42);
  auto p = g.G.get_params();
  d.G.set_params(std::vector<double>(p.begin(), p.end()));
  p = g.D.get_params();
  d.D.set_params(std::vector<double>(p.begin(), p.end()));
  const auto [real, noise] = g.random_batch(B, 1);
  const std::vector<double> rd(real.begin(), real.end()), nd(noise.begin(), noise.end());
  g.step->zero_grads();
  d.step->zero_grads();
  const StepStats sg = g.step->accumulate(real.data(), noise.data(), B, 1.0 / B);
  const StepStats sd = d.step->accumulate(rd.data(), nd.data(), B, 1.0 / B);
  bool ok = std::fabs(sg.d_loss - sd.d_loss) < 1e-3 * (1 + std::fabs(sd.d_loss));
  for (auto [ng, nd2] : {std::pair{&g.G, &d.G}, std::pair{&g.D, &d.D}}) {
    const auto a = ng->get_grads();
    const auto b = nd2->get_grads();
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
    const double rel = std::sqrt(num / den);
    std::printf("# check: %s gradients on the GPU vs CPU double: %.2e (relative L2)\n",
                ng->name().c_str(), rel);
    if (!(rel < 1e-3)) ok = false;
  }
  return ok;
}

// The TF32 step's gradients against the FP32 step's on the GPU, batch 4: a
// sanity gate before timing (a TF32 step is ~1e-2 from an FP32 one here; a
// broken kernel is off by 1 or more). test_cuda checks TF32 properly.
bool check_step_tf32(const DcganConfig& cfg) {
  const int B = 4;
  bench::StepTrainer<float> a("cuda", cfg, B, 42), b("cuda-tf32", cfg, B, 42);
  const auto [real, noise] = a.random_batch(B, 1);
  for (auto* t : {&a, &b}) {
    t->step->zero_grads();
    t->step->accumulate(real.data(), noise.data(), B, 1.0 / B);
  }
  bool ok = true;
  for (auto [na, nb] : {std::pair{&a.G, &b.G}, std::pair{&a.D, &b.D}}) {
    const auto x = na->get_grads(), y = nb->get_grads();
    const double rel = rel_l2(y, x);
    std::printf("# check: %s gradients, TF32 step vs FP32 step on the GPU: %.2e (relative L2)\n",
                na->name().c_str(), rel);
    if (!(rel < 0.25)) ok = false;
  }
  return ok;
}

// blocks: the large FP32 tile's blocks per SM (set_gemm_blocks_per_sm; 0: the default).
// staging: set_tf32_staging's mode (-1: the default); graphs: the step's
// passes replayed as a CUDA graph (Backend::set_graphs).
void bm_step(benchmark::State& st, std::string name, DcganConfig cfg, int B, std::string backend,
             int blocks, int staging, bool graphs) {
  cuda::set_gemm_blocks_per_sm(blocks);
  cuda::set_tf32_staging(staging);
  bench::StepTrainer<float> t(backend, cfg, B, 42);
  t.be->set_graphs(graphs);
  const auto [real, noise] = t.random_batch(B, 2);
  for (int i = 0; i < 3; i++) t.train_step(real.data(), noise.data(), B);  // warm-up
  t.be->synchronize();
  std::vector<double> ms;
  for (auto _ : st) {
    const auto t0 = std::chrono::steady_clock::now();
    StepStats s = t.train_step(real.data(), noise.data(), B);
    t.be->synchronize();
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(s);
    ms.push_back(sec * 1e3);
    st.SetIterationTime(sec);
  }
  if (!t.be->all_finite(t.G.params(), t.G.num_params()) ||
      !t.be->all_finite(t.D.params(), t.D.num_params()))
    st.SkipWithError("parameters became non-finite");
  cuda::set_gemm_blocks_per_sm(0);
  cuda::set_tf32_staging(-1);
  Result r;
  r.ms = median(ms);
  g_results[name] = r;
  st.counters["images"] = benchmark::Counter((double)B, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(cfg.describe());
}

// ---- BF16 per op (last in a run: it has not run on a GPU yet) -----------------------

// A device buffer of BF16 values (their 16 bits). Its copies run on the legacy
// default stream and wait for the device, as DevBuf's do; the caller first
// waits for the bench stream before reading one back.
struct DevBf16 {
  uint16_t* p = nullptr;
  size_t n = 0;
  explicit DevBf16(size_t count) : n(count) {
    GANNF_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(uint16_t)), "bench BF16 buffer");
  }
  ~DevBf16() { cudaFree(p); }
  DevBf16(const DevBf16&) = delete;
  DevBf16& operator=(const DevBf16&) = delete;
  void set(const std::vector<uint16_t>& h) {
    GANNF_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice), "BF16 set");
    DevBuf::settle();
  }
  std::vector<uint16_t> bits() const {
    std::vector<uint16_t> h(n);
    GANNF_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(uint16_t), cudaMemcpyDeviceToHost), "BF16 get");
    return h;
  }
};

std::vector<uint16_t> to_bf16_host(const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); i++) b[i] = bf16_bits(v[i]);
  return b;
}

// One layer at BF16. gannf: ConvMath::bf16 on FP32 tensors, as the cuda-bf16
// back end calls it (the staging passes' rounding to BF16 is in its time).
// cuDNN: BF16 tensors (CUDNN_DATA_BFLOAT16, NCHW, as the FP32 cases), FP32
// compute type, CUDNN_TENSOR_OP_MATH; its BF16 inputs are copies of the same
// FP32 inputs, rounded on the host (to nearest, ties to even, as gannf rounds)
// once at set-up; "+cast" times it with its two inputs cast from FP32 by
// cuda::to_bf16 before every call. cuDNN's outputs are BF16; its weight
// gradient is written (beta = 0), not accumulated into a BF16 tensor.
struct Bf16Bench {
  Layer l;
  cudaStream_t stream;
  cudnnHandle_t handle;
  DevBuf& cws;  // cuDNN's workspace, shared
  std::unique_ptr<CudnnConv> cc;
  DevBuf x, w, dy, y, dx, dw, ws;     // gannf's FP32 tensors (ours: x -> y) and workspace
  DevBf16 xb, wb, dyb, yb, dxb, dwb;  // cuDNN's BF16 ones, in the same roles
  size_t ws_n = 0;
  // Per cuDNN routine (0 Forward, 1 BackwardData, 2 BackwardFilter): the
  // fastest algorithm, its workspace and the math it was measured in (set on
  // the descriptor before each call), or why there is none (no_algo).
  int algo[3] = {0, 0, 0};
  size_t algo_ws[3] = {0, 0, 0};
  cudnnMathType_t algo_math[3] = {CUDNN_TENSOR_OP_MATH, CUDNN_TENSOR_OP_MATH, CUDNN_TENSOR_OP_MATH};
  std::string algo_name[3], no_algo[3];
  size_t cast_differs = 0;  // elements where to_bf16 and the host rounding disagree

  Bf16Bench(const Layer& layer, cudaStream_t s, cudnnHandle_t h, DevBuf& cudnn_ws, Rng& r)
      : l(layer), stream(s), handle(h), cws(cudnn_ws),
        cc(std::make_unique<CudnnConv>(h, layer, true, CUDNN_DATA_BFLOAT16)),
        x((size_t)l.d.B * l.d.C_in * l.d.H_in * l.d.W_in),
        w((size_t)l.d.C_in * l.d.C_out * l.d.K * l.d.K),
        dy((size_t)l.d.B * l.d.C_out * l.d.H_out * l.d.W_out), y(dy.n), dx(x.n), dw(w.n),
        xb(x.n), wb(w.n), dyb(dy.n), yb(y.n), dxb(dx.n), dwb(dw.n) {
    ws_n = l.transposed ? cuda::conv_transpose2d_workspace_size(l.d, cuda::ConvMath::bf16)
                        : cuda::conv2d_workspace_size(l.d, cuda::ConvMath::bf16);
    ws = DevBuf(ws_n);
    x.fill(r), w.fill(r), dy.fill(r);
    // The set-up copies, rounded on the host; then to_bf16 (the "+cast"
    // column's kernel) once on each, which must give the same bits.
    for (auto [f, b] : {std::pair{&x, &xb}, std::pair{&w, &wb}, std::pair{&dy, &dyb}}) {
      const std::vector<uint16_t> host = to_bf16_host(f->get());
      cuda::to_bf16(b->p, f->p, f->n, stream);
      GANNF_CUDA_CHECK(cudaStreamSynchronize(stream), "to_bf16");
      const std::vector<uint16_t> dev = b->bits();
      for (size_t i = 0; i < host.size(); i++) cast_differs += host[i] != dev[i];
      b->set(host);
    }
    find_algorithms();
  }

  // cuDNN's routine for each of our passes (see the header comment).
  int routine(Pass p) const {
    return p == Pass::BwdWeight ? 2 : (p == Pass::Fwd) != l.transposed ? 0 : 1;
  }
  struct View {
    uint16_t *x, *y, *dx, *dy;
  };
  View view() {  // as LayerBench::view
    return l.transposed ? View{dyb.p, dxb.p, yb.p, xb.p} : View{xb.p, yb.p, dxb.p, dyb.p};
  }

  // Each routine on its own: one that cuDNN cannot run at BF16 (an error, or
  // no algorithm that succeeded) leaves its reason in no_algo, not an exception.
  void find_algorithms() {
    const size_t cws_bytes = cws.n * sizeof(float);
    const View v = view();
    const char* routine_name[3] = {"fwd_algo_", "bwd_data_algo_", "bwd_filter_algo_"};
    for (int k = 0; k < 3; k++) {
      int n = 0;
      cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
      int a = -1;
      size_t mem = 0;
      cudnnMathType_t math = CUDNN_DEFAULT_MATH;
      auto take = [&](const auto* perf) {
        if (perf) a = (int)perf->algo, mem = perf->memory, math = perf->mathType;
      };
      if (k == 0) {
        cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        st = cudnnFindConvolutionForwardAlgorithmEx(handle, cc->xd, v.x, cc->wd, wb.p, cc->cd, cc->yd,
                                                    v.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, fp,
                                                    cws.p, cws_bytes);
        if (st == CUDNN_STATUS_SUCCESS) take(pick(fp, n, true));
      } else if (k == 1) {
        cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        st = cudnnFindConvolutionBackwardDataAlgorithmEx(handle, cc->wd, wb.p, cc->yd, v.dy, cc->cd,
                                                         cc->xd, v.dx, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                         &n, dp, cws.p, cws_bytes);
        if (st == CUDNN_STATUS_SUCCESS) take(pick(dp, n, true));
      } else {
        cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        st = cudnnFindConvolutionBackwardFilterAlgorithmEx(
            handle, cc->xd, v.x, cc->yd, v.dy, cc->cd, cc->wd, dwb.p,
            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, wp, cws.p, cws_bytes);
        if (st == CUDNN_STATUS_SUCCESS) take(pick(wp, n, true));
      }
      if (st != CUDNN_STATUS_SUCCESS)
        no_algo[k] = std::string("cudnnFind: ") + cudnnGetErrorString(st);
      else if (a < 0)
        no_algo[k] = "none of " + std::to_string(n) + " algorithms succeeded";
      else {
        algo[k] = a, algo_ws[k] = mem, algo_math[k] = math;
        algo_name[k] = routine_name[k] + std::to_string(a) +
                       (math == CUDNN_FMA_MATH       ? "_fma"
                        : math == CUDNN_DEFAULT_MATH ? "_default"
                                                     : "_tensor_op");
      }
    }
  }

  void ours(Pass p) {
    gannf_conv(l, p, cuda::ConvMath::bf16, y.p, dx.p, dw.p, x.p, w.p, dy.p, ws.p, ws_n, stream);
  }
  // The pass's two inputs cast from FP32, as autocast does before the call.
  void cast(Pass p) {
    if (p != Pass::BwdData) cuda::to_bf16(xb.p, x.p, x.n, stream);
    if (p != Pass::BwdWeight) cuda::to_bf16(wb.p, w.p, w.n, stream);
    if (p != Pass::Fwd) cuda::to_bf16(dyb.p, dy.p, dy.n, stream);
  }
  void theirs(Pass p) {
    const float one = 1.f, zero = 0.f;
    const int k = routine(p);
    const View v = view();
    CUDNN_CHECK(cudnnSetConvolutionMathType(cc->cd, algo_math[k]));
    if (k == 2) {
      CUDNN_CHECK(cudnnConvolutionBackwardFilter(
          handle, &one, cc->xd, v.x, cc->yd, v.dy, cc->cd, (cudnnConvolutionBwdFilterAlgo_t)algo[2], cws.p,
          algo_ws[2], &zero, cc->wd, dwb.p));
    } else if (k == 0) {
      CUDNN_CHECK(cudnnConvolutionForward(handle, &one, cc->xd, v.x, cc->wd, wb.p, cc->cd,
                                          (cudnnConvolutionFwdAlgo_t)algo[0], cws.p, algo_ws[0], &zero,
                                          cc->yd, v.y));
    } else {
      CUDNN_CHECK(cudnnConvolutionBackwardData(handle, &one, cc->wd, wb.p, cc->yd, v.dy, cc->cd,
                                               (cudnnConvolutionBwdDataAlgo_t)algo[1], cws.p, algo_ws[1],
                                               &zero, cc->xd, v.dx));
    }
  }
  // gannf's FP32 result against cuDNN's BF16 one (the weight gradient from zero).
  double check(Pass p) {
    DevBuf& o = p == Pass::Fwd ? y : p == Pass::BwdData ? dx : dw;
    const DevBf16& ob = p == Pass::Fwd ? yb : p == Pass::BwdData ? dxb : dwb;
    o.zero();
    ours(p);
    theirs(p);
    GANNF_CUDA_CHECK(cudaStreamSynchronize(stream), "BF16 check");
    const std::vector<uint16_t> b = ob.bits();
    std::vector<float> ref(b.size());
    for (size_t i = 0; i < b.size(); i++) ref[i] = bf16_value(b[i]);
    return rel_l2(o.get(), ref);
  }
};

// Median ms of fn over kBf16Reps repetitions after two warm-ups (L2 flushed
// before each, as in the other tables). A fixed count instead of Google
// Benchmark's: the table runs after RunSpecifiedBenchmarks.
constexpr int kBf16Reps = 30;
double bf16_time(Timer& timer, const std::function<void()>& fn) {
  for (int i = 0; i < 2; i++) timer.time(fn, i);
  std::vector<double> ms;
  for (int i = 0; i < kBf16Reps; i++) ms.push_back(timer.time(fn, i));
  return median(ms);
}

// The BF16 table: gannf against cuDNN with BF16 tensors per layer and pass,
// each row and RESULT line printed (and flushed) as soon as it is measured.
// A layer or pass that cuDNN cannot run at BF16, or that fails, is one "# bf16
// per-op:" line and skipped; a failure that leaves the GPU unusable (a sticky
// error) ends the table by an exception, which the caller prints. Nothing here
// changes the exit status: a relative L2 above kBf16Warn is a WARNING.
constexpr double kBf16Warn = 5e-2;
void bf16_table(const std::vector<Layer>& all, int only, cudaStream_t stream, cudnnHandle_t handle,
                DevBuf& cws, Timer& timer, Rng& rng) {
  try {
    make_backend<float>("cuda-bf16");  // compute capability 8.0+, else one line
  } catch (const std::exception& e) {
    std::printf("# bf16 per-op table: not run: %s\n", e.what());
    return;
  }
  std::printf("\n# bf16 table: gannf ConvMath::bf16 on FP32 tensors; cuDNN on BF16 copies made at set-up "
              "(NCHW, FP32 compute, CUDNN_TENSOR_OP_MATH); +cast: cuDNN after casting its FP32 inputs "
              "(to_bf16) every call; ratio = gannf / cuDNN\n");
  std::printf("%-10s %-10s %-5s %10s %10s %10s %7s %7s %10s %9s  %s\n", "layer", "pass", "math",
              "gannf ms", "cuDNN ms", "+cast ms", "ratio", "r+cast", "GFLOP/s", "rel L2", "cuDNN algorithm");
  std::fflush(stdout);
  double worst = -1;
  std::string worst_at;
  int cases = 0;
  for (size_t li = 0; li < all.size(); li++) {
    if (only >= 0 && (size_t)only != li) continue;
    const Layer& l = all[li];
    const std::string layer = l.name.substr(0, l.name.find(' '));
    try {
      Bf16Bench lb(l, stream, handle, cws, rng);
      if (lb.cast_differs)
        std::printf("# bf16 per-op: %s: to_bf16 and the host rounding differ in %zu elements; "
                    "the +cast column is a wrong cast's\n",
                    layer.c_str(), lb.cast_differs);
      for (Pass p : {Pass::Fwd, Pass::BwdData, Pass::BwdWeight}) {
        const int k = lb.routine(p);
        if (!lb.no_algo[k].empty()) {
          const double g = bf16_time(timer, [&] { lb.ours(p); });
          std::printf("# bf16 per-op: %s %s: cuDNN has no BF16 algorithm (%s); gannf %.3f ms\n",
                      layer.c_str(), pass_name(p), lb.no_algo[k].c_str(), g);
          continue;
        }
        const double e = lb.check(p);
        const double g = bf16_time(timer, [&] { lb.ours(p); });
        const double c = bf16_time(timer, [&] { lb.theirs(p); });
        const double cc = bf16_time(timer, [&] {
          lb.cast(p);
          lb.theirs(p);
        });
        const double gf = layer_flops(l) / (g / 1e3) / 1e9, cf = layer_flops(l) / (c / 1e3) / 1e9;
        const bool warn = !(e <= kBf16Warn);
        std::printf("%-10s %-10s %-5s %10.3f %10.3f %10.3f %7.2f %7.2f %10.0f %9.2e  %s%s\n",
                    layer.c_str(), pass_name(p), "bf16", g, c, cc, g / c, g / cc, gf, e,
                    lb.algo_name[k].c_str(), warn ? "  WARNING: far from cuDNN" : "");
        std::printf("RESULT op=%s/%s math=bf16 gannf_ms=%.4f cudnn_ms=%.4f ratio=%.3f "
                    "gannf_gflops=%.0f cudnn_gflops=%.0f cudnn_algo=%s gannf1_ms=nan "
                    "cudnn_cast_ms=%.4f cast_ratio=%.3f rel_l2=%.3e\n",
                    layer.c_str(), pass_name(p), g, c, g / c, gf, cf, lb.algo_name[k].c_str(), cc,
                    g / cc, e);
        cases++;
        if (!std::isnan(worst) && (std::isnan(e) || e > worst))
          worst = e, worst_at = layer + " " + pass_name(p);
      }
    } catch (const std::exception& ex) {
      std::printf("# bf16 per-op: %s: failed (the rest of the layer skipped): %s\n", layer.c_str(),
                  ex.what());
      std::fflush(stdout);
      // A sticky error (a kernel that faulted) fails every later call: end here.
      GANNF_CUDA_CHECK(cudaDeviceSynchronize(), "the GPU after a failed BF16 layer");
    }
    std::fflush(stdout);
  }
  if (cases)
    std::printf("# check: BF16 convolutions vs cuDNN's BF16, %d cases: worst relative L2 %.2e (%s)%s\n",
                cases, worst, worst_at.c_str(),
                worst <= kBf16Warn ? "" : "  WARNING: above 5e-2 (the exit status does not say it)");
  else
    std::printf("# check: BF16 convolutions vs cuDNN's BF16: no case ran\n");
}

}  // namespace

int main(int argc, char** argv) {
  auto flags = take_flags(argc, argv,
                          {{"batch", 128}, {"f", 64}, {"ops", 1}, {"step", 1}, {"check", 1}, {"tf32", 1},
                           {"breakdown", 1}, {"layer", -1}, {"bf16", 1}});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    std::fprintf(stderr, "bench_cuda flags: --batch=128 --f=64 --ops=1 --step=1 --check=1 --tf32=1 --breakdown=1 "
                         "--layer=-1 --bf16=1\n");
    return 2;
  }
  const int B = flags["batch"], f = flags["f"];
  if (B < 2 || f < 1) {
    std::fprintf(stderr, "bench_cuda: --batch must be >= 2 and --f >= 1\n");
    return 2;
  }
  try {
    auto probe = make_backend<float>("cuda");  // one clear line if there is no usable GPU
    std::printf("# gpu: %s\n", probe->describe().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
  int dev = 0;
  cudaDeviceProp prop;
  GANNF_CUDA_CHECK(cudaGetDevice(&dev), "device");
  GANNF_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev), "device properties");
  bool tf32 = flags["tf32"] != 0;
  if (tf32) {
    try {
      make_backend<float>("cuda-tf32");
    } catch (const std::exception& e) {
      std::printf("# no TF32 runs: %s\n", e.what());
      tf32 = false;
    }
  }
  std::printf("# cuDNN %zu (headers %d.%d.%d): FP32 with CUDNN_FMA_MATH (no TF32)%s\n",
              cudnnGetVersion(), CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL,
              tf32 ? "; TF32 with CUDNN_TENSOR_OP_MATH" : "");
  std::printf("# DCGAN 64x64x3, f = %d, batch %d; L2 %d MB flushed between repetitions\n", f, B,
              prop.l2CacheSize >> 20);

  DcganConfig cfg;
  cfg.ngf = cfg.ndf = f;
  int status = 0;
  try {
    cudaStream_t stream;
    GANNF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
    cudnnHandle_t handle;
    CUDNN_CHECK(cudnnCreate(&handle));
    CUDNN_CHECK(cudnnSetStream(handle, stream));
    Timer timer(stream, std::max<size_t>(2 * (size_t)prop.l2CacheSize, (size_t)64 << 20));
    Rng rng(3);
    DevBuf cudnn_ws(((size_t)1 << 30) / sizeof(float));  // cudnnFind* may use up to 1 GiB
    std::vector<std::unique_ptr<LayerBench>> layers;
    std::vector<std::string> op_names;
    if (flags["ops"]) {
      for (bool math_tf32 : {false, true}) {
      if (math_tf32 && !tf32) continue;
      const std::vector<Layer> all = dcgan_layers(B, f);
      for (size_t li = 0; li < all.size(); li++) {
        if (flags["layer"] >= 0 && (size_t)flags["layer"] != li) continue;
        const Layer& l = all[li];
        layers.push_back(
            std::make_unique<LayerBench>(l, math_tf32, stream, handle, cudnn_ws, rng));
        LayerBench* lb = layers.back().get();
        for (Pass p : {Pass::Fwd, Pass::BwdData, Pass::BwdWeight}) {
          const double e = lb->check(p);
          const bool bad = !(e <= (math_tf32 ? 5e-3 : 1e-4));
          std::printf("# check %-28s %-10s %s vs cuDNN: %.2e%s\n", l.name.c_str(), pass_name(p),
                      math_tf32 ? "tf32" : "fp32", e, bad ? "  MISMATCH" : "");
          if (bad) status = 1;
          const std::string base = "op/" + l.name.substr(0, l.name.find(' ')) + "/" + pass_name(p) +
                                   (math_tf32 ? "/tf32" : "/fp32");
          op_names.push_back(base);
          // The second gannf column: FP32, the 1-block-per-SM build of the
          // large tile (the same bits, checked first); TF32, the WMMA kernel
          // the staged ones replace (set_tf32_staging(0)).
          std::vector<std::string> impls = {"gannf", "gannf1", "cudnn"};
          if (!math_tf32) {
            if (!lb->same_bits_at_one_and_two_blocks_per_sm(p)) {
              std::printf("# check %-28s %-10s fp32: 1 and 2 blocks/SM give other bits  MISMATCH\n",
                          l.name.c_str(), pass_name(p));
              status = 1;
            }
          }
          for (const std::string& impl : impls) {
            const std::string name = base + "/" + impl;
            benchmark::RegisterBenchmark(name.c_str(), bm_op, name, lb, p, impl, &timer)
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
          }
        }
      }
      }
      if (layers.empty()) {
        std::fprintf(stderr, "bench_cuda: --layer=%d: there are %zu conv layers (0-%zu)\n",
                     flags["layer"], dcgan_layers(B, f).size(), dcgan_layers(B, f).size() - 1);
        return 2;
      }
      if (status)  // timed all the same (GPU time is scarce); the exit status says it
        std::printf("# check: a kernel DISAGREES with cuDNN (MISMATCH above); its times are "
                    "not those of a correct kernel\n");
    }
    const std::string step_name = "step/64x64x3/B" + std::to_string(B);
    if (flags["step"]) {
      if (flags["check"] && !check_step(cfg)) {
        std::printf("# check: the GPU step DISAGREES with the CPU's; timed all the same\n");
        status = 1;
      }
      if (tf32 && flags["check"] && !check_step_tf32(cfg)) {
        std::printf("# check: the TF32 step is FAR from the FP32 one; timed all the same\n");
        status = 1;
      }
      // fp32_1sm: FP32 with the large tile built for 1 block per SM;
      // tf32_wmma: TF32 on the WMMA kernel only (no staged kernels).
      // bf16: the cuda-bf16 back end (BF16 tensor-core convolutions);
      // fp32_graph: FP32 with the step's passes replayed as a CUDA graph.
      for (const std::string math : {"fp32", "fp32_1sm", "fp32_graph", "tf32", "tf32_wmma", "bf16"}) {
        const bool on_tc = math.rfind("tf32", 0) == 0 || math == "bf16";
        if (on_tc && !tf32) continue;
        const std::string name = step_name + "/" + math;
        benchmark::RegisterBenchmark(name.c_str(), bm_step, name, cfg, B,
                                     std::string(math == "bf16" ? "cuda-bf16"
                                                 : on_tc        ? "cuda-tf32"
                                                                : "cuda"),
                                     math == "fp32_1sm" ? 1 : 0, math == "tf32_wmma" ? 0 : -1,
                                     math == "fp32_graph")
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
    benchmark::RunSpecifiedBenchmarks();

    // The summary the device script collects: one RESULT line per op and for the step.
    std::printf("\n%-10s %-10s %-5s %10s %10s %10s %7s %10s  %s\n", "layer", "pass", "math",
                "gannf ms", "1/SM|WMMA", "cuDNN ms", "ratio", "GFLOP/s", "cuDNN algorithm");
    for (const auto& base : op_names) {  // op/<layer>/<pass>/<math>
      auto a = g_results.find(base + "/gannf"), c = g_results.find(base + "/cudnn");
      if (a == g_results.end() || c == g_results.end()) continue;
      const auto a2 = g_results.find(base + "/gannf1");
      const double ms2 = a2 == g_results.end() ? NAN : a2->second.ms;
      const size_t s1 = base.find('/', 3), s2 = base.find('/', s1 + 1);
      const std::string layer = base.substr(3, s1 - 3), pass = base.substr(s1 + 1, s2 - s1 - 1),
                        math = base.substr(s2 + 1);
      std::printf("%-10s %-10s %-5s %10.3f %10.3f %10.3f %7.2f %10.0f  %s\n", layer.c_str(),
                  pass.c_str(), math.c_str(), a->second.ms, ms2, c->second.ms,
                  a->second.ms / c->second.ms, a->second.gflops, c->second.algo.c_str());
      std::printf("RESULT op=%s/%s math=%s gannf_ms=%.4f cudnn_ms=%.4f ratio=%.3f "
                  "gannf_gflops=%.0f cudnn_gflops=%.0f cudnn_algo=%s gannf1_ms=%.4f\n",
                  layer.c_str(), pass.c_str(), math.c_str(), a->second.ms, c->second.ms,
                  a->second.ms / c->second.ms, a->second.gflops, c->second.gflops,
                  c->second.algo.c_str(), ms2);
    }
    for (const char* math : {"fp32", "fp32_1sm", "fp32_graph", "tf32", "tf32_wmma", "bf16"})
      if (auto s = g_results.find(step_name + "/" + math); s != g_results.end())
        std::printf("RESULT impl=gannf math=%s device=cuda image=64 nc=3 batch=%d f=%d "
                    "images_per_s=%.1f step_ms=%.3f gpu=\"%s\"\n",
                    math, B, f, B / (s->second.ms / 1e3), s->second.ms, prop.name);
    layers.clear();
    if (flags["breakdown"] && flags["step"]) {
      std::printf("\n");
      const std::string roof = memory_roof(stream, dev);
      std::printf("# memory: %s\n", roof.c_str());
      for (const char* be : {"cuda", "cuda-tf32"}) {
        if (std::string(be) == "cuda-tf32" && !tf32) continue;
        bench::print_step_breakdown(stdout, be, cfg, B, 2, 5,
                                    "64x64x3 batch " + std::to_string(B) + " --backend " + be, roof);
      }
    }
    // Last, the BF16 per-op table, which has not run on a GPU yet: everything
    // above is flushed first (a crash or a time limit in it keeps them), and
    // whatever fails in it is one line -- the exit status stays the one above.
    if (flags["ops"] && flags["bf16"]) {
      std::fflush(stdout);
      try {
        bf16_table(dcgan_layers(B, f), flags["layer"], stream, handle, cudnn_ws, timer, rng);
      } catch (const std::exception& e) {
        std::printf("# bf16 per-op table failed: %s\n", e.what());
      } catch (...) {
        std::printf("# bf16 per-op table failed: an exception that is not a std::exception\n");
      }
      std::fflush(stdout);
    }
    cudnnDestroy(handle);
    cudaStreamDestroy(stream);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
  benchmark::Shutdown();
  return status;
}
