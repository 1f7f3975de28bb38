// Row-major GEMM over OpenBLAS for both scalar types, and the im2col/col2im
// pair the convolutions are built from.
#pragma once
#include <cblas.h>

#include <cstddef>
#include <cstring>

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

// Columns per GEMM at which sgemm reaches its plateau on the DCGAN shapes: the
// deep layers' grids are only 4x4 or 8x8, so a chunk of images shares one GEMM.
constexpr size_t kWideColumns = 2048;
inline size_t chunk_images(int B, size_t cols_per_image) {
  size_t nb = (kWideColumns + cols_per_image - 1) / cols_per_image;
  return nb < (size_t)B ? nb : (size_t)B;
}

// The patch grid of a convolution over an image of (C, H, W): grid position
// (gh, gw) and kernel tap (kh, kw) read image pixel (gh*s - p + kh, gw*s - p + kw).
struct PatchGrid {
  int C, H, W;    // image
  int Hg, Wg;     // grid
  int K, s, p;    // kernel, stride, padding
};

// col(C*K*K, nb*Hg*Wg): row (c*K + kh)*K + kw, column b*Hg*Wg + gh*Wg + gw.
// img: (nb, C, H, W). Out-of-image taps read 0.
template <class T>
void im2col(T* col, const T* img, int nb, const PatchGrid& g) {
  const int rows = g.C * g.K * g.K;
  const size_t HWg = (size_t)g.Hg * g.Wg, N = (size_t)nb * HWg;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; r++) {
    const int kw = r % g.K, kh = (r / g.K) % g.K, c = r / (g.K * g.K);
    T* dst = col + (size_t)r * N;
    for (int b = 0; b < nb; b++) {
      const T* src = img + ((size_t)b * g.C + c) * g.H * g.W;
      for (int gh = 0; gh < g.Hg; gh++) {
        T* d = dst + b * HWg + (size_t)gh * g.Wg;
        const int ih = gh * g.s - g.p + kh;
        if (ih < 0 || ih >= g.H) {
          std::memset(d, 0, sizeof(T) * g.Wg);
          continue;
        }
        const T* row = src + (size_t)ih * g.W;
        // Taps that land left or right of the image are the first and last few
        // grid columns; keep the bounds test out of the middle so it vectorises.
        int lo = 0, hi = g.Wg;
        while (lo < hi && lo * g.s - g.p + kw < 0) d[lo++] = T(0);
        while (hi > lo && (hi - 1) * g.s - g.p + kw >= g.W) d[--hi] = T(0);
        const T* rp = row - g.p + kw;
        if (g.s == 1) {
          for (int gw = lo; gw < hi; gw++) d[gw] = rp[gw];
        } else {
          for (int gw = lo; gw < hi; gw++) d[gw] = rp[gw * g.s];
        }
      }
    }
  }
}

// The adjoint of im2col: img(nb, C, H, W) = sum of the col entries that read each
// pixel. Overwrites img. Parallel over (b, c) planes, which never collide.
template <class T>
void col2im(T* img, const T* col, int nb, const PatchGrid& g) {
  const size_t HWg = (size_t)g.Hg * g.Wg, N = (size_t)nb * HWg;
#pragma omp parallel for schedule(static)
  for (int bc = 0; bc < nb * g.C; bc++) {
    const int b = bc / g.C, c = bc % g.C;
    T* dst = img + (size_t)bc * g.H * g.W;
    std::memset(dst, 0, sizeof(T) * g.H * g.W);
    for (int kh = 0; kh < g.K; kh++)
      for (int kw = 0; kw < g.K; kw++) {
        const T* src = col + ((size_t)(c * g.K + kh) * g.K + kw) * N + b * HWg;
        for (int gh = 0; gh < g.Hg; gh++) {
          const int ih = gh * g.s - g.p + kh;
          if (ih < 0 || ih >= g.H) continue;
          T* row = dst + (size_t)ih * g.W - g.p + kw;
          const T* s = src + (size_t)gh * g.Wg;
          int lo = 0, hi = g.Wg;
          while (lo < hi && lo * g.s - g.p + kw < 0) lo++;
          while (hi > lo && (hi - 1) * g.s - g.p + kw >= g.W) hi--;
          for (int gw = lo; gw < hi; gw++) row[gw * g.s] += s[gw];
        }
      }
  }
}

// Batch-major (nb, C, HW) <-> channel-major (C, nb*HW), so that a chunk of
// images becomes one wide GEMM instead of nb narrow ones.
template <class T>
void to_channel_major(T* dst, const T* src, int nb, int C, size_t HW) {
#pragma omp parallel for schedule(static) if (nb * C > 64)
  for (int bc = 0; bc < nb * C; bc++) {
    const int b = bc / C, c = bc % C;
    std::memcpy(dst + ((size_t)c * nb + b) * HW, src + (size_t)bc * HW, sizeof(T) * HW);
  }
}
template <class T>
void to_batch_major(T* dst, const T* src, int nb, int C, size_t HW) {
#pragma omp parallel for schedule(static) if (nb * C > 64)
  for (int bc = 0; bc < nb * C; bc++) {
    const int b = bc / C, c = bc % C;
    std::memcpy(dst + (size_t)bc * HW, src + ((size_t)c * nb + b) * HW, sizeof(T) * HW);
  }
}

}  // namespace gannf::cpu
