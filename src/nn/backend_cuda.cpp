// The CUDA back end: device memory from one arena, every op forwarded to
// kernels/cuda on one stream.
//
// Memory. The nets, GanStep and Adam allocate everything they use when they
// are built and keep it for the whole run, so the back end reserves device
// memory in large chunks (the first sized at start-up: GANNF_CUDA_ARENA_MB,
// default 256 MB) and hands out 256-byte-aligned blocks from them; a released
// block goes back to an address-ordered free list and merges with its free
// neighbours, so tests and tools that build and drop nets reuse memory instead
// of growing. A new chunk (at least 256 MB, or the request) is reserved only
// when no free block fits -- for the reference DCGAN at batch 128 that is a
// handful of chunks, all at start-up; a training step never calls cudaMalloc.
//
// Synchronisation. Every op is enqueued on the back end's stream; the host
// waits only in download() (its result is read next), all_finite (returns a
// bool) and synchronize(). upload() waits for its copy too, since the caller
// may reuse its host buffer at once. release() does not wait: all work runs on
// the one stream, so a block handed out again is used only after the work
// queued before its release.
//
// Built twice: for the GPU (gannf_nn, when CUDA is found) and, with
// GANNF_CUDA_EMULATE, against the host emulator of kernels/cuda/emu for the
// tests (its factory is then make_cuda_emu_backend()).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "ops.cuh"

#ifdef GANNF_CUDA_EMULATE
#define GANNF_CUDA_FACTORY make_cuda_emu_backend
#else
#define GANNF_CUDA_FACTORY make_cuda_backend
#endif

namespace gannf {

namespace {

#ifdef GANNF_CUDA_EMULATE
using namespace ::gannf::emu;
#endif

// The oldest GPUs gannf builds for (Turing). Older ones lack the code in the
// default build, and CUDA 13 dropped them altogether.
constexpr int kMinMajor = 7, kMinMinor = 5;

std::string version_string(int v) {  // 12040 -> "12.4"
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

// ---- the arena --------------------------------------------------------------

class Arena {
 public:
  explicit Arena(size_t first_chunk) : next_chunk_(first_chunk) {}
  ~Arena() {
    for (auto& c : chunks_) cudaFree(c.base);
  }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  void* alloc(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    bytes = round_up(bytes ? bytes : 1, kAlign);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second.size < bytes) continue;
      char* p = it->first;
      Block rest = it->second;
      free_.erase(it);
      if (rest.size > bytes) free_[p + bytes] = Block{rest.size - bytes, rest.chunk};
      used_[p] = Block{bytes, rest.chunk};
      in_use_ += bytes;
      return p;
    }
    // No free block fits: reserve another chunk.
    const size_t size = std::max(round_up(bytes, kChunkAlign), next_chunk_);
    next_chunk_ = kGrowChunk;
    void* base = nullptr;
    const cudaError_t e = cudaMalloc(&base, size);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw std::runtime_error(
          "cuda: out of GPU memory reserving " + mib(size) + " (" + mib(in_use_) +
          " in use by gannf, " + mib(free_b) + " of " + mib(total_b) +
          " free on the GPU): lower --batch or --micro-batch, or free the GPU");
    }
    const int chunk = (int)chunks_.size();
    chunks_.push_back(Chunk{(char*)base, size});
    char* p = (char*)base;
    if (size > bytes) free_[p + bytes] = Block{size - bytes, chunk};
    used_[p] = Block{bytes, chunk};
    in_use_ += bytes;
    return p;
  }

  void release(void* ptr) {
    std::lock_guard<std::mutex> lock(mu_);
    auto u = used_.find((char*)ptr);
    if (u == used_.end()) throw std::logic_error("cuda: release of a pointer this back end did not allocate");
    char* p = u->first;
    Block b = u->second;
    used_.erase(u);
    in_use_ -= b.size;
    // Merge with the free neighbours of the same chunk (chunks that happen to
    // be adjacent in the address space stay separate allocations).
    auto next = free_.lower_bound(p);
    if (next != free_.end() && next->first == p + b.size && next->second.chunk == b.chunk) {
      b.size += next->second.size;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second.size == p && prev->second.chunk == b.chunk) {
        prev->second.size += b.size;
        return;
      }
    }
    free_[p] = b;
  }

  static std::string mib(size_t b) { return std::to_string((b + (1 << 20) - 1) >> 20) + " MiB"; }

 private:
  // 256 bytes: what cudaMalloc guarantees, and a multiple of every vector
  // width and cache sector the kernels care about.
  static constexpr size_t kAlign = 256;
  static constexpr size_t kChunkAlign = (size_t)2 << 20;
  static constexpr size_t kGrowChunk = (size_t)256 << 20;
  static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

  struct Chunk {
    char* base;
    size_t size;
  };
  struct Block {
    size_t size;
    int chunk;
  };
  std::mutex mu_;
  std::vector<Chunk> chunks_;
  std::map<char*, Block> free_;             // address order: first fit, merging
  std::unordered_map<char*, Block> used_;
  size_t next_chunk_, in_use_ = 0;
};

