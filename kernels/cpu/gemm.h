// Row-major GEMM over OpenBLAS for both scalar types, and the pieces the
// convolutions are built from: how a batch is split into chunks and threads,
// im2col / col2im driven by index tables, and the batch-major <-> channel-major
// permutes.
#pragma once
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "ops.h"

namespace gannf::cpu {

// C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C
inline void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ---- splitting a batch ---------------------------------------------------------------
// A convolution unrolls a chunk of nb images into one col matrix and runs one
// GEMM per chunk and role; the deep layers' grids are only 4x4 or 8x8, so a
// chunk of images shares one GEMM. The cores are used in one of two ways:
//
//  - per thread (the normal case): each OpenMP thread takes whole chunks and
//    runs im2col, a single-threaded GEMM (OpenBLAS's OpenMP build runs serially
//    inside a parallel region) and col2im on its own: no barrier between the
//    stages, no wait for OpenBLAS to split and join small GEMMs, and a chunk's
//    pipeline stays in one core's caches. Concurrent single-threaded sgemms
//    beat one threaded sgemm on every shape the DCGAN issues.
//  - shared (too few columns to go round, or a workspace too small for one
//    col per thread): one chunk at a time, with OpenBLAS splitting each GEMM.
//
// Columns per GEMM: single-threaded sgemm reaches its plateau at about 512
// columns on these shapes, and larger chunks only make the col matrix outgrow
// the L2 cache (1-2 MB per core); a shared GEMM wants more, as OpenBLAS splits
// it in two. docs/benchmarks.md (Kernel changes) has the measurements behind
// these sizes and the per-thread split.
constexpr size_t kThreadColumns = 512;
constexpr size_t kWideColumns = 2048;
// Below this many columns per thread, per-thread GEMMs get too narrow to pay.
constexpr size_t kMinThreadColumns = 256;
// A chunk's col matrix is built and used a block of channels at a time, about
// this many rows (whole channels, so that col2im can finish each channel):
// 256 rows x 512 columns is 512 KB, which can stay in the L2 cache between
// im2col and the GEMM (or the GEMM and col2im) rather than go out to memory
// and back; the workspace shrinks with it, at no cost in time.
constexpr int kBlockRows = 256;
inline int block_channels(int C, int K) { return std::clamp(kBlockRows / (K * K), 1, C); }

struct ChunkPlan {
  int threads = 1;       // > 1: per-thread chunks; 1: shared chunks
  int nb = 1;            // images per chunk
  size_t ws_needed = 0;  // elements of workspace this plan uses
  bool direct = false;   // the layer is one plain GEMM over the batch (no chunks)
};
constexpr int kMaxThreads = 256;

// grid: columns per image; per_image: per-thread workspace per image of a
// chunk; fixed: workspace shared by all threads (index tables); per_thread:
// per-thread workspace beyond the first thread (private weight gradients);
// max_nb: the most images one chunk may hold (int32 table offsets).
// ws_size = SIZE_MAX asks for the plan that runs at full speed.
inline ChunkPlan plan_chunks(int B, size_t grid, size_t per_image, size_t fixed,
                             size_t per_thread, size_t max_nb, size_t ws_size) {
  ChunkPlan p;
  int nt = std::min({omp_get_max_threads(), B, kMaxThreads});
  if (nt > 1 && (size_t)B * grid / nt < kMinThreadColumns) nt = 1;
  for (; nt >= 1; nt--) {
    const size_t cols = nt > 1 ? kThreadColumns : kWideColumns;
    size_t nb = std::clamp<size_t>(cols / grid, 1, std::max<size_t>(max_nb, 1));
    nb = std::min(nb, ((size_t)B + nt - 1) / nt);  // every thread gets a chunk
    const size_t extra = fixed + (size_t)(nt - 1) * per_thread;
    if (ws_size != SIZE_MAX) {
      if (ws_size < extra + nt * per_image) continue;
      nb = std::min(nb, (ws_size - extra) / (nt * per_image));
    }
    // Equal chunks as far as possible: 64 images in chunks of 24 would leave
    // one chunk of 16; chunks of 22 even it out.
    const size_t nchunks = ((size_t)B + nb - 1) / nb;
    const size_t rounds = (nchunks + nt - 1) / nt;
    nb = ((size_t)B + rounds * nt - 1) / (rounds * nt);
    p.threads = nt;
    p.nb = (int)nb;
    p.ws_needed = extra + nt * per_image * nb;
    return p;
  }
  p.ws_needed = fixed + per_image;  // below the minimum; callers check first
  return p;
}

// The plans conv2d.cpp and conv_transpose2d.cpp follow for a layer, a
// workspace and whether the weight gradient is wanted (ws_size = SIZE_MAX: the
// full-speed workspace). bench/bench_ops reads them to time sgemm at exactly
// the shapes the layers issue.
ChunkPlan conv2d_plan(const ConvDims& d, bool need_dw, size_t ws_size);
ChunkPlan conv_transpose2d_plan(const ConvDims& d, bool need_dw, size_t ws_size);

// ---- im2col / col2im -------------------------------------------------------------------
// The patch grid of a convolution over an image of (C, H, W): grid position
// (gh, gw) and kernel tap (kh, kw) read image pixel (gh*s - p + kh, gw*s - p + kw).
struct PatchGrid {
  int C, H, W;    // image
  int Hg, Wg;     // grid
  int K, s, p;    // kernel, stride, padding
  size_t grid() const { return (size_t)Hg * Wg; }
  size_t image() const { return (size_t)H * W; }
  // Most taps that land on one pixel: ceil(K/s) per dimension.
  int max_hits() const {
    const int k = (K + s - 1) / s;
    return k * k;
  }
  // int32 entries of the two index tables below; a workspace keeps them in as
  // many elements of T (>= 4 bytes each), so the count is the same for both types.
  size_t table_size() const { return (size_t)K * K * grid() + (size_t)max_hits() * image(); }
  // Images per chunk that keep every scatter-table offset t*ld + q in int32.
  size_t max_nb() const { return (size_t)INT32_MAX / ((size_t)K * K * grid()); }
};

// How a conv-like layer uses its workspace, and the plans that follow from it
// (conv2d.cpp and conv_transpose2d.cpp each describe theirs: workspace(d)).
//   direct     the layer is one plain GEMM over the batch: no workspace
//   g          the patch grid
//   tab        elements of the index tables, shared by all threads
//   per_image  per-thread workspace per image of a chunk
//   dw         a private weight gradient, per thread after the first
struct ConvWorkspace {
  bool direct = false;
  PatchGrid g{};
  size_t tab = 0, per_image = 0, dw = 0;

