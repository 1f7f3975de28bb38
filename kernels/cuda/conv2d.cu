// conv2d (no bias), forward and backward: three GEMMs over the patch grid
// (gemm.cu). The image the patches read is the input; the grid is the output.
//   forward          out(B, C_out, HWo) = W(C_out, CKK) . im2col(inp)     (implicit)
//   backward-data    dinp = col2im( W^T(CKK, C_out) . dout(C_out, B*HWo) )
//   backward-weight  dW(C_out, CKK) += dout(C_out, B*HWo) . im2col(inp)^T (implicit, split-K)
// The same GEMM shapes as kernels/cpu/conv2d.cpp, with the batch folded into
// the GEMM width instead of chunked.
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "gemm.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

namespace {
PatchGrid conv_grid(const ConvDims& d) {
  return PatchGrid{d.C_in, d.H_in, d.W_in, d.H_out, d.W_out, d.K, d.stride, d.pad};
}
}  // namespace

size_t conv2d_workspace_size(const ConvDims& d, ConvMath math) {
  check_conv_dims(d);
  const PatchGrid g = conv_grid(d);
  return std::max({gemm_w_im2col_workspace(d.C_out, d.B, g, math), gemm_wT_col2im_workspace(d.C_out, d.B, g, math),
                   gemm_dw_workspace(d.C_out, d.B, g, math)});
}
size_t conv2d_workspace_min(const ConvDims& d, ConvMath math) {
  check_conv_dims(d);
  if (math == ConvMath::bf16) return gemm_staged_workspace_min(d.C_out, d.C_out, d.B, conv_grid(d));
  return gemm_wT_col2im_workspace_min(d.C_out, conv_grid(d));
}

void conv2d_forward(float* out, const float* inp, const float* weight, const ConvDims& d,
                    float* ws, size_t ws_size, cudaStream_t stream, ConvMath math) {
  check_conv_dims(d);
  // out(B, C_out, HWo) = W(C_out, CKK) . im2col(inp)(CKK, B*HWo)
  gemm_w_im2col(out, weight, inp, d.C_out, d.B, conv_grid(d), ws, ws_size, stream, math);
}

void conv2d_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, const ConvDims& d, float* ws, size_t ws_size,
                     cudaStream_t stream, ConvMath math) {
  check_conv_dims(d);
  const PatchGrid g = conv_grid(d);
  // dW(C_out, CKK) += dY(C_out, B*HWo) . im2col(inp)(CKK, B*HWo)^T
  if (dweight) gemm_dw(dweight, dout, inp, d.C_out, d.B, g, ws, ws_size, stream, math);
  // dcol(CKK, B*HWo) = W(C_out, CKK)^T . dY(C_out, B*HWo), folded back onto dinp
  if (dinp) gemm_wT_col2im(dinp, weight, dout, d.C_out, d.B, g, ws, ws_size, stream, math);
}

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