size_t first_chunk_bytes() {
  size_t mb = 256;
  if (const char* s = std::getenv("GANNF_CUDA_ARENA_MB")) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (end == s || *end || v == 0)
      throw std::runtime_error(std::string("GANNF_CUDA_ARENA_MB='") + s +
                               "' is not a positive number of MiB");
    mb = (size_t)v;
  }
  return mb << 20;
}

// ---- the back end ----------------------------------------------------------------

// The CUDA back ends by name, and how each multiplies in its convolutions.
constexpr struct {
  const char* name;
  cuda::ConvMath math;
} kMaths[] = {{"cuda", cuda::ConvMath::fp32},
              {"cuda-tf32", cuda::ConvMath::tf32},
              {"cuda-bf16", cuda::ConvMath::bf16}};

class CudaBackend final : public Backend<float> {
 public:
  CudaBackend(const cudaDeviceProp& prop, int driver, int runtime, cuda::ConvMath math)
      : prop_(prop), driver_(driver), runtime_(runtime), math_(math),
        arena_(first_chunk_bytes()) {
    GANNF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                     "creating the back end's stream");
    // Batch norm's partial sums (32 KB): used in stream order, so one suffices.
    bn_scratch_ = static_cast<double*>(arena_.alloc(cuda::kBnScratchDoubles * sizeof(double)));
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    for (cudaGraphExec_t e : graphs_) cudaGraphExecDestroy(e);
    cudaStreamDestroy(stream_);
  }

  // ---- graphs ----
  bool set_graphs(bool on) override {
    use_graphs_ = on;
    return true;
  }
  bool begin_capture() override {
    if (!use_graphs_) return false;
    GANNF_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                     "starting a graph capture");
    return true;
  }
  uint64_t end_capture() override {
    cudaGraph_t g = nullptr;
    GANNF_CUDA_CHECK(cudaStreamEndCapture(stream_, &g), "ending a graph capture");
    cudaGraphExec_t e = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&e, g, 0);
    cudaGraphDestroy(g);
    GANNF_CUDA_CHECK(err, "instantiating a captured graph");
    graphs_.push_back(e);
    return graphs_.size();
  }
  void replay(uint64_t graph) override {
    if (graph == 0 || graph > graphs_.size())
      throw std::invalid_argument("replay: no graph " + std::to_string(graph));
    GANNF_CUDA_CHECK(cudaGraphLaunch(graphs_[graph - 1], stream_), "launching a graph");
    ++replays_;
  }
  uint64_t graph_replays() const override { return replays_; }

  std::string name() const override {
    for (const auto& m : kMaths)
      if (m.math == math_) return m.name;
    return "cuda";
  }
  std::string describe() const override {
    char cc[32];
    std::snprintf(cc, sizeof cc, "%d.%d", prop_.major, prop_.minor);
    char mem[32];
    std::snprintf(mem, sizeof mem, "%.1f GiB", prop_.totalGlobalMem / 1073741824.0);
    return std::string(prop_.name) + ", " + mem + ", compute capability " + cc + ", " +
           std::to_string(prop_.multiProcessorCount) + " SMs; driver " +
           version_string(driver_) + ", runtime " + version_string(runtime_) +
           (math_ == cuda::ConvMath::tf32
                ? "; TF32 tensor-core convolutions, FP32 elsewhere, deterministic kernels ("
            : math_ == cuda::ConvMath::bf16
                ? "; BF16 tensor-core convolutions (FP32 sums), FP32 elsewhere, deterministic kernels ("
                : "; FP32 deterministic kernels (") +
           cuda::compiled_architectures() + ")";
  }

  // ---- memory ----
  float* alloc(size_t n) override {
    void* p = arena_.alloc(n * sizeof(float));
    GANNF_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(float), stream_), "zeroing a new buffer");
    return (float*)p;
  }
  // No wait: a block handed out again is used by work queued on the same
  // stream after whatever still reads the old contents.
  void release(float* p) override { arena_.release(p); }
  void upload(float* dst, const float* src, size_t n) override {
    if (!n) return;
    GANNF_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, stream_),
                     "copying to the GPU");
    ++host_waits_;
    GANNF_CUDA_CHECK(cudaStreamSynchronize(stream_), "copying to the GPU");
  }
  void download(float* dst, const float* src, size_t n) override {
    if (!n) return;
    GANNF_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_),
                     "copying from the GPU");
    ++host_waits_;
    GANNF_CUDA_CHECK(cudaStreamSynchronize(stream_),
                     "a kernel of this step failed (rerun with CUDA_LAUNCH_BLOCKING=1 to find which)");
  }
  void zero(float* p, size_t n) override {
    if (n) GANNF_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(float), stream_), "zeroing a buffer");
  }
  void copy(float* dst, const float* src, size_t n) override {
    if (n && dst != src)
      GANNF_CUDA_CHECK(
          cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_),
          "copying on the GPU");
  }
  uint64_t host_waits() const override { return host_waits_; }
  std::string device_name() const override { return prop_.name; }
  uint64_t device_memory_bytes() const override { return prop_.totalGlobalMem; }
  void synchronize() override {
    ++host_waits_;
    GANNF_CUDA_CHECK(cudaStreamSynchronize(stream_),
                     "a kernel failed (rerun with CUDA_LAUNCH_BLOCKING=1 to find which)");
  }

  // ---- convolutions ----
  size_t conv2d_workspace(const ConvDims& d) override {
    return cuda::conv2d_workspace_size(d, math_);
  }
  size_t conv_transpose2d_workspace(const ConvDims& d) override {
    return cuda::conv_transpose2d_workspace_size(d, math_);
  }
  void conv2d_forward(float* out, const float* inp, const float* w, const ConvDims& d, float* ws,
                      size_t n) override {
    cuda::conv2d_forward(out, inp, w, d, ws, n, stream_, math_);
  }
  void conv2d_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                       const ConvDims& d, float* ws, size_t n) override {
    cuda::conv2d_backward(dinp, dw, dout, inp, w, d, ws, n, stream_, math_);
  }
  void conv_transpose2d_forward(float* out, const float* inp, const float* w, const ConvDims& d,
                                float* ws, size_t n) override {
    cuda::conv_transpose2d_forward(out, inp, w, d, ws, n, stream_, math_);
  }
  void conv_transpose2d_backward(float* dinp, float* dw, const float* dout, const float* inp,
                                 const float* w, const ConvDims& d, float* ws,
                                 size_t n) override {
    cuda::conv_transpose2d_backward(dinp, dw, dout, inp, w, d, ws, n, stream_, math_);
  }

  // ---- batchnorm2d ----
  void batchnorm2d_forward_train(float* out, float* mean, float* var, const float* inp,
                                 const float* w, const float* b, int B, int C, int HW, float eps,
                                 BnAct act, float slope) override {
    cuda::batchnorm2d_forward_train(out, mean, var, inp, w, b, B, C, HW, eps, act, slope, stream_,
                                    bn_scratch_);
  }
  void batchnorm2d_forward_eval(float* out, const float* inp, const float* w, const float* b,
                                const float* rm, const float* rv, int B, int C, int HW, float eps,
                                BnAct act, float slope) override {
    cuda::batchnorm2d_forward_eval(out, inp, w, b, rm, rv, B, C, HW, eps, act, slope, stream_);
  }
  void batchnorm2d_update_running(float* rm, float* rv, const float* mean, const float* var, int C,
                                  int64_t n, float momentum) override {
    cuda::batchnorm2d_update_running(rm, rv, mean, var, C, n, momentum, stream_);
  }
  void batchnorm2d_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                            const float* w, const float* mean, const float* var, int B, int C,
                            int HW, float eps, BnAct act, float slope,
                            const float* act_out) override {
    cuda::batchnorm2d_backward(dinp, dw, db, dout, inp, w, mean, var, B, C, HW, eps, act, slope,
                               act_out, stream_, bn_scratch_);
  }

  // ---- activations ----
  void relu_forward(float* out, const float* inp, size_t n) override {
    cuda::relu_forward(out, inp, n, stream_);
  }
  void relu_backward(float* dinp, const float* dout, const float* out, size_t n) override {
    cuda::relu_backward(dinp, dout, out, n, stream_);
  }
  void leaky_relu_forward(float* out, const float* inp, size_t n, float slope) override {
    cuda::leaky_relu_forward(out, inp, n, slope, stream_);
  }
  void leaky_relu_backward(float* dinp, const float* dout, const float* out, size_t n,
                           float slope) override {
    cuda::leaky_relu_backward(dinp, dout, out, n, slope, stream_);
  }
  void tanh_forward(float* out, const float* inp, size_t n) override {
    cuda::tanh_forward(out, inp, n, stream_);
  }
  void tanh_backward(float* dinp, const float* dout, const float* out, size_t n) override {
    cuda::tanh_backward(dinp, dout, out, n, stream_);
  }

  // ---- loss and optimiser ----
  void bce_with_logits_backward(float* dl, const float* logits, float target, int n,
                                float scale) override {
    cuda::bce_with_logits_backward(dl, logits, target, n, scale, stream_);
  }
  void adam_update(float* p, float* m, float* v, const float* g, size_t n, const AdamParams& ap,
                   int64_t step) override {
    cuda::adam_update(p, m, v, g, n, cuda::AdamParams{ap.lr, ap.beta1, ap.beta2, ap.eps}, step,
                      stream_);
  }
  bool all_finite(const float* x, size_t n) override {
    ++host_waits_;
    return cuda::all_finite(x, n, stream_);
  }
  // Only gannf-eval's classifier training uses these, and it trains on the CPU.
  double softmax_xent_forward(float*, const float*, const int32_t*, int, int) override {
    throw std::runtime_error(not_here("softmax_xent_forward"));
  }
  void softmax_xent_backward(float*, const float*, const int32_t*, int, int, float) override {
    throw std::runtime_error(not_here("softmax_xent_backward"));
  }

 private:
  std::string not_here(const char* op) const {
    return std::string(op) + " is not on the " + name() +
           " back end (train gannf-eval's classifier with --backend cpu)";
  }
  cudaDeviceProp prop_;
  int driver_, runtime_;
  cuda::ConvMath math_;
  bool use_graphs_ = [] {
    const char* e = std::getenv("GANNF_CUDA_GRAPHS");
    return e && std::string(e) == "1";
  }();
  std::vector<cudaGraphExec_t> graphs_;
  uint64_t replays_ = 0;
  Arena arena_;
  uint64_t host_waits_ = 0;
  cudaStream_t stream_ = nullptr;
  double* bn_scratch_ = nullptr;  // cuda::kBnScratchDoubles, from the arena
};

}  // namespace