  ChunkPlan plan(int B, bool need_dw, size_t ws_size) const {
    if (direct) {
      ChunkPlan p;
      p.direct = true;
      return p;
    }
    return plan_chunks(B, g.grid(), per_image, tab, need_dw ? dw : 0, g.max_nb(), ws_size);
  }
  size_t min_size() const { return direct ? 0 : tab + per_image; }
  size_t full_size(int B) const { return direct ? 0 : plan(B, true, SIZE_MAX).ws_needed; }
  // A kernel call's plan; throws std::invalid_argument, naming `op`, when the
  // workspace is below the minimum.
  ChunkPlan checked_plan(const char* op, int B, bool need_dw, size_t ws_size) const {
    if (ws_size < min_size())
      throw std::invalid_argument(std::string(op) + ": workspace of " + std::to_string(ws_size) +
                                  " elements is below the minimum " + std::to_string(min_size()));
    return plan(B, need_dw, ws_size);
  }
};

// Runs body(chunk, tid, first) for every chunk of a ChunkPlan: on p.threads
// threads taking whole chunks (static schedule), or, with one thread, one
// chunk after the other with every stage using all the cores on its own.
// Weight gradients (dweight != nullptr): thread 0 accumulates into dweight,
// every later thread into its private buffer priv + (tid - 1) * dw, which its
// first chunk overwrites (the body reads `first`, true until it has written
// one, and clears it). Once all chunks are done the private buffers are added
// into dweight in thread order: the same sum whatever the scheduling.
template <class T, class Body>
void run_chunks(const ChunkPlan& p, int nchunks, T* dweight, T* priv, size_t dw, Body&& body) {
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
      // A thread that got no chunk still owes the sum a zero buffer.
      if (tid > 0 && first) std::memset(priv + (size_t)(tid - 1) * dw, 0, sizeof(T) * dw);
#pragma omp barrier
#pragma omp for schedule(static)
      for (size_t i = 0; i < dw; i++) {
        T s = dweight[i];
        for (int t = 1; t < nt; t++) s += priv[(size_t)(t - 1) * dw + i];
        dweight[i] = s;
      }
    }
  }
}

