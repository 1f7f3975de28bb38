// Where a training step's time goes, op by op: a back-end decorator that
// times every kernel call the nets make and a table of the totals.
//
// Each timed call waits for the device before and after it (synchronize(),
// a no-op on the CPU), so on a GPU the figures include one launch and one
// wait per op and the ops no longer overlap the host's work: the table says
// which ops dominate, not how long an unsynchronised step takes (bench_step
// and bench_cuda time that). Memory traffic (upload, download, copy, zero)
// is not timed; it appears in the table's "rest" with the host's own work.
//
// Convolutions are counted in FLOPs (GFLOP/s column); the memory-bound ops
// (batch norm, activations, loss, Adam, finiteness) in the bytes they must
// move at least -- each tensor read once and written once, e.g. 2n floats
// for a batch-norm forward, 7n for Adam -- so their GB/s column compares
// with the machine's memory bandwidth (bench_step and bench_cuda print a
// measured copy rate beside the table).
//
//   OpTimingBackend<float> be(make_backend<float>("cpu"));  ... run steps ...
//   print_breakdown(stdout, be.rows(), steps, wall_seconds);
#pragma once
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "forwarding_backend.h"

namespace gannf::bench {

struct OpRow {
  double seconds = 0, flops = 0, bytes = 0;
  int64_t calls = 0;
};

template <class T>
class OpTimingBackend final : public ForwardingBackend<T> {
 public:
  explicit OpTimingBackend(std::unique_ptr<Backend<T>> inner)
      : ForwardingBackend<T>(std::move(inner)) {}
  // Totals by op: "conv 64->128 32x32 fwd", "bn 128x16x16 bwd", "adam", ...
  const std::map<std::string, OpRow>& rows() const { return rows_; }
  void reset() { rows_.clear(); }

  void conv2d_forward(T* out, const T* inp, const T* w, const ConvDims& d, T* ws,
                      size_t wn) override {
    timed(conv_name("conv", d, "fwd"), conv2d_flops(d),
          [&] { this->inner().conv2d_forward(out, inp, w, d, ws, wn); });
  }
  void conv2d_backward(T* dinp, T* dw, const T* dout, const T* inp, const T* w, const ConvDims& d,
                       T* ws, size_t wn) override {
    timed(conv_name("conv", d, "bwd"), conv2d_flops(d) * ((dinp != nullptr) + (dw != nullptr)),
          [&] { this->inner().conv2d_backward(dinp, dw, dout, inp, w, d, ws, wn); });
  }
  void conv_transpose2d_forward(T* out, const T* inp, const T* w, const ConvDims& d, T* ws,
                                size_t wn) override {
    timed(conv_name("convT", d, "fwd"), conv_transpose2d_flops(d),
          [&] { this->inner().conv_transpose2d_forward(out, inp, w, d, ws, wn); });
  }
  void conv_transpose2d_backward(T* dinp, T* dw, const T* dout, const T* inp, const T* w,
                                 const ConvDims& d, T* ws, size_t wn) override {
    timed(conv_name("convT", d, "bwd"),
          conv_transpose2d_flops(d) * ((dinp != nullptr) + (dw != nullptr)),
          [&] { this->inner().conv_transpose2d_backward(dinp, dw, dout, inp, w, d, ws, wn); });
  }
  void batchnorm2d_forward_train(T* out, T* mean, T* var, const T* inp, const T* w, const T* b,
                                 int B, int C, int HW, T eps, BnAct act, T slope) override {
    timed(bn_name("forward", act), 0, bytes_of(2.0 * B * C * HW), [&] {
      this->inner().batchnorm2d_forward_train(out, mean, var, inp, w, b, B, C, HW, eps, act, slope);
    });
  }
  void batchnorm2d_forward_eval(T* out, const T* inp, const T* w, const T* b, const T* rm,
                                const T* rv, int B, int C, int HW, T eps, BnAct act,
                                T slope) override {
    timed(bn_name("forward (eval)", act), 0, bytes_of(2.0 * B * C * HW), [&] {
      this->inner().batchnorm2d_forward_eval(out, inp, w, b, rm, rv, B, C, HW, eps, act, slope);
    });
  }
  void batchnorm2d_update_running(T* rm, T* rv, const T* mean, const T* var, int C, int64_t n,
                                  T momentum) override {
    timed("bn running statistics", 0, bytes_of(6.0 * C),
          [&] { this->inner().batchnorm2d_update_running(rm, rv, mean, var, C, n, momentum); });
  }
  void batchnorm2d_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w,
                            const T* mean, const T* var, int B, int C, int HW, T eps, BnAct act,
                            T slope, const T* act_out) override {
    timed(bn_name("backward", act), 0, bytes_of((act == BnAct::none ? 3.0 : 4.0) * B * C * HW),
          [&] {
            this->inner().batchnorm2d_backward(dinp, dw, db, dout, inp, w, mean, var, B, C, HW, eps,
                                               act, slope, act_out);
          });
  }
  void relu_forward(T* out, const T* inp, size_t n) override {
    timed("activations", 0, bytes_of(2.0 * n), [&] { this->inner().relu_forward(out, inp, n); });
  }
  void relu_backward(T* dinp, const T* dout, const T* out, size_t n) override {
    timed("activations", 0, bytes_of(3.0 * n),
          [&] { this->inner().relu_backward(dinp, dout, out, n); });
  }
  void leaky_relu_forward(T* out, const T* inp, size_t n, T slope) override {
    timed("activations", 0, bytes_of(2.0 * n),
          [&] { this->inner().leaky_relu_forward(out, inp, n, slope); });
  }
  void leaky_relu_backward(T* dinp, const T* dout, const T* out, size_t n, T slope) override {
    timed("activations", 0, bytes_of(3.0 * n),
          [&] { this->inner().leaky_relu_backward(dinp, dout, out, n, slope); });
  }
  void tanh_forward(T* out, const T* inp, size_t n) override {
    timed("activations", 0, bytes_of(2.0 * n), [&] { this->inner().tanh_forward(out, inp, n); });
  }
  void tanh_backward(T* dinp, const T* dout, const T* out, size_t n) override {
    timed("activations", 0, bytes_of(3.0 * n),
          [&] { this->inner().tanh_backward(dinp, dout, out, n); });
  }
  void bce_with_logits_backward(T* dl, const T* logits, T target, int n, T scale) override {
    timed("loss", 0, bytes_of(2.0 * n),
          [&] { this->inner().bce_with_logits_backward(dl, logits, target, n, scale); });
  }
  void adam_update(T* p, T* m, T* v, const T* g, size_t n, const AdamParams& ap,
                   int64_t step) override {
    timed("adam", 0, bytes_of(7.0 * n),
          [&] { this->inner().adam_update(p, m, v, g, n, ap, step); });
  }
  bool all_finite(const T* x, size_t n) override {
    bool r = true;
    timed("finiteness checks", 0, bytes_of(n), [&] { r = this->inner().all_finite(x, n); });
    return r;
  }

