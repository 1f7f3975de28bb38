// A back end that forwards every call to another one: the base of decorators
// that watch or alter a few calls and pass the rest through untouched
// (cluster::RecordingBackend records BN statistics; tf32_reference.h's
// Tf32RoundingCpu rounds convolution operands). A derived class overrides
// only what it changes and calls ForwardingBackend's version, or inner(), for
// the rest.
//
// Every virtual function of Backend is forwarded. A new pure virtual there
// breaks this build (good); a new one with a default body must be added here.
#pragma once
#include <memory>
#include <string>

#include "backend.h"

namespace gannf {

template <class T>
class ForwardingBackend : public Backend<T> {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend<T>> inner) : in_(std::move(inner)) {}
  Backend<T>& inner() { return *in_; }

  std::string name() const override { return in_->name(); }
  std::string describe() const override { return in_->describe(); }
  T* alloc(size_t n) override { return in_->alloc(n); }
  void release(T* p) override { in_->release(p); }
  void upload(T* d, const T* s, size_t n) override { in_->upload(d, s, n); }
  void download(T* d, const T* s, size_t n) override { in_->download(d, s, n); }
  void zero(T* p, size_t n) override { in_->zero(p, n); }
  uint64_t host_waits() const override { return in_->host_waits(); }
  std::string device_name() const override { return in_->device_name(); }
  uint64_t device_memory_bytes() const override { return in_->device_memory_bytes(); }
  void copy(T* d, const T* s, size_t n) override { in_->copy(d, s, n); }
  void synchronize() override { in_->synchronize(); }
  size_t conv2d_workspace(const ConvDims& d) override { return in_->conv2d_workspace(d); }
  size_t conv_transpose2d_workspace(const ConvDims& d) override {
    return in_->conv_transpose2d_workspace(d);
  }
  void conv2d_forward(T* out, const T* inp, const T* w, const ConvDims& d, T* ws,
                      size_t wn) override {
    in_->conv2d_forward(out, inp, w, d, ws, wn);
  }
  void conv2d_backward(T* dinp, T* dw, const T* dout, const T* inp, const T* w, const ConvDims& d,
                       T* ws, size_t wn) override {
    in_->conv2d_backward(dinp, dw, dout, inp, w, d, ws, wn);
  }
  void conv_transpose2d_forward(T* out, const T* inp, const T* w, const ConvDims& d, T* ws,
                                size_t wn) override {
    in_->conv_transpose2d_forward(out, inp, w, d, ws, wn);
  }
  void conv_transpose2d_backward(T* dinp, T* dw, const T* dout, const T* inp, const T* w,
                                 const ConvDims& d, T* ws, size_t wn) override {
    in_->conv_transpose2d_backward(dinp, dw, dout, inp, w, d, ws, wn);
  }
  void batchnorm2d_forward_train(T* out, T* mean, T* var, const T* inp, const T* w, const T* b,
                                 int B, int C, int HW, T eps, BnAct act, T slope) override {
    in_->batchnorm2d_forward_train(out, mean, var, inp, w, b, B, C, HW, eps, act, slope);
  }
  void batchnorm2d_forward_eval(T* out, const T* inp, const T* w, const T* b, const T* rm,
                                const T* rv, int B, int C, int HW, T eps, BnAct act,
                                T slope) override {
    in_->batchnorm2d_forward_eval(out, inp, w, b, rm, rv, B, C, HW, eps, act, slope);
  }
  void batchnorm2d_update_running(T* rm, T* rv, const T* mean, const T* var, int C, int64_t n,
                                  T momentum) override {
    in_->batchnorm2d_update_running(rm, rv, mean, var, C, n, momentum);
  }
  void batchnorm2d_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w,
                            const T* mean, const T* var, int B, int C, int HW, T eps, BnAct act,
                            T slope, const T* act_out) override {
    in_->batchnorm2d_backward(dinp, dw, db, dout, inp, w, mean, var, B, C, HW, eps, act, slope,
                              act_out);
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
  void adam_update(T* p, T* m, T* v, const T* g, size_t n, const AdamParams& ap,
                   int64_t step) override {
    in_->adam_update(p, m, v, g, n, ap, step);
  }
  double softmax_xent_forward(T* probs, const T* logits, const int32_t* targets, int B,
                              int C) override {
    return in_->softmax_xent_forward(probs, logits, targets, B, C);
  }
  void softmax_xent_backward(T* dl, const T* probs, const int32_t* targets, int B, int C,
                             T scale) override {
    in_->softmax_xent_backward(dl, probs, targets, B, C, scale);
  }
  bool all_finite(const T* x, size_t n) override { return in_->all_finite(x, n); }

 private:
  std::unique_ptr<Backend<T>> in_;
};

}  // namespace gannf