// Why index tables: the deep layers' rows are 4 or 8 pixels long, so a
// row-by-row copy with its bounds tests costs more than the data; a table that
// maps every (tap, grid position) to its pixel once per call turns im2col and
// col2im into straight runs of (vector) gathers whatever the geometry.
//
//  gather table  (K*K, Hg*Wg):   pixel index read by tap t at grid position q,
//                                or -1 where the tap falls in the padding.
//  scatter table (J, H*W):       for pixel i, the J <= ceil(K/s)^2 col entries
//                                that land on it, as t*ld + q (ld: the col
//                                matrix's row stride), or -1. col2im then
//                                GATHERS into each pixel once instead of
//                                scatter-adding K*K times.
struct PatchTables {
  const int32_t* gather;
  const int32_t* scatter;
};
inline PatchTables build_tables(int32_t* tab, const PatchGrid& g, size_t ld) {
  const int KK = g.K * g.K, J = g.max_hits();
  const size_t G = g.grid(), I = g.image();
  int32_t* ga = tab;
  int32_t* sc = tab + (size_t)KK * G;
  for (size_t i = 0; i < (size_t)J * I; i++) sc[i] = -1;
  for (int kh = 0; kh < g.K; kh++)
    for (int kw = 0; kw < g.K; kw++) {
      const int t = kh * g.K + kw;
      for (int gh = 0; gh < g.Hg; gh++)
        for (int gw = 0; gw < g.Wg; gw++) {
          const int ih = gh * g.s - g.p + kh, iw = gw * g.s - g.p + kw;
          const size_t q = (size_t)gh * g.Wg + gw;
          const bool in = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
          ga[t * G + q] = in ? ih * g.W + iw : -1;
          if (!in) continue;
          const size_t i = (size_t)ih * g.W + iw;
          for (int j = 0; j < J; j++)
            if (sc[j * I + i] < 0) {
              sc[j * I + i] = (int32_t)(t * ld + q);
              break;
            }
        }
    }
  return {ga, sc};
}

// dst[q] = src[idx[q]], or 0 where idx[q] < 0; q < n.
template <class T>
inline void gather(T* dst, const T* src, const int32_t* idx, size_t n) {
  for (size_t q = 0; q < n; q++) dst[q] = idx[q] < 0 ? T(0) : src[idx[q]];
}
// dst[q] = sum over j < J of src[idx[j*stride + q]] (0 where negative); q < n.
template <class T>
inline void gather_sum(T* dst, const T* src, const int32_t* idx, size_t stride, int J, size_t n) {
  for (size_t q = 0; q < n; q++) {
    T s = T(0);
    for (int j = 0; j < J; j++) {
      const int32_t k = idx[j * stride + q];
      if (k >= 0) s += src[k];
    }
    dst[q] = s;
  }
}
// GCC does not vectorise a conditional gather, so float gets masked vector
// gathers: AVX-512 (16 lanes, tails through a lane mask) or AVX2 (8 lanes,
// scalar tail). Lanes whose index is -1 are masked off and never read.
#if defined(__AVX512F__)
template <>
inline void gather<float>(float* dst, const float* src, const int32_t* idx, size_t n) {
  const __m512i zero = _mm512_setzero_si512();
  for (size_t q = 0; q < n; q += 16) {
    const __mmask16 t = n - q >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - q)) - 1);
    const __m512i i = _mm512_maskz_loadu_epi32(t, idx + q);
    const __mmask16 m = _mm512_mask_cmpge_epi32_mask(t, i, zero);
    _mm512_mask_storeu_ps(dst + q, t, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, i, src, 4));
  }
}
template <>
inline void gather_sum<float>(float* dst, const float* src, const int32_t* idx, size_t stride,
                              int J, size_t n) {
  const __m512i zero = _mm512_setzero_si512();
  for (size_t q = 0; q < n; q += 16) {
    const __mmask16 t = n - q >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - q)) - 1);
    __m512 s = _mm512_setzero_ps();
    for (int j = 0; j < J; j++) {
      const __m512i i = _mm512_maskz_loadu_epi32(t, idx + j * stride + q);
      const __mmask16 m = _mm512_mask_cmpge_epi32_mask(t, i, zero);
      s = _mm512_add_ps(s, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, i, src, 4));
    }
    _mm512_mask_storeu_ps(dst + q, t, s);
  }
}
#elif defined(__AVX2__)
template <>
inline void gather<float>(float* dst, const float* src, const int32_t* idx, size_t n) {
  const __m256i none = _mm256_set1_epi32(-1);
  size_t q = 0;
  for (; q + 8 <= n; q += 8) {
    const __m256i i = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + q));
    const __m256 m = _mm256_castsi256_ps(_mm256_cmpgt_epi32(i, none));
    _mm256_storeu_ps(dst + q, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, i, m, 4));
  }
  for (; q < n; q++) dst[q] = idx[q] < 0 ? 0.f : src[idx[q]];
}
template <>
inline void gather_sum<float>(float* dst, const float* src, const int32_t* idx, size_t stride,
                              int J, size_t n) {
  const __m256i none = _mm256_set1_epi32(-1);
  size_t q = 0;
  for (; q + 8 <= n; q += 8) {
    __m256 s = _mm256_setzero_ps();
    for (int j = 0; j < J; j++) {
      const __m256i i = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + j * stride + q));
      const __m256 m = _mm256_castsi256_ps(_mm256_cmpgt_epi32(i, none));
      s = _mm256_add_ps(s, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, i, m, 4));
    }
    _mm256_storeu_ps(dst + q, s);
  }
  for (; q < n; q++) {
    float s = 0.f;
    for (int j = 0; j < J; j++) {
      const int32_t k = idx[j * stride + q];
      if (k >= 0) s += src[k];
    }
    dst[q] = s;
  }
}
#endif

