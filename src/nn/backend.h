// The back-end interface: the model calls these, and they dispatch to the CPU
// kernels (kernels/cpu) or the CUDA kernels (kernels/cuda) without model code
// changing. Pointers are the back end's own memory (host for cpu, device for
// cuda); only upload/download cross over. Signatures follow kernels/cpu/ops.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "ops.h"

namespace gannf {

using cpu::AdamParams;

template <class T>
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // One line describing the device (CPU model and BLAS core, or GPU name).
  virtual std::string describe() const = 0;

  // ---- memory ----
  virtual T* alloc(size_t n) = 0;  // zero-filled
  virtual void release(T* p) = 0;
  virtual void upload(T* dst, const T* host_src, size_t n) = 0;
  virtual void download(T* host_dst, const T* src, size_t n) = 0;
  virtual void zero(T* p, size_t n) = 0;
  virtual void copy(T* dst, const T* src, size_t n) = 0;
  virtual void synchronize() {}
  // How many times the host has waited for the device so far (downloads,
  // uploads, finiteness checks, synchronize): 0 where nothing runs
  // asynchronously (the CPU). The tests hold a GPU step's count to a small
  // number that does not grow with the number of layers.
  virtual uint64_t host_waits() const { return 0; }
  // The device the ops run on, for a cluster's list of workers: a GPU's
  // model name and memory; "" and 0 for the CPU back end (describe() is the
  // long form, for people).
  virtual std::string device_name() const { return ""; }
  virtual uint64_t device_memory_bytes() const { return 0; }

  // ---- graphs (a GanStep's passes replayed as one CUDA graph) ----
  // set_graphs(on): whether begin_capture() may capture; returns whether the
  // back end can do as asked (false for on where it cannot capture -- the
  // default, and every wrapper's, since a wrapper's own host work would not
  // be replayed). begin_capture(): device work is recorded
  // from now on instead of run; false where graphs are off or unsupported
  // (nothing changed). end_capture(): the recorded work as a graph, a
  // handle > 0; replay(g) runs it again: the same kernels with the same
  // arguments on the same buffers. No host wait may happen inside a capture.
  virtual bool set_graphs(bool on) { return !on; }
  virtual bool begin_capture() { return false; }
  virtual uint64_t end_capture() { return 0; }
  virtual void replay(uint64_t graph) { (void)graph; }
  virtual uint64_t graph_replays() const { return 0; }  // replay() calls so far

  // ---- convolutions ----
  virtual size_t conv2d_workspace(const ConvDims& d) = 0;
  virtual size_t conv_transpose2d_workspace(const ConvDims& d) = 0;
  virtual void conv2d_forward(T* out, const T* inp, const T* weight, const ConvDims& d, T* ws,
                              size_t ws_size) = 0;
  virtual void conv2d_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                               const ConvDims& d, T* ws, size_t ws_size) = 0;
  virtual void conv_transpose2d_forward(T* out, const T* inp, const T* weight, const ConvDims& d,
                                        T* ws, size_t ws_size) = 0;
  virtual void conv_transpose2d_backward(T* dinp, T* dweight, const T* dout, const T* inp,
                                         const T* weight, const ConvDims& d, T* ws,
                                         size_t ws_size) = 0;

  // ---- batchnorm2d ----
  // act: a ReLU / LeakyReLU (slope) fused in, or BnAct::none (kernels/common/bn_act.h).
  virtual void batchnorm2d_forward_train(T* out, T* mean, T* var, const T* inp, const T* weight,
                                         const T* bias, int B, int C, int HW, T eps, BnAct act,
                                         T slope) = 0;
  virtual void batchnorm2d_forward_eval(T* out, const T* inp, const T* weight, const T* bias,
                                        const T* running_mean, const T* running_var, int B,
                                        int C, int HW, T eps, BnAct act, T slope) = 0;
  virtual void batchnorm2d_update_running(T* running_mean, T* running_var, const T* mean,
                                          const T* var, int C, int64_t n, T momentum) = 0;
  // With a fused act, dout is the gradient of act's output and act_out that output.
  virtual void batchnorm2d_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                                    const T* weight, const T* mean, const T* var, int B, int C,
                                    int HW, T eps, BnAct act, T slope, const T* act_out) = 0;

  // ---- activations ----
  virtual void relu_forward(T* out, const T* inp, size_t n) = 0;
  virtual void relu_backward(T* dinp, const T* dout, const T* out, size_t n) = 0;
  virtual void leaky_relu_forward(T* out, const T* inp, size_t n, T slope) = 0;
  virtual void leaky_relu_backward(T* dinp, const T* dout, const T* out, size_t n, T slope) = 0;
  virtual void tanh_forward(T* out, const T* inp, size_t n) = 0;
  virtual void tanh_backward(T* dinp, const T* dout, const T* out, size_t n) = 0;

  // ---- loss and optimiser ----
  virtual void bce_with_logits_backward(T* dlogits, const T* logits, T target, int n,
                                        T scale) = 0;
  virtual void adam_update(T* params, T* m, T* v, const T* grads, size_t n, const AdamParams& p,
                           int64_t step) = 0;
  // Softmax cross-entropy (gannf-eval's classifier): returns the mean loss and
  // caches the softmax in probs. targets are HOST memory (B labels: a few
  // bytes a step). A back end without these ops throws std::runtime_error
  // saying so, before touching anything.
  virtual double softmax_xent_forward(T* probs, const T* logits, const int32_t* targets, int B,
                                      int C) = 0;
  virtual void softmax_xent_backward(T* dlogits, const T* probs, const int32_t* targets, int B,
                                     int C, T scale) = 0;
  virtual bool all_finite(const T* x, size_t n) = 0;
};

// "cpu" always; "cuda" where the CUDA back end is built and a usable GPU is
// present; "cuda-tf32" / "cuda-bf16", the same with the convolutions on the
// tensor cores in TF32 / BF16 (opt-in, compute capability 8.0 or newer; see
// kernels/cuda/ops.cuh);
// "auto" (float only), "cuda" when that works, else "cpu" with one line on
// stderr saying why -- name() then tells which. Throws std::runtime_error
// with one line that says what is missing.
template <class T>
std::unique_ptr<Backend<T>> make_backend(const std::string& name);

// Another float back end under a name of its own, which make_backend<float>
// then returns: how the tests run whole programs' code (gannf-train's Trainer)
// on the emulated GPU ("cuda-emu"). Registered names come before the built-in
// ones.
void register_backend(const std::string& name,
                      std::function<std::unique_ptr<Backend<float>>()> factory);

// A device buffer owned by a back end (RAII).
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend<T>& be, size_t n) : be_(&be), n_(n), p_(n ? be.alloc(n) : nullptr) {}
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept : be_(o.be_), n_(o.n_), p_(o.p_) { o.p_ = nullptr; o.n_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_; n_ = o.n_; p_ = o.p_;
      o.p_ = nullptr; o.n_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void reset() {
    if (p_) be_->release(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  Backend<T>* be_ = nullptr;
  size_t n_ = 0;
  T* p_ = nullptr;
};

}  // namespace gannf
