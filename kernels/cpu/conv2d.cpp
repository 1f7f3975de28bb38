// conv2d (no bias), forward and backward, as im2col + sgemm over chunks of images.
//
// A chunk of nb images is unrolled into one col matrix (C_in*K*K, nb*H_out*W_out)
// so that the deep layers, whose outputs are only 4x4 or 8x8, still give OpenBLAS
// a wide GEMM (see chunk_images in gemm.h).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "gemm.h"
#include "ops.h"

namespace gannf::cpu {

void check_conv_dims(const ConvDims& d) {
  if (d.B <= 0 || d.C_in <= 0 || d.C_out <= 0 || d.H_in <= 0 || d.W_in <= 0 || d.K <= 0 ||
      d.stride <= 0 || d.pad < 0 || d.H_out <= 0 || d.W_out <= 0)
    throw std::invalid_argument("conv: bad dimensions (B=" + std::to_string(d.B) +
                                " C_in=" + std::to_string(d.C_in) + " C_out=" +
                                std::to_string(d.C_out) + " H_in=" + std::to_string(d.H_in) +
                                " K=" + std::to_string(d.K) + ")");
}

ConvDims conv_dims(int B, int C_in, int H_in, int W_in, int C_out, int K, int stride, int pad) {
  ConvDims d{B, C_in, H_in, W_in, C_out, 0, 0, K, stride, pad};
  if (stride <= 0 || K <= 0) throw std::invalid_argument("conv: stride and kernel must be > 0");
  const int hn = H_in + 2 * pad - K, wn = W_in + 2 * pad - K;
  if (hn < 0 || wn < 0) throw std::invalid_argument("conv: kernel larger than padded input");
  d.H_out = hn / stride + 1;
  d.W_out = wn / stride + 1;
  check_conv_dims(d);
  return d;
}

ConvDims conv_transpose_dims(int B, int C_in, int H_in, int W_in, int C_out, int K, int stride,
                             int pad) {
  ConvDims d{B, C_in, H_in, W_in, C_out, 0, 0, K, stride, pad};
  d.H_out = (H_in - 1) * stride - 2 * pad + K;
  d.W_out = (W_in - 1) * stride - 2 * pad + K;
  check_conv_dims(d);
  return d;
}

// One multiply-add (2 FLOPs) per (grid position, tap, input channel, output
// channel); the grid is the output for conv and the input for transposed conv.
double conv2d_flops(const ConvDims& d) {
  return 2.0 * d.B * d.C_in * d.C_out * d.K * d.K * d.H_out * d.W_out;
}
double conv_transpose2d_flops(const ConvDims& d) {
  return 2.0 * d.B * d.C_in * d.C_out * d.K * d.K * d.H_in * d.W_in;
}

// Per image: col (C_in*K*K x HWo) plus the channel-major output (C_out x HWo).
static size_t conv_per_image(const ConvDims& d) {
  return ((size_t)d.C_in * d.K * d.K + d.C_out) * d.H_out * d.W_out;
}
size_t conv2d_workspace_min(const ConvDims& d) { return conv_per_image(d); }
size_t conv2d_workspace_size(const ConvDims& d) {
  return conv_per_image(d) * chunk_images(d.B, (size_t)d.H_out * d.W_out);
}

static int conv_nb(const ConvDims& d, size_t ws_size) {
  check_conv_dims(d);
  const size_t per = conv_per_image(d);
  if (ws_size < per)
    throw std::invalid_argument("conv2d: workspace of " + std::to_string(ws_size) +
                                " elements is below the minimum " + std::to_string(per));
  size_t nb = chunk_images(d.B, (size_t)d.H_out * d.W_out);
  if (nb * per > ws_size) nb = ws_size / per;
  return (int)nb;
}

template <class T>
void conv2d_forward(T* out, const T* inp, const T* weight, const ConvDims& d, T* ws,
                    size_t ws_size) {
  const int nb_max = conv_nb(d, ws_size);
  const int CKK = d.C_in * d.K * d.K;
  const size_t HWi = (size_t)d.H_in * d.W_in, HWo = (size_t)d.H_out * d.W_out;
  const PatchGrid g{d.C_in, d.H_in, d.W_in, d.H_out, d.W_out, d.K, d.stride, d.pad};
  for (int b0 = 0; b0 < d.B; b0 += nb_max) {
    const int nb = std::min(nb_max, d.B - b0);
    const int N = (int)(nb * HWo);
    T* col = ws;                          // (C_in*K*K, nb*HWo)
    T* y = ws + (size_t)CKK * N;          // (C_out, nb*HWo)
    im2col(col, inp + (size_t)b0 * d.C_in * HWi, nb, g);
    T* dst = out + (size_t)b0 * d.C_out * HWo;
    // One image: channel-major and batch-major coincide; write in place.
    T* yc = nb == 1 ? dst : y;
    gemm(false, false, d.C_out, N, CKK, T(1), weight, CKK, col, N, T(0), yc, N);
    if (nb > 1) to_batch_major(dst, y, nb, d.C_out, HWo);
  }
}

template <class T>
void conv2d_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                     const ConvDims& d, T* ws, size_t ws_size) {
  const int nb_max = conv_nb(d, ws_size);
  const int CKK = d.C_in * d.K * d.K;
  const size_t HWi = (size_t)d.H_in * d.W_in, HWo = (size_t)d.H_out * d.W_out;
  const PatchGrid g{d.C_in, d.H_in, d.W_in, d.H_out, d.W_out, d.K, d.stride, d.pad};
  for (int b0 = 0; b0 < d.B; b0 += nb_max) {
    const int nb = std::min(nb_max, d.B - b0);
    const int N = (int)(nb * HWo);
    T* col = ws;                          // (C_in*K*K, nb*HWo)
    T* dy = ws + (size_t)CKK * N;         // (C_out, nb*HWo)
    const T* src = dout + (size_t)b0 * d.C_out * HWo;
    const T* dyc = src;
    if (nb > 1) {
      to_channel_major(dy, src, nb, d.C_out, HWo);
      dyc = dy;
    }
    if (dweight) {
      im2col(col, inp + (size_t)b0 * d.C_in * HWi, nb, g);
      // dW(C_out, CKK) += dY(C_out, N) . col(CKK, N)^T
      gemm(false, true, d.C_out, CKK, N, T(1), dyc, N, col, N, T(1), dweight, CKK);
    }
    if (dinp) {
      // dcol(CKK, N) = W(C_out, CKK)^T . dY(C_out, N), then fold back onto the image.
      gemm(true, false, CKK, N, d.C_out, T(1), weight, CKK, dyc, N, T(0), col, N);
      col2im(dinp + (size_t)b0 * d.C_in * HWi, col, nb, g);
    }
  }
}

template void conv2d_forward<float>(float*, const float*, const float*, const ConvDims&, float*,
                                    size_t);
template void conv2d_forward<double>(double*, const double*, const double*, const ConvDims&,
                                     double*, size_t);
template void conv2d_backward<float>(float*, float*, const float*, const float*, const float*,
                                     const ConvDims&, float*, size_t);
template void conv2d_backward<double>(double*, double*, const double*, const double*,
                                      const double*, const ConvDims&, double*, size_t);

}  // namespace gannf::cpu
