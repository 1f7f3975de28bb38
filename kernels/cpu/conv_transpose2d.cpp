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
// Workspace: [index tables][per thread: col (OKK, ld), x (C_in, ld)]
//            [a private dweight for every thread after the first]
struct Sizes {
  size_t tab, per_image, dw;
};
Sizes sizes(const ConvDims& d) {
  const PatchGrid g = patch_grid(d);
  return {g.table_size(), ((size_t)d.C_out * d.K * d.K + d.C_in) * g.grid(),
          (size_t)d.C_in * d.C_out * d.K * d.K};
}
ChunkPlan plan(const ConvDims& d, bool need_dw, size_t ws_size) {
  const Sizes z = sizes(d);
  const PatchGrid g = patch_grid(d);
  return plan_chunks(d.B, g.grid(), z.per_image, z.tab, need_dw ? z.dw : 0, g.max_nb(), ws_size);
}
ChunkPlan checked_plan(const ConvDims& d, bool need_dw, size_t ws_size) {
  check_conv_dims(d);
  const size_t min = conv_transpose2d_workspace_min(d);
  if (ws_size < min)
    throw std::invalid_argument("conv_transpose2d: workspace of " + std::to_string(ws_size) +
                                " elements is below the minimum " + std::to_string(min));
  return plan(d, need_dw, ws_size);
}
}  // namespace

ChunkPlan conv_transpose2d_plan(const ConvDims& d, bool need_dw, size_t ws_size) {
  if (single_pixel(d)) {
    ChunkPlan p;
    p.direct = true;
    return p;
  }
  return plan(d, need_dw, ws_size);
}

size_t conv_transpose2d_workspace_min(const ConvDims& d) {
  if (single_pixel(d)) return 0;
  const Sizes z = sizes(d);
  return z.tab + z.per_image;
}
size_t conv_transpose2d_workspace_size(const ConvDims& d) {
  if (single_pixel(d)) return 0;
  return plan(d, true, SIZE_MAX).ws_needed;
}

template <class T>
void conv_transpose2d_forward(T* out, const T* inp, const T* weight, const ConvDims& d, T* ws,
                              size_t ws_size) {
  const ChunkPlan p = checked_plan(d, false, ws_size);
  const int OKK = d.C_out * d.K * d.K;
  if (single_pixel(d)) {
    gemm(false, false, d.B, OKK, d.C_in, T(1), inp, d.C_in, weight, OKK, T(0), out, OKK);
    return;
  }
  const PatchGrid g = patch_grid(d);
  const Sizes z = sizes(d);
  const size_t HWi = g.grid(), HWo = g.image(), ld = (size_t)p.nb * HWi;
  const PatchTables tab = build_tables(reinterpret_cast<int32_t*>(ws), g, ld);
  const int nchunks = (d.B + p.nb - 1) / p.nb;
  auto body = [&](int ci, int tid) {
    T* col = ws + z.tab + (size_t)tid * z.per_image * p.nb;  // (OKK, ld)
    T* x = col + (size_t)OKK * ld;                             // (C_in, ld)
    const int b0 = ci * p.nb, n = std::min(p.nb, d.B - b0);
    const T* src = inp + (size_t)b0 * d.C_in * HWi;
    const T* xc = src;
    int ldx = (int)HWi;
    if (n > 1) {
      to_channel_major(x, ld, src, n, d.C_in, HWi);
      xc = x;
      ldx = (int)ld;
    }
    // col(OKK, N) = W(C_in, OKK)^T . X(C_in, N)
    gemm(true, false, OKK, (int)(n * HWi), d.C_in, T(1), weight, OKK, xc, ldx, T(0), col,
         (int)ld);
    col2im(out + (size_t)b0 * d.C_out * HWo, col, ld, n, g, tab);
  };
  if (p.threads > 1) {
#pragma omp parallel num_threads(p.threads)
    {
      const int tid = omp_get_thread_num();
#pragma omp for schedule(static)
      for (int c = 0; c < nchunks; c++) body(c, tid);
    }
  } else {
    for (int c = 0; c < nchunks; c++) body(c, 0);
  }
}

