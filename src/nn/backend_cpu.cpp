// The CPU back end: a thin forwarding layer over kernels/cpu.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>

#include "backend.h"
#include "blas_runtime.h"

namespace gannf {

template <class T>
class CpuBackend final : public Backend<T> {
 public:
  std::string name() const override { return "cpu"; }
  std::string describe() const override {
    return cpu::cpu_model() + ", " + std::to_string(omp_get_max_threads()) + " threads, " +
           cpu::blas_summary();
  }
  T* alloc(size_t n) override {
    // 64-byte alignment: one cache line, and what AVX-512 loads like.
    void* p = std::aligned_alloc(64, ((n * sizeof(T) + 63) / 64) * 64);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, n * sizeof(T));
    return (T*)p;
  }
  void release(T* p) override { std::free(p); }
  void upload(T* dst, const T* src, size_t n) override {
    if (dst != src) std::memcpy(dst, src, n * sizeof(T));
  }
  void download(T* dst, const T* src, size_t n) override {
    if (dst != src) std::memcpy(dst, src, n * sizeof(T));
  }
  void zero(T* p, size_t n) override { std::memset(p, 0, n * sizeof(T)); }
  void copy(T* dst, const T* src, size_t n) override {
    if (dst != src) std::memmove(dst, src, n * sizeof(T));
  }

  size_t conv2d_workspace(const ConvDims& d) override { return cpu::conv2d_workspace_size(d); }
  size_t conv_transpose2d_workspace(const ConvDims& d) override {
    return cpu::conv_transpose2d_workspace_size(d);
  }
  void conv2d_forward(T* out, const T* inp, const T* w, const ConvDims& d, T* ws,
                      size_t n) override {
    cpu::conv2d_forward(out, inp, w, d, ws, n);
  }
  void conv2d_backward(T* dinp, T* dw, const T* dout, const T* inp, const T* w, const ConvDims& d,
                       T* ws, size_t n) override {
    cpu::conv2d_backward(dinp, dw, dout, inp, w, d, ws, n);
  }
  void conv_transpose2d_forward(T* out, const T* inp, const T* w, const ConvDims& d, T* ws,
                                size_t n) override {
    cpu::conv_transpose2d_forward(out, inp, w, d, ws, n);
  }
  void conv_transpose2d_backward(T* dinp, T* dw, const T* dout, const T* inp, const T* w,
                                 const ConvDims& d, T* ws, size_t n) override {
    cpu::conv_transpose2d_backward(dinp, dw, dout, inp, w, d, ws, n);
  }

  void batchnorm2d_forward_train(T* out, T* mean, T* var, const T* inp, const T* w, const T* b,
                                 int B, int C, int HW, T eps, BnAct act, T slope) override {
    cpu::batchnorm2d_forward_train(out, mean, var, inp, w, b, B, C, HW, eps, act, slope);
  }
  void batchnorm2d_forward_eval(T* out, const T* inp, const T* w, const T* b, const T* rm,
                                const T* rv, int B, int C, int HW, T eps, BnAct act,
                                T slope) override {
    cpu::batchnorm2d_forward_eval(out, inp, w, b, rm, rv, B, C, HW, eps, act, slope);
  }
  void batchnorm2d_update_running(T* rm, T* rv, const T* mean, const T* var, int C, int64_t n,
                                  T momentum) override {
    cpu::batchnorm2d_update_running(rm, rv, mean, var, C, n, momentum);
  }
  void batchnorm2d_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w,
                            const T* mean, const T* var, int B, int C, int HW, T eps, BnAct act,
                            T slope, const T* act_out) override {
    cpu::batchnorm2d_backward(dinp, dw, db, dout, inp, w, mean, var, B, C, HW, eps, act, slope,
                              act_out);
  }

  void relu_forward(T* out, const T* inp, size_t n) override { cpu::relu_forward(out, inp, n); }
  void relu_backward(T* dinp, const T* dout, const T* out, size_t n) override {
    cpu::relu_backward(dinp, dout, out, n);
  }
  void leaky_relu_forward(T* out, const T* inp, size_t n, T slope) override {
    cpu::leaky_relu_forward(out, inp, n, slope);
  }
  void leaky_relu_backward(T* dinp, const T* dout, const T* out, size_t n, T slope) override {
    cpu::leaky_relu_backward(dinp, dout, out, n, slope);
  }
  void tanh_forward(T* out, const T* inp, size_t n) override { cpu::tanh_forward(out, inp, n); }
  void tanh_backward(T* dinp, const T* dout, const T* out, size_t n) override {
    cpu::tanh_backward(dinp, dout, out, n);
  }
  void bce_with_logits_backward(T* dl, const T* logits, T target, int n, T scale) override {
    cpu::bce_with_logits_backward(dl, logits, target, n, scale);
  }
  void adam_update(T* p, T* m, T* v, const T* g, size_t n, const AdamParams& ap,
                   int64_t step) override {
    cpu::adam_update(p, m, v, g, n, ap, step);
  }
  double softmax_xent_forward(T* probs, const T* logits, const int32_t* targets, int B,
                              int C) override {
    return cpu::softmax_xent_forward(probs, logits, targets, B, C);
  }
  void softmax_xent_backward(T* dl, const T* probs, const int32_t* targets, int B, int C,
                             T scale) override {
    cpu::softmax_xent_backward(dl, probs, targets, B, C, scale);
  }
  bool all_finite(const T* x, size_t n) override { return cpu::all_finite(x, n); }
};

#ifdef GANNF_HAVE_CUDA
std::unique_ptr<Backend<float>> make_cuda_backend(const std::string& name);  // src/nn/backend_cuda.cpp
#endif

namespace {
struct Registered {
  std::mutex mu;
  std::map<std::string, std::function<std::unique_ptr<Backend<float>>()>> factories;
};
Registered& registered() {
  static Registered r;
  return r;
}
}  // namespace

void register_backend(const std::string& name,
                      std::function<std::unique_ptr<Backend<float>>()> factory) {
  std::lock_guard<std::mutex> lock(registered().mu);
  registered().factories[name] = std::move(factory);
}

template <>
std::unique_ptr<Backend<float>> make_backend<float>(const std::string& name) {
  {
    std::function<std::unique_ptr<Backend<float>>()> f;
    {
      std::lock_guard<std::mutex> lock(registered().mu);
      auto it = registered().factories.find(name);
      if (it != registered().factories.end()) f = it->second;
    }
    if (f) return f();
  }
  if (name == "cpu") return std::make_unique<CpuBackend<float>>();
  if (name == "auto") {
    // The GPU when there is a usable one, else the CPU -- saying why, since a
    // student with a GPU expects it to be used.
    try {
      return make_backend<float>("cuda");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "gannf: --backend auto: using the CPU (%s)\n", e.what());
      return std::make_unique<CpuBackend<float>>();
    }
  }
  if (name == "cuda" || name == "cuda-tf32" || name == "cuda-bf16") {
#ifdef GANNF_HAVE_CUDA
    return make_cuda_backend(name);
#else
    throw std::runtime_error(
        "backend '" + name + "': this build has no CUDA back end (nvcc was not found when it "
        "was configured); use --backend cpu or rebuild on a machine with the CUDA toolkit");
#endif
  }
  throw std::runtime_error("unknown backend '" + name +
                           "' (choose cpu, cuda, cuda-tf32, cuda-bf16 or auto)");
}
template <>
std::unique_ptr<Backend<double>> make_backend<double>(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend<double>>();
  throw std::runtime_error("backend '" + name + "' has no double-precision path; only cpu does");
}

}  // namespace gannf