// Checks, in order, what can stop the back end and throws std::runtime_error
// with one line naming the first problem and what to do about it. name:
// "cuda", or "cuda-tf32" / "cuda-bf16" (the convolutions on the tensor cores
// in TF32 / BF16, compute capability 8.0 on).
std::unique_ptr<Backend<float>> GANNF_CUDA_FACTORY(const std::string& name) {
  const auto* known = std::find_if(std::begin(kMaths), std::end(kMaths),
                                   [&](const auto& m) { return name == m.name; });
  if (known == std::end(kMaths))
    throw std::invalid_argument("make_cuda_backend: unknown CUDA back end '" + name + "'");
  const cuda::ConvMath math = known->math;
  int driver = 0, runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
    (void)cudaGetLastError();
    throw std::runtime_error(
        "cuda: no CUDA driver found (libcuda): install the NVIDIA driver or use --backend cpu");
  }
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
#ifndef GANNF_CUDA_EMULATE
    if (e == cudaErrorInsufficientDriver)
      throw std::runtime_error("cuda: the NVIDIA driver supports CUDA " + version_string(driver) +
                               " but this build needs " + version_string(runtime) +
                               ": update the driver or use --backend cpu");
#endif
    if (e == cudaSuccess || e == cudaErrorNoDevice)
      throw std::runtime_error(
          "cuda: no CUDA device visible (check nvidia-smi and CUDA_VISIBLE_DEVICES) -- use "
          "--backend cpu");
    throw std::runtime_error(std::string("cuda: the GPU could not be initialised: ") +
                             cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                             ") -- check nvidia-smi, or use --backend cpu");
  }
  // The first visible device; CUDA_VISIBLE_DEVICES picks another.
  const int device = 0;
  cudaDeviceProp prop;
  GANNF_CUDA_CHECK(cudaGetDeviceProperties(&prop, device), "reading the GPU's properties");
  if (prop.major < kMinMajor || (prop.major == kMinMajor && prop.minor < kMinMinor))
    throw std::runtime_error("cuda: GPU " + std::string(prop.name) + " has compute capability " +
                             std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                             "; gannf needs " + std::to_string(kMinMajor) + "." +
                             std::to_string(kMinMinor) + " or newer -- use --backend cpu");
  if (math != cuda::ConvMath::fp32 && prop.major < 8)
    throw std::runtime_error(name + ": GPU " + std::string(prop.name) +
                             " has compute capability " + std::to_string(prop.major) + "." +
                             std::to_string(prop.minor) + "; " +
                             (math == cuda::ConvMath::tf32 ? "TF32" : "BF16") +
                             " tensor cores need 8.0 (Ampere) or newer -- use --backend cuda");
  GANNF_CUDA_CHECK(cudaSetDevice(device), "selecting the GPU");
  const cudaError_t img = cuda::kernel_image_status();
  if (img != cudaSuccess)
    throw std::runtime_error("cuda: this build has no kernels for GPU " + std::string(prop.name) +
                             " (sm_" + std::to_string(prop.major * 10 + prop.minor) +
                             "; built for " + cuda::compiled_architectures() +
                             "): rebuild with -DGANNF_CUDA_ARCHS=native, or use --backend cpu");
  return std::make_unique<CudaBackend>(prop, driver, runtime, math);
}

}  // namespace gannf
