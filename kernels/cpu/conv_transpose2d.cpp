// conv_transpose2d (no bias), forward and backward: the mirror of conv2d.
//
// Forward is conv2d's backward-data (gemm, then col2im onto the larger output);
// backward-data is conv2d's forward (im2col of dout, then gemm). The patch grid
// is the INPUT (H_in x W_in) and the image the patches live on is the OUTPUT.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "gemm.h"
#include "ops.h"

namespace gannf::cpu {

// Per image: col (C_out*K*K x HWi) plus the channel-major input (C_in x HWi).
static size_t convt_per_image(const ConvDims& d) {
  return ((size_t)d.C_out * d.K * d.K + d.C_in) * d.H_in * d.W_in;
}
size_t conv_transpose2d_workspace_min(const ConvDims& d) { return convt_per_image(d); }
size_t conv_transpose2d_workspace_size(const ConvDims& d) {
  return convt_per_image(d) * chunk_images(d.B, (size_t)d.H_in * d.W_in);
}

static int convt_nb(const ConvDims& d, size_t ws_size) {
  check_conv_dims(d);
  const size_t per = convt_per_image(d);
  if (ws_size < per)
    throw std::invalid_argument("conv_transpose2d: workspace of " + std::to_string(ws_size) +
                                " elements is below the minimum " + std::to_string(per));
  size_t nb = chunk_images(d.B, (size_t)d.H_in * d.W_in);
  if (nb * per > ws_size) nb = ws_size / per;
  return (int)nb;
}

template <class T>
void conv_transpose2d_forward(T* out, const T* inp, const T* weight, const ConvDims& d, T* ws,
                              size_t ws_size) {
  const int nb_max = convt_nb(d, ws_size);
  const int OKK = d.C_out * d.K * d.K;
  const size_t HWi = (size_t)d.H_in * d.W_in, HWo = (size_t)d.H_out * d.W_out;
  const PatchGrid g{d.C_out, d.H_out, d.W_out, d.H_in, d.W_in, d.K, d.stride, d.pad};
  for (int b0 = 0; b0 < d.B; b0 += nb_max) {
    const int nb = std::min(nb_max, d.B - b0);
    const int N = (int)(nb * HWi);
    T* col = ws;                          // (C_out*K*K, nb*HWi)
    T* x = ws + (size_t)OKK * N;          // (C_in, nb*HWi)
    const T* src = inp + (size_t)b0 * d.C_in * HWi;
    const T* xc = src;
    if (nb > 1) {
      to_channel_major(x, src, nb, d.C_in, HWi);
      xc = x;
    }
    // col(OKK, N) = W(C_in, OKK)^T . X(C_in, N)
    gemm(true, false, OKK, N, d.C_in, T(1), weight, OKK, xc, N, T(0), col, N);
    col2im(out + (size_t)b0 * d.C_out * HWo, col, nb, g);
  }
}

template <class T>
void conv_transpose2d_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                               const ConvDims& d, T* ws, size_t ws_size) {
  const int nb_max = convt_nb(d, ws_size);
  const int OKK = d.C_out * d.K * d.K;
  const size_t HWi = (size_t)d.H_in * d.W_in, HWo = (size_t)d.H_out * d.W_out;
  const PatchGrid g{d.C_out, d.H_out, d.W_out, d.H_in, d.W_in, d.K, d.stride, d.pad};
  for (int b0 = 0; b0 < d.B; b0 += nb_max) {
    const int nb = std::min(nb_max, d.B - b0);
    const int N = (int)(nb * HWi);
    T* col = ws;                          // (C_out*K*K, nb*HWi)
    T* x = ws + (size_t)OKK * N;          // (C_in, nb*HWi)
    im2col(col, dout + (size_t)b0 * d.C_out * HWo, nb, g);
    if (dweight) {
      const T* src = inp + (size_t)b0 * d.C_in * HWi;
      const T* xc = src;
      if (nb > 1) {
        to_channel_major(x, src, nb, d.C_in, HWi);
        xc = x;
      }
      // dW(C_in, OKK) += X(C_in, N) . dcol(OKK, N)^T
      gemm(false, true, d.C_in, OKK, N, T(1), xc, N, col, N, T(1), dweight, OKK);
    }
    if (dinp) {
      // dX(C_in, N) = W(C_in, OKK) . dcol(OKK, N)
      T* dst = dinp + (size_t)b0 * d.C_in * HWi;
      T* dxc = nb == 1 ? dst : x;
      gemm(false, false, d.C_in, N, OKK, T(1), weight, OKK, col, N, T(0), dxc, N);
      if (nb > 1) to_batch_major(dst, x, nb, d.C_in, HWi);
    }
  }
}

template void conv_transpose2d_forward<float>(float*, const float*, const float*, const ConvDims&,
                                              float*, size_t);
template void conv_transpose2d_forward<double>(double*, const double*, const double*,
                                               const ConvDims&, double*, size_t);
template void conv_transpose2d_backward<float>(float*, float*, const float*, const float*,
                                               const float*, const ConvDims&, float*, size_t);
template void conv_transpose2d_backward<double>(double*, double*, const double*, const double*,
                                                const double*, const ConvDims&, double*, size_t);

}  // namespace gannf::cpu
