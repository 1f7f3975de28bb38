// What a TF32 or BF16 convolution computes, on the CPU: the reference of the
// cuda-tf32 and cuda-bf16 back ends' tests and of their start-up self-check
// (self_check.h).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "forwarding_backend.h"

namespace gannf {

// f rounded to TF32 as cvt.rna.tf32.f32 does: 10 mantissa bits, to nearest,
// ties away from zero (the low 13 bits cleared); inf and NaN unchanged.
inline float tf32_round(float f) {
  if (!std::isfinite(f)) return f;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x1000u) & ~0x1fffu;
  std::memcpy(&f, &u, 4);
  return f;
}

// f rounded to BF16 as the staged kernels round it (bf16_bits in
// kernels/cuda/mma.cuh, of which this is the host twin): 8 mantissa bits, to
// nearest, ties to even; its 16 bits. A NaN stays a NaN (quieted), inf inf.
inline uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
// The float a BF16 value's 16 bits stand for (exact).
inline float bf16_value(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// f rounded to BF16, as a float (the low 16 bits cleared).
inline float bf16_round(float f) { return bf16_value(bf16_bits(f)); }

// The CPU back end in double, except that every convolution first rounds its
// operands (input, weight, output gradient) through float with `round`, as
// the tensor-core kernels round their float operands (TF32 or BF16). A
// cuda-tf32 step matches Tf32RoundingCpu about as closely as an FP32 step
// matches the plain double path, near the input; deeper layers drift further
// apart (kernels/cuda/README.md).
class OperandRoundingCpu : public ForwardingBackend<double> {
 public:
  OperandRoundingCpu(float (*round)(float), std::string name)
      : ForwardingBackend<double>(make_backend<double>("cpu")), round_(round), name_(std::move(name)) {}
  std::string name() const override { return name_; }
  void conv2d_forward(double* out, const double* inp, const double* w, const ConvDims& d,
                      double* ws, size_t n) override {
    inner().conv2d_forward(out, r(0, inp, in_n(d)), r(1, w, w_n(d)), d, ws, n);
  }
  void conv2d_backward(double* dinp, double* dw, const double* dout, const double* inp,
                       const double* w, const ConvDims& d, double* ws, size_t n) override {
    inner().conv2d_backward(dinp, dw, r(2, dout, out_n(d)), r(0, inp, in_n(d)), r(1, w, w_n(d)),
                            d, ws, n);
  }
  void conv_transpose2d_forward(double* out, const double* inp, const double* w,
                                const ConvDims& d, double* ws, size_t n) override {
    inner().conv_transpose2d_forward(out, r(0, inp, in_n(d)), r(1, w, w_n(d)), d, ws, n);
  }
  void conv_transpose2d_backward(double* dinp, double* dw, const double* dout, const double* inp,
                                 const double* w, const ConvDims& d, double* ws,
                                 size_t n) override {
    inner().conv_transpose2d_backward(dinp, dw, r(2, dout, out_n(d)), r(0, inp, in_n(d)),
                                      r(1, w, w_n(d)), d, ws, n);
  }

 private:
  static size_t in_n(const ConvDims& d) { return (size_t)d.B * d.C_in * d.H_in * d.W_in; }
  static size_t out_n(const ConvDims& d) { return (size_t)d.B * d.C_out * d.H_out * d.W_out; }
  static size_t w_n(const ConvDims& d) { return (size_t)d.C_in * d.C_out * d.K * d.K; }
  // Operand `slot` rounded through float (the GPU rounds its floats).
  const double* r(int slot, const double* x, size_t n) {
    auto& v = tmp_[slot];
    v.resize(n);
    for (size_t i = 0; i < n; i++) v[i] = round_((float)x[i]);
    return v.data();
  }
  float (*round_)(float);
  std::string name_;
  std::vector<double> tmp_[3];
};
class Tf32RoundingCpu final : public OperandRoundingCpu {
 public:
  Tf32RoundingCpu() : OperandRoundingCpu(tf32_round, "cpu-double-tf32-operands") {}
};
class Bf16RoundingCpu final : public OperandRoundingCpu {
 public:
  Bf16RoundingCpu() : OperandRoundingCpu(bf16_round, "cpu-double-bf16-operands") {}
};

}  // namespace gannf
