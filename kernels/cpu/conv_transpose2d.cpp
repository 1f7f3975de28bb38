// conv_transpose2d (no bias), forward and backward: the mirror of conv2d.
//
// Forward is conv2d's backward-data (gemm, then col2im onto the larger output);
// backward-data is conv2d's forward (im2col of dout, then gemm). The patch grid
// is the INPUT (H_in x W_in) and the image the patches live on is the OUTPUT.
// Chunks and threads as in conv2d.cpp (plan_chunks in gemm.h). A layer with a
// 1x1 unpadded input (G's first layer: z -> 4x4) is one plain GEMM.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "gemm.h"
#include "ops.h"

namespace gannf::cpu {

namespace {
// A 1x1 input without padding: out(B, C_out*K*K) = X(B, C_in) . W(C_in, C_out*K*K),
// and (C_out, K, K) is exactly the output's (C_out, H_out, W_out).
bool single_pixel(const ConvDims& d) { return d.pad == 0 && d.H_in == 1 && d.W_in == 1; }
PatchGrid patch_grid(const ConvDims& d) {
  return {d.C_out, d.H_out, d.W_out, d.H_in, d.W_in, d.K, d.stride, d.pad};
}
// Workspace: [index tables][per thread: col (cb*K*K, ld), x (C_in, ld), dx (C_in, ld)]
//            [a private dweight for every thread after the first]
// where cb = block_channels(): the col matrix holds one block of output channels.
ConvWorkspace workspace(const ConvDims& d) {
  check_conv_dims(d);
  ConvWorkspace w;
  w.direct = single_pixel(d);
  w.g = patch_grid(d);
  const int cb = block_channels(d.C_out, d.K);
  w.tab = w.g.table_size();
  w.per_image = ((size_t)cb * d.K * d.K + 2 * (size_t)d.C_in) * w.g.grid();
  w.dw = (size_t)d.C_in * d.C_out * d.K * d.K;
  return w;
}
}  // namespace

ChunkPlan conv_transpose2d_plan(const ConvDims& d, bool need_dw, size_t ws_size) {
  return workspace(d).plan(d.B, need_dw, ws_size);
}
size_t conv_transpose2d_workspace_min(const ConvDims& d) { return workspace(d).min_size(); }
size_t conv_transpose2d_workspace_size(const ConvDims& d) { return workspace(d).full_size(d.B); }

template <class T>
void conv_transpose2d_forward(T* out, const T* inp, const T* weight, const ConvDims& d, T* ws,
                              size_t ws_size) {
  const ConvWorkspace z = workspace(d);
  const ChunkPlan p = z.checked_plan("conv_transpose2d", d.B, false, ws_size);
  const int OKK = d.C_out * d.K * d.K;
  if (p.direct) {
    gemm(false, false, d.B, OKK, d.C_in, T(1), inp, d.C_in, weight, OKK, T(0), out, OKK);
    return;
  }
  const PatchGrid& g = z.g;
  const size_t HWi = g.grid(), HWo = g.image(), ld = (size_t)p.nb * HWi;
  const PatchTables tab = build_tables(reinterpret_cast<int32_t*>(ws), g, ld);
  const int nchunks = (d.B + p.nb - 1) / p.nb;
  const int KK = d.K * d.K, cb = block_channels(d.C_out, d.K);
  auto body = [&](int ci, int tid) {
    T* col = ws + z.tab + (size_t)tid * z.per_image * p.nb;  // (cb*KK, ld)
    T* x = col + (size_t)cb * KK * ld;                         // (C_in, ld)
    const int b0 = ci * p.nb, n = std::min(p.nb, d.B - b0);
    const int N = (int)(n * HWi);
    const T* src = inp + (size_t)b0 * d.C_in * HWi;
    const T* xc = src;
    int ldx = (int)HWi;
    if (n > 1) {
      to_channel_major(x, ld, src, n, d.C_in, HWi);
      xc = x;
      ldx = (int)ld;
    }
    for (int c0 = 0; c0 < d.C_out; c0 += cb) {
      const int c1 = std::min(d.C_out, c0 + cb), rows = (c1 - c0) * KK;
      // col(block, N) = W(C_in, block)^T . X(C_in, N), folded onto the block's
      // output channels.
      gemm(true, false, rows, N, d.C_in, T(1), weight + (size_t)c0 * KK, OKK, xc, ldx, T(0), col,
           (int)ld);
      col2im(out + (size_t)b0 * d.C_out * HWo, col, ld, n, c0, c1, g, tab);
    }
  };
  run_chunks<T>(p, nchunks, nullptr, nullptr, 0, [&](int c, int tid, bool&) { body(c, tid); });
}

template <class T>
void conv_transpose2d_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                               const ConvDims& d, T* ws, size_t ws_size) {
  const ConvWorkspace z = workspace(d);
  const ChunkPlan p = z.checked_plan("conv_transpose2d", d.B, dweight != nullptr, ws_size);
  const int OKK = d.C_out * d.K * d.K;
  if (p.direct) {
    // dX(B, C_in) = dY(B, OKK) . W(C_in, OKK)^T;  dW(C_in, OKK) += X^T . dY
    if (dinp)
      gemm(false, true, d.B, d.C_in, OKK, T(1), dout, OKK, weight, OKK, T(0), dinp, d.C_in);
    if (dweight)
      gemm(true, false, d.C_in, OKK, d.B, T(1), inp, d.C_in, dout, OKK, T(1), dweight, OKK);
    return;
  }
  const PatchGrid& g = z.g;
  const size_t HWi = g.grid(), HWo = g.image(), ld = (size_t)p.nb * HWi;
  const PatchTables tab = build_tables(reinterpret_cast<int32_t*>(ws), g, ld);
  const int nchunks = (d.B + p.nb - 1) / p.nb;
  // Private dweight for threads after the first, as in conv2d_backward.
  T* priv = ws + z.tab + (size_t)p.threads * z.per_image * p.nb;
  const int KK = d.K * d.K, cb = block_channels(d.C_out, d.K);
  auto body = [&](int ci, int tid, bool& first) {
    T* col = ws + z.tab + (size_t)tid * z.per_image * p.nb;  // (cb*KK, ld)
    T* x = col + (size_t)cb * KK * ld;                         // (C_in, ld)
    T* dx = x + (size_t)d.C_in * ld;                           // (C_in, ld)
    T* dw = tid == 0 ? dweight : priv + (size_t)(tid - 1) * z.dw;
    const int b0 = ci * p.nb, n = std::min(p.nb, d.B - b0);
    const int N = (int)(n * HWi);
    const T* xc = inp + (size_t)b0 * d.C_in * HWi;
    int ldx = (int)HWi;
    if (dweight && n > 1) {
      to_channel_major(x, ld, xc, n, d.C_in, HWi);
      xc = x;
      ldx = (int)ld;
    }
    T* dst = dinp ? dinp + (size_t)b0 * d.C_in * HWi : nullptr;
    T* dxc = n == 1 ? dst : dx;  // one image: write dinp in place
    const int lddx = n == 1 ? (int)HWi : (int)ld;
    const T beta = (tid > 0 && first) ? T(0) : T(1);
    for (int c0 = 0; c0 < d.C_out; c0 += cb) {
      const int c1 = std::min(d.C_out, c0 + cb), rows = (c1 - c0) * KK;
      im2col(col, ld, dout + (size_t)b0 * d.C_out * HWo, n, c0, c1, g, tab);
      // dW(C_in, block) += X(C_in, N) . dcol(block, N)^T
      if (dweight)
        gemm(false, true, d.C_in, rows, N, T(1), xc, ldx, col, (int)ld, beta,
             dw + (size_t)c0 * KK, OKK);
      // dX(C_in, N) = sum over blocks of W(C_in, block) . dcol(block, N)
      if (dinp)
        gemm(false, false, d.C_in, N, rows, T(1), weight + (size_t)c0 * KK, OKK, col, (int)ld,
             c0 == 0 ? T(0) : T(1), dxc, lddx);
    }
    if (dinp && n > 1) to_batch_major(dst, dx, ld, n, d.C_in, HWi);
    if (dweight) first = false;
  };
  run_chunks(p, nchunks, dweight, priv, z.dw, body);
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
