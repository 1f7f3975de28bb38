// A back end that records the BN batch statistics of every training forward.
//
// A worker must send the coordinator exactly the (mean, biased variance) that
// a local step would fold into the running statistics: G's of its one forward
// per micro-batch, D's of the real pass and then of the fake pass. GanStep
// runs all three forwards inside accumulate(), and each overwrites the net's
// batch-statistics cache, so the worker cannot read them afterwards. Every
// one of them, however, goes through Backend::batchnorm2d_update_running() in
// order, once per BN layer; this decorator copies its arguments to the host
// on the way through (2·C floats per layer: nothing next to a forward pass)
// and forwards everything else untouched, so the numbers are the very ones
// local training uses.
//
// Every virtual function of Backend is forwarded. A new pure virtual there
// breaks this build (good); a new one with a default body must be added here.
#pragma once
#include <memory>
#include <vector>

#include "backend.h"

namespace gannf::cluster {

template <class T>
class RecordingBackend final : public Backend<T> {
 public:
  explicit RecordingBackend(std::unique_ptr<Backend<T>> inner) : in_(std::move(inner)) {}

  // One update_running call: which running_mean it updated, and where its
  // (mean[C], var[C]) sit in values().
  struct Call {
    const T* running_mean;
    int C;
    int64_t n;
    size_t offset;
  };
  void clear() {
    calls_.clear();
    values_.clear();
  }
  const std::vector<Call>& calls() const { return calls_; }
  // The (mean, var) pairs of the calls that updated running statistics inside
  // [stats, stats + n), in call order: for a net's forwards, one copy of its
  // running-stats layout per forward (running_mean, running_var per BN layer).
  std::vector<T> stats_of(const T* stats, size_t n) const {
    std::vector<T> out;
    for (const Call& c : calls_)
      if (c.running_mean >= stats && c.running_mean < stats + n)
        out.insert(out.end(), values_.begin() + c.offset, values_.begin() + c.offset + 2 * c.C);
    return out;
  }
  Backend<T>& inner() { return *in_; }

  std::string name() const override { return in_->name(); }
  std::string describe() const override { return in_->describe(); }
  T* alloc(size_t n) override { return in_->alloc(n); }
  void release(T* p) override { in_->release(p); }
  void upload(T* d, const T* s, size_t n) override { in_->upload(d, s, n); }
  void download(T* d, const T* s, size_t n) override { in_->download(d, s, n); }
  void zero(T* p, size_t n) override { in_->zero(p, n); }
  void copy(T* d, const T* s, size_t n) override { in_->copy(d, s, n); }
  void synchronize() override { in_->synchronize(); }
  size_t conv2d_workspace(const ConvDims& d) override { return in_->conv2d_workspace(d); }
  size_t conv_transpose2d_workspace(const ConvDims& d) override { return in_->conv_transpose2d_workspace(d); }
  void conv2d_forward(T* out, const T* inp, const T* w, const ConvDims& d, T* ws, size_t wn) override {
    in_->conv2d_forward(out, inp, w, d, ws, wn);
  }
  void conv2d_backward(T* dinp, T* dw, const T* dout, const T* inp, const T* w, const ConvDims& d, T* ws,
                       size_t wn) override {
    in_->conv2d_backward(dinp, dw, dout, inp, w, d, ws, wn);
  }
  void conv_transpose2d_forward(T* out, const T* inp, const T* w, const ConvDims& d, T* ws,
                                size_t wn) override {
    in_->conv_transpose2d_forward(out, inp, w, d, ws, wn);
  }
  void conv_transpose2d_backward(T* dinp, T* dw, const T* dout, const T* inp, const T* w, const ConvDims& d,
                                 T* ws, size_t wn) override {
    in_->conv_transpose2d_backward(dinp, dw, dout, inp, w, d, ws, wn);
  }
  void batchnorm2d_forward_train(T* out, T* mean, T* var, const T* inp, const T* w, const T* b, int B, int C,
                                 int HW, T eps) override {
    in_->batchnorm2d_forward_train(out, mean, var, inp, w, b, B, C, HW, eps);
  }
  void batchnorm2d_forward_eval(T* out, const T* inp, const T* w, const T* b, const T* rm, const T* rv, int B,
                                int C, int HW, T eps) override {
    in_->batchnorm2d_forward_eval(out, inp, w, b, rm, rv, B, C, HW, eps);
  }
  void batchnorm2d_update_running(T* rm, T* rv, const T* mean, const T* var, int C, int64_t n,
                                  T momentum) override {
    const size_t off = values_.size();
    values_.resize(off + 2 * (size_t)C);
    in_->download(values_.data() + off, mean, (size_t)C);
    in_->download(values_.data() + off + C, var, (size_t)C);
    calls_.push_back({rm, C, n, off});
    in_->batchnorm2d_update_running(rm, rv, mean, var, C, n, momentum);
  }
  void batchnorm2d_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const T* mean,
                            const T* var, int B, int C, int HW, T eps) override {
    in_->batchnorm2d_backward(dinp, dw, db, dout, inp, w, mean, var, B, C, HW, eps);
  }
  void relu_forward(T* out, const T* inp, size_t n) override { in_->relu_forward(out, inp, n); }
  void relu_backward(T* dinp, const T* dout, const T* out, size_t n) override {
    in_->relu_backward(dinp, dout, out, n);
  }
  void leaky_relu_forward(T* out, const T* inp, size_t n, T slope) override {
    in_->leaky_relu_forward(out, inp, n, slope);
  }
  void leaky_relu_backward(T* dinp, const T* dout, const T* out, size_t n, T slope) override {
    in_->leaky_relu_backward(dinp, dout, out, n, slope);
  }
  void tanh_forward(T* out, const T* inp, size_t n) override { in_->tanh_forward(out, inp, n); }
  void tanh_backward(T* dinp, const T* dout, const T* out, size_t n) override {
    in_->tanh_backward(dinp, dout, out, n);
  }
  void bce_with_logits_backward(T* dl, const T* logits, T target, int n, T scale) override {
    in_->bce_with_logits_backward(dl, logits, target, n, scale);
  }
  void adam_update(T* p, T* m, T* v, const T* g, size_t n, const AdamParams& ap, int64_t step) override {
    in_->adam_update(p, m, v, g, n, ap, step);
  }
  bool all_finite(const T* x, size_t n) override { return in_->all_finite(x, n); }

 private:
  std::unique_ptr<Backend<T>> in_;
  std::vector<Call> calls_;
  std::vector<T> values_;
};

}  // namespace gannf::cluster
