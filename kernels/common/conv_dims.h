// Geometry of a 2-D convolution, shared by both back ends (kernels/cpu and
// kernels/cuda take the same ConvDims, so the layers above them compute it
// once). Header-only: the CUDA library links nothing of the CPU one.
// For conv2d:            in (B, C_in, H_in, W_in) -> out (B, C_out, H_out, W_out)
//                        H_out = (H_in + 2*pad - K) / stride + 1
// For conv_transpose2d:  in (B, C_in, H_in, W_in) -> out (B, C_out, H_out, W_out)
//                        H_out = (H_in - 1) * stride - 2*pad + K
#pragma once
#include <stdexcept>
#include <string>

namespace gannf {

struct ConvDims {
  int B = 0, C_in = 0, H_in = 0, W_in = 0;
  int C_out = 0, H_out = 0, W_out = 0;
  int K = 0, stride = 1, pad = 0;
};

// Throws std::invalid_argument naming the dimensions when any is out of range.
inline void check_conv_dims(const ConvDims& d) {
  if (d.B <= 0 || d.C_in <= 0 || d.C_out <= 0 || d.H_in <= 0 || d.W_in <= 0 || d.K <= 0 || d.stride <= 0 ||
      d.pad < 0 || d.H_out <= 0 || d.W_out <= 0)
    throw std::invalid_argument("conv: bad dimensions (B=" + std::to_string(d.B) + " C_in=" + std::to_string(d.C_in) +
                                " C_out=" + std::to_string(d.C_out) + " H_in=" + std::to_string(d.H_in) +
                                " K=" + std::to_string(d.K) + ")");
}

// Fill H_out/W_out from the others; throw std::invalid_argument on a geometry
// that gives an empty output.
inline ConvDims conv_dims(int B, int C_in, int H_in, int W_in, int C_out, int K, int stride, int pad) {
  ConvDims d{B, C_in, H_in, W_in, C_out, 0, 0, K, stride, pad};
  if (stride <= 0 || K <= 0) throw std::invalid_argument("conv: stride and kernel must be > 0");
  const int hn = H_in + 2 * pad - K, wn = W_in + 2 * pad - K;
  if (hn < 0 || wn < 0) throw std::invalid_argument("conv: kernel larger than padded input");
  d.H_out = hn / stride + 1;
  d.W_out = wn / stride + 1;
  check_conv_dims(d);
  return d;
}
inline ConvDims conv_transpose_dims(int B, int C_in, int H_in, int W_in, int C_out, int K, int stride, int pad) {
  ConvDims d{B, C_in, H_in, W_in, C_out, 0, 0, K, stride, pad};
  d.H_out = (H_in - 1) * stride - 2 * pad + K;
  d.W_out = (W_in - 1) * stride - 2 * pad + K;
  check_conv_dims(d);
  return d;
}

// FLOPs of one forward pass: one multiply-add (2 FLOPs) per (grid position,
// tap, input channel, output channel); the grid is the output for conv and
// the input for transposed conv. Backward data and backward weight each cost
// the same again.
inline double conv2d_flops(const ConvDims& d) { return 2.0 * d.B * d.C_in * d.C_out * d.K * d.K * d.H_out * d.W_out; }
inline double conv_transpose2d_flops(const ConvDims& d) {
  return 2.0 * d.B * d.C_in * d.C_out * d.K * d.K * d.H_in * d.W_in;
}

}  // namespace gannf
