// conv2d (no bias), forward and backward, as im2col + GEMM over chunks of images.
//
// A chunk of nb images is unrolled into one col matrix (C_in*K*K, nb*H_out*W_out)
// so that the deep layers, whose outputs are only 4x4 or 8x8, still give the GEMM
// enough columns; plan_chunks in gemm.h sizes the chunks and spreads them over
// the threads. A layer whose kernel covers its whole unpadded input (D's last
// layer: 4x4 in, 1x1 out) is one plain GEMM over the batch, with no unrolling.
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
// The kernel covers the whole unpadded input: out(B, C_out) = X(B, CKK) . W^T.
bool whole_input(const ConvDims& d) {
  return d.pad == 0 && d.H_out == 1 && d.W_out == 1 && d.K == d.H_in && d.K == d.W_in;
}
PatchGrid patch_grid(const ConvDims& d) {
  return {d.C_in, d.H_in, d.W_in, d.H_out, d.W_out, d.K, d.stride, d.pad};
}
// Workspace: [index tables][per thread: col (cb*K*K, ld), y (C_out, ld)]
//            [a private dweight for every thread after the first]
// where cb = block_channels(): the col matrix holds one block of channels.
ConvWorkspace workspace(const ConvDims& d) {
  check_conv_dims(d);
  ConvWorkspace w;
  w.direct = whole_input(d);
  w.g = patch_grid(d);
  const int cb = block_channels(d.C_in, d.K);
  w.tab = w.g.table_size();
  w.per_image = ((size_t)cb * d.K * d.K + d.C_out) * w.g.grid();
  w.dw = (size_t)d.C_out * d.C_in * d.K * d.K;
  return w;
}
}  // namespace

ChunkPlan conv2d_plan(const ConvDims& d, bool need_dw, size_t ws_size) {
  return workspace(d).plan(d.B, need_dw, ws_size);
}
size_t conv2d_workspace_min(const ConvDims& d) { return workspace(d).min_size(); }
size_t conv2d_workspace_size(const ConvDims& d) { return workspace(d).full_size(d.B); }

template <class T>
void conv2d_forward(T* out, const T* inp, const T* weight, const ConvDims& d, T* ws,
                    size_t ws_size) {
  const ConvWorkspace z = workspace(d);
  const ChunkPlan p = z.checked_plan("conv2d", d.B, false, ws_size);
  const int CKK = d.C_in * d.K * d.K;
  if (p.direct) {
    gemm(false, true, d.B, d.C_out, CKK, T(1), inp, CKK, weight, CKK, T(0), out, d.C_out);
    return;
  }
  const PatchGrid& g = z.g;
  const size_t HWi = g.image(), HWo = g.grid(), ld = (size_t)p.nb * HWo;
  const PatchTables tab = build_tables(reinterpret_cast<int32_t*>(ws), g, ld);
  const int nchunks = (d.B + p.nb - 1) / p.nb;
  const int KK = d.K * d.K, cb = block_channels(d.C_in, d.K);
  auto body = [&](int ci, int tid) {
    T* col = ws + z.tab + (size_t)tid * z.per_image * p.nb;  // (cb*KK, ld)
    T* y = col + (size_t)cb * KK * ld;                         // (C_out, ld)
    const int b0 = ci * p.nb, n = std::min(p.nb, d.B - b0);
    const int N = (int)(n * HWo);
    T* dst = out + (size_t)b0 * d.C_out * HWo;
    // One image: channel-major and batch-major coincide; write in place.
    T* yc = n == 1 ? dst : y;
    const int ldy = n == 1 ? (int)HWo : (int)ld;
    // y(C_out, N) = sum over channel blocks of W(C_out, block) . col(block, N)
    for (int c0 = 0; c0 < d.C_in; c0 += cb) {
      const int c1 = std::min(d.C_in, c0 + cb), rows = (c1 - c0) * KK;
      im2col(col, ld, inp + (size_t)b0 * d.C_in * HWi, n, c0, c1, g, tab);
      gemm(false, false, d.C_out, N, rows, T(1), weight + (size_t)c0 * KK, CKK, col, (int)ld,
           c0 == 0 ? T(0) : T(1), yc, ldy);
    }
    if (n > 1) to_batch_major(dst, y, ld, n, d.C_out, HWo);
  };
  run_chunks<T>(p, nchunks, nullptr, nullptr, 0, [&](int c, int tid, bool&) { body(c, tid); });
}

