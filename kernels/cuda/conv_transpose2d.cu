// conv_transpose2d (no bias), forward and backward: the mirror of conv2d.
//
// Forward is conv2d's backward-data (GEMM, then col2im onto the larger
// output); backward-data is conv2d's forward (the implicit im2col GEMM of
// dout). The patch grid is the INPUT (H_in x W_in) and the image the patches
// live on is the OUTPUT.
//   forward          out = col2im( W^T(OKK, C_in) . inp(C_in, B*HWi) )
//   backward-data    dinp(B, C_in, HWi) = W(C_in, OKK) . im2col(dout)     (implicit)
//   backward-weight  dW(C_in, OKK) += inp(C_in, B*HWi) . im2col(dout)^T   (implicit, split-K)
#include "common.cuh"
#include "gemm.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

namespace {
PatchGrid convt_grid(const ConvDims& d) {
  return PatchGrid{d.C_out, d.H_out, d.W_out, d.H_in, d.W_in, d.K, d.stride, d.pad};
}
}  // namespace

size_t conv_transpose2d_workspace_size(const ConvDims& d, ConvMath math) {
  check_conv_dims(d);
  const PatchGrid g = convt_grid(d);
  return std::max({gemm_wT_col2im_workspace(d.C_in, d.B, g, math), gemm_w_im2col_workspace(d.C_in, d.B, g, math),
                   gemm_dw_workspace(d.C_in, d.B, g, math)});
}
size_t conv_transpose2d_workspace_min(const ConvDims& d, ConvMath math) {
  check_conv_dims(d);
  if (math == ConvMath::bf16) return gemm_staged_workspace_min(d.C_in, d.C_in, d.B, convt_grid(d));
  return gemm_wT_col2im_workspace_min(d.C_in, convt_grid(d));
}

void conv_transpose2d_forward(float* out, const float* inp, const float* weight,
                              const ConvDims& d, float* ws, size_t ws_size, cudaStream_t stream,
                              ConvMath math) {
  check_conv_dims(d);
  // col(OKK, B*HWi) = W(C_in, OKK)^T . X(C_in, B*HWi), folded onto out
  gemm_wT_col2im(out, weight, inp, d.C_in, d.B, convt_grid(d), ws, ws_size, stream, math);
}

void conv_transpose2d_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                               const float* weight, const ConvDims& d, float* ws, size_t ws_size,
                               cudaStream_t stream, ConvMath math) {
  check_conv_dims(d);
  const PatchGrid g = convt_grid(d);
  // dW(C_in, OKK) += X(C_in, B*HWi) . im2col(dout)(OKK, B*HWi)^T
  if (dweight) gemm_dw(dweight, inp, dout, d.C_in, d.B, g, ws, ws_size, stream, math);
  // dX(B, C_in, HWi) = W(C_in, OKK) . im2col(dout)(OKK, B*HWi)
  if (dinp) gemm_w_im2col(dinp, weight, dout, d.C_in, d.B, g, ws, ws_size, stream, math);
}

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