// col(rows, ld) for the channels [c0, c1) of the nb images of img (nb, C, H, W):
// row ((c - c0)*K + kh)*K + kw, column b*Hg*Wg + gh*Wg + gw. Out-of-image taps
// read 0.
//
// These loops and the permutes below are parallel when called on their own (a
// shared chunk) and serial inside a per-thread chunk, which is already one of
// a team: `if (!omp_in_parallel())` says so even where nesting is enabled.
template <class T>
void im2col(T* col, size_t ld, const T* img, int nb, int c0, int c1, const PatchGrid& g,
            const PatchTables& tab) {
  const int KK = g.K * g.K;
  const size_t G = g.grid(), I = g.image();
#pragma omp parallel for collapse(2) schedule(static) if (!omp_in_parallel())
  for (int c = c0; c < c1; c++)
    for (int b = 0; b < nb; b++) {
      const T* src = img + ((size_t)b * g.C + c) * I;
      T* dst = col + (size_t)(c - c0) * KK * ld + (size_t)b * G;
      for (int t = 0; t < KK; t++) gather(dst + t * ld, src, tab.gather + t * G, G);
    }
}

// The adjoint of im2col: the planes of channels [c0, c1) of img (nb, C, H, W)
// become the sum of the col entries that read each pixel (overwritten).
template <class T>
void col2im(T* img, const T* col, size_t ld, int nb, int c0, int c1, const PatchGrid& g,
            const PatchTables& tab) {
  const int KK = g.K * g.K;
  const size_t G = g.grid(), I = g.image();
#pragma omp parallel for collapse(2) schedule(static) if (!omp_in_parallel())
  for (int b = 0; b < nb; b++)
    for (int c = c0; c < c1; c++)
      gather_sum(img + ((size_t)b * g.C + c) * I, col + (size_t)(c - c0) * KK * ld + (size_t)b * G,
                 tab.scatter, I, g.max_hits(), I);
}

// Batch-major (nb, C, HW) <-> channel-major (C, ld) with image b at column
// b*HW, so that a chunk of images becomes one wide GEMM instead of nb narrow ones.
template <class T>
void to_channel_major(T* dst, size_t ld, const T* src, int nb, int C, size_t HW) {
#pragma omp parallel for collapse(2) schedule(static) if (nb * C > 64 && !omp_in_parallel())
  for (int c = 0; c < C; c++)
    for (int b = 0; b < nb; b++)
      std::memcpy(dst + (size_t)c * ld + b * HW, src + ((size_t)b * C + c) * HW, sizeof(T) * HW);
}
template <class T>
void to_batch_major(T* dst, const T* src, size_t ld, int nb, int C, size_t HW) {
#pragma omp parallel for collapse(2) schedule(static) if (nb * C > 64 && !omp_in_parallel())
  for (int b = 0; b < nb; b++)
    for (int c = 0; c < C; c++)
      std::memcpy(dst + ((size_t)b * C + c) * HW, src + (size_t)c * ld + b * HW, sizeof(T) * HW);
}

}  // namespace gannf::cpu