template <class T>
void conv2d_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                     const ConvDims& d, T* ws, size_t ws_size) {
  const ConvWorkspace z = workspace(d);
  const ChunkPlan p = z.checked_plan("conv2d", d.B, dweight != nullptr, ws_size);
  const int CKK = d.C_in * d.K * d.K;
  if (p.direct) {
    // dX(B, CKK) = dY(B, C_out) . W(C_out, CKK);  dW(C_out, CKK) += dY^T . X
    if (dinp)
      gemm(false, false, d.B, CKK, d.C_out, T(1), dout, d.C_out, weight, CKK, T(0), dinp, CKK);
    if (dweight)
      gemm(true, false, d.C_out, CKK, d.B, T(1), dout, d.C_out, inp, CKK, T(1), dweight, CKK);
    return;
  }
  const PatchGrid& g = z.g;
  const size_t HWi = g.image(), HWo = g.grid(), ld = (size_t)p.nb * HWo;
  const PatchTables tab = build_tables(reinterpret_cast<int32_t*>(ws), g, ld);
  const int nchunks = (d.B + p.nb - 1) / p.nb;
  // Threads after the first accumulate dweight in private buffers (their first
  // chunk overwrites, beta = 0), added into dweight once all chunks are done:
  // a fixed order for a given thread count, so results repeat run to run.
  T* priv = ws + z.tab + (size_t)p.threads * z.per_image * p.nb;
  const int KK = d.K * d.K, cb = block_channels(d.C_in, d.K);
  auto body = [&](int ci, int tid, bool& first) {
    T* col = ws + z.tab + (size_t)tid * z.per_image * p.nb;  // (cb*KK, ld)
    T* dy = col + (size_t)cb * KK * ld;                        // (C_out, ld)
    T* dw = tid == 0 ? dweight : priv + (size_t)(tid - 1) * z.dw;
    const int b0 = ci * p.nb, n = std::min(p.nb, d.B - b0);
    const int N = (int)(n * HWo);
    const T* src = dout + (size_t)b0 * d.C_out * HWo;
    const T* dyc = src;
    int ldy = (int)HWo;
    if (n > 1) {
      to_channel_major(dy, ld, src, n, d.C_out, HWo);
      dyc = dy;
      ldy = (int)ld;
    }
    const T beta = (tid > 0 && first) ? T(0) : T(1);
    for (int c0 = 0; c0 < d.C_in; c0 += cb) {
      const int c1 = std::min(d.C_in, c0 + cb), rows = (c1 - c0) * KK;
      if (dweight) {
        im2col(col, ld, inp + (size_t)b0 * d.C_in * HWi, n, c0, c1, g, tab);
        // dW(C_out, block) += dY(C_out, N) . col(block, N)^T
        gemm(false, true, d.C_out, rows, N, T(1), dyc, ldy, col, (int)ld, beta,
             dw + (size_t)c0 * KK, CKK);
      }
      if (dinp) {
        // dcol(block, N) = W(C_out, block)^T . dY(C_out, N), folded back onto
        // the block's channels of the image.
        gemm(true, false, rows, N, d.C_out, T(1), weight + (size_t)c0 * KK, CKK, dyc, ldy, T(0),
             col, (int)ld);
        col2im(dinp + (size_t)b0 * d.C_in * HWi, col, ld, n, c0, c1, g, tab);
      }
    }
    if (dweight) first = false;
  };
  run_chunks(p, nchunks, dweight, priv, z.dw, body);
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