 private:
  // "bn + relu backward": which activation rode along.
  static std::string bn_name(const char* pass, BnAct act) {
    return std::string("bn") +
           (act == BnAct::relu         ? " + relu "
            : act == BnAct::leaky_relu ? " + leaky relu "
                                       : " ") +
           pass;
  }
  // "conv 64->128 32x32 fwd": channels in -> out, the input's spatial size.
  static std::string conv_name(const char* kind, const ConvDims& d, const char* pass) {
    return std::string(kind) + " " + std::to_string(d.C_in) + "->" + std::to_string(d.C_out) + " " +
           std::to_string(d.H_in) + "x" + std::to_string(d.W_in) + " " + pass;
  }
  // Bytes of n elements.
  static double bytes_of(double n) { return n * sizeof(T); }
  template <class F>
  void timed(const std::string& key, double flops, F&& f) {
    timed(key, flops, 0, std::forward<F>(f));
  }
  template <class F>
  void timed(const std::string& key, double flops, double bytes, F&& f) {
    this->inner().synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    this->inner().synchronize();
    OpRow& r = rows_[key];
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.flops += flops;
    r.bytes += bytes;
    r.calls++;
  }
  std::map<std::string, OpRow> rows_;
};

// The table: one row per op (convolutions by layer and pass, with GFLOP/s),
// milliseconds per step and share of the step, largest first, then the rest
// of the step's wall time (host work, memory copies, waits).
inline void print_breakdown(FILE* out, const std::map<std::string, OpRow>& rows, int steps,
                            double wall_seconds, const std::string& title) {
  std::multimap<double, std::pair<std::string, OpRow>, std::greater<>> sorted;
  double timed = 0;
  for (auto& [k, r] : rows) {
    sorted.insert({r.seconds, {k, r}});
    timed += r.seconds;
  }
  std::fprintf(out, "# where a step goes: %s, %d steps, %.1f ms a step (each op timed alone)\n",
               title.c_str(), steps, 1e3 * wall_seconds / steps);
  std::fprintf(out, "#   %-34s %9s %7s %9s %7s %6s\n", "op", "ms/step", "share", "GFLOP/s", "GB/s",
               "calls");
  for (auto& [s, kr] : sorted) {
    const auto& [k, r] = kr;
    char rate[32] = "", bw[32] = "";
    if (r.flops > 0) std::snprintf(rate, sizeof rate, "%.0f", r.flops / r.seconds / 1e9);
    if (r.bytes > 0) std::snprintf(bw, sizeof bw, "%.1f", r.bytes / r.seconds / 1e9);
    std::fprintf(out, "#   %-34s %9.3f %6.1f%% %9s %7s %6lld\n", k.c_str(), 1e3 * s / steps,
                 100 * s / wall_seconds, rate, bw, (long long)(r.calls / steps));
  }
  std::fprintf(out, "#   %-34s %9.3f %6.1f%%\n", "rest (host, copies, waits)",
               1e3 * (wall_seconds - timed) / steps, 100 * (wall_seconds - timed) / wall_seconds);
}

}  // namespace gannf::bench