template <class T>
void conv_transpose2d_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                               const ConvDims& d, T* ws, size_t ws_size) {
  const ChunkPlan p = checked_plan(d, dweight != nullptr, ws_size);
  const int OKK = d.C_out * d.K * d.K;
  if (single_pixel(d)) {
    // dX(B, C_in) = dY(B, OKK) . W(C_in, OKK)^T;  dW(C_in, OKK) += X^T . dY
    if (dinp)
      gemm(false, true, d.B, d.C_in, OKK, T(1), dout, OKK, weight, OKK, T(0), dinp, d.C_in);
    if (dweight)
      gemm(true, false, d.C_in, OKK, d.B, T(1), inp, d.C_in, dout, OKK, T(1), dweight, OKK);
    return;
  }
  const PatchGrid g = patch_grid(d);
  const Sizes z = sizes(d);
  const size_t HWi = g.grid(), HWo = g.image(), ld = (size_t)p.nb * HWi;
  const PatchTables tab = build_tables(reinterpret_cast<int32_t*>(ws), g, ld);
  const int nchunks = (d.B + p.nb - 1) / p.nb;
  // Private dweight for threads after the first, as in conv2d_backward.
  T* priv = ws + z.tab + (size_t)p.threads * z.per_image * p.nb;
  auto body = [&](int ci, int tid, bool& first) {
    T* col = ws + z.tab + (size_t)tid * z.per_image * p.nb;  // (OKK, ld)
    T* x = col + (size_t)OKK * ld;                             // (C_in, ld)
    T* dw = tid == 0 ? dweight : priv + (size_t)(tid - 1) * z.dw;
    const int b0 = ci * p.nb, n = std::min(p.nb, d.B - b0);
    const int N = (int)(n * HWi);
    im2col(col, ld, dout + (size_t)b0 * d.C_out * HWo, n, g, tab);
    if (dweight) {
      const T* src = inp + (size_t)b0 * d.C_in * HWi;
      const T* xc = src;
      int ldx = (int)HWi;
      if (n > 1) {
        to_channel_major(x, ld, src, n, d.C_in, HWi);
        xc = x;
        ldx = (int)ld;
      }
      // dW(C_in, OKK) += X(C_in, N) . dcol(OKK, N)^T
      gemm(false, true, d.C_in, OKK, N, T(1), xc, ldx, col, (int)ld,
           (tid > 0 && first) ? T(0) : T(1), dw, OKK);
      first = false;
    }
    if (dinp) {
      // dX(C_in, N) = W(C_in, OKK) . dcol(OKK, N)
      T* dst = dinp + (size_t)b0 * d.C_in * HWi;
      if (n == 1) {
        gemm(false, false, d.C_in, N, OKK, T(1), weight, OKK, col, (int)ld, T(0), dst, (int)HWi);
      } else {
        gemm(false, false, d.C_in, N, OKK, T(1), weight, OKK, col, (int)ld, T(0), x, (int)ld);
        to_batch_major(dst, x, ld, n, d.C_in, HWi);
      }
    }
  };
  if (p.threads <= 1) {
    bool first = false;
    for (int c = 0; c < nchunks; c++) body(c, 0, first);
    return;
  }
#pragma omp parallel num_threads(p.threads)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    bool first = true;
#pragma omp for schedule(static)
    for (int c = 0; c < nchunks; c++) body(c, tid, first);
    if (dweight && nt > 1) {
      if (tid > 0 && first) std::memset(priv + (size_t)(tid - 1) * z.dw, 0, sizeof(T) * z.dw);
#pragma omp barrier
#pragma omp for schedule(static)
      for (size_t i = 0; i < z.dw; i++) {
        T s = dweight[i];
        for (int t = 1; t < nt; t++) s += priv[(size_t)(t - 1) * z.dw + i];
        dweight[i] = s;
      }
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
