// The three GEMMs every convolution is built from (the CUDA side of
// kernels/cpu/gemm.h). Each is one tiled shared-memory SGEMM kernel whose
// operand loads are "views": im2col is never written out for the forward and
// weight-gradient GEMMs, its entries are computed from the image as a tile is
// loaded; only the col2im path writes a col matrix (then gathers it back).
//
// The patch grid is kernels/cpu's PatchGrid: grid position (gh, gw) and kernel
// tap (kh, kw) read image pixel (gh*s - p + kh, gw*s - p + kw) of an image
// (C, H, W). For conv2d the image is the input and the grid the output; for
// conv_transpose2d the image is the output and the grid the input.
//
//   gemm_w_im2col   out(nb, M, HWg)  = W(M, Kd) . im2col(img)(Kd, nb*HWg)
//                   conv2d forward, conv_transpose2d backward-data
//   gemm_wT_col2im  img(nb, C, H, W) = col2im( W(Cx, Kd)^T . X(nb, Cx, HWg) )
//                   conv2d backward-data, conv_transpose2d forward; where the
//                   stride divides the kernel and the image, as s*s sub-pixel
//                   GEMMs with no col matrix (gemm.cu, phase_path)
//   gemm_dw         dW(M, Kd)       += X(nb, M, HWg) . im2col(img)(Kd, nb*HWg)^T
//                   both weight gradients
// with Kd = C*K*K. X and out are NCHW tensors read as (channels, nb*HWg).
// `math` picks the FP32 CUDA-core kernel or the TF32 tensor-core one (ops.cuh);
// the workspace sizes cover both.
#pragma once
#include <cstddef>

#include "ops.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

struct PatchGrid {
  int C, H, W;    // image
  int Hg, Wg;     // grid
  int K, s, p;    // kernel, stride, padding
};

// Workspace (elements) each needs at full speed for nb images; the first and
// last use it only for split-K partial sums and run (unsplit) with none. In
// TF32 all three also stage their operands there at full speed (gemm.cu,
// gemm_staged_kernel) and take the WMMA kernel where it is too small.
size_t gemm_w_im2col_workspace(int M, int nb, const PatchGrid& g, ConvMath math);
// (FP32: 0 where the sub-pixel path, which needs no col, applies)
size_t gemm_wT_col2im_workspace(int Cx, int nb, const PatchGrid& g, ConvMath math);  // col for all nb images
size_t gemm_wT_col2im_workspace_min(int Cx, const PatchGrid& g);      // col for one image
size_t gemm_dw_workspace(int M, int nb, const PatchGrid& g, ConvMath math);
// BF16's minimum: the largest of the three passes' staged operands (no
// split-K, col for one image); rows = the conv's C_out-side channels (the
// forward's and weight gradient's M), Cx the data gradient's grid channels.
size_t gemm_staged_workspace_min(int rows, int Cx, int nb, const PatchGrid& g);

void gemm_w_im2col(float* out,            // (nb, M, Hg*Wg)          =
                   const float* W,        // (M, C*K*K)
                   const float* img,      // (nb, C, H, W)
                   int M, int nb, const PatchGrid& g, float* ws, size_t ws_size,
                   cudaStream_t stream, ConvMath math);
void gemm_wT_col2im(float* img,           // (nb, C, H, W)           =
                    const float* W,       // (Cx, C*K*K)
                    const float* X,       // (nb, Cx, Hg*Wg)
                    int Cx, int nb, const PatchGrid& g, float* ws, size_t ws_size,
                    cudaStream_t stream, ConvMath math);
void gemm_dw(float* dW,                   // (M, C*K*K)              +=
             const float* X,              // (nb, M, Hg*Wg)
             const float* img,            // (nb, C, H, W)
             int M, int nb, const PatchGrid& g, float* ws, size_t ws_size,
             cudaStream_t stream, ConvMath math);

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
