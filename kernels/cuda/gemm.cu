// The tiled SGEMM behind every convolution, its operand views, and col2im.
//
// One kernel template, C(M, N) = A(M, K) . B(K, N), FP32 with FMA:
//  - a block computes a BM x BN tile of C, walking K in steps of BK; each step
//    stages a BM x BK slice of A and a BK x BN slice of B in shared memory
//    (double-buffered: the next slice is fetched into registers while this one
//    is multiplied, so one barrier per step suffices);
//  - each thread keeps a TM x TN sub-tile of C in registers and reads its A and
//    B values as float4 from shared memory;
//  - A and B are "views": small structs that compute an element from its
//    (row, k) index, so im2col is fused into the loads and never stored. Each
//    thread's non-k index stays fixed across the K loop, so a view splits its
//    address arithmetic into fix() (once per thread) and at() (per element);
//  - the epilogue writes C through another view (NCHW scatter, plain store,
//    +=, or a split-K partial).
// Out-of-range rows, columns and k read as 0 and are never written, so no size
// needs to divide a tile.
//
// Determinism: every C element is one thread's sequential sum over its k
// range. When K is long and the tiles too few to fill the GPU (the weight
// gradients reduce over the whole batch), K is cut into `splits` fixed slices
// whose partial results go to the workspace, and a second kernel adds them in
// slice order -- no atomics. Tile shape and split count depend only on
// (M, N, K) (and a workspace too small for the partials), never on the GPU.
//
// TF32 (opt-in, ConvMath::tf32): the same tiles, loaders, views, split-K and
// epilogues, with the multiply done by the tensor cores through WMMA
// (m16n16k8): each operand is rounded to TF32 as it is staged in shared
// memory, each warp owns a 64x32 (or 32x32) piece of the block's tile as
// 16x16 accumulator fragments, and the epilogue goes through a per-warp
// 16x16 scratch so that it can call the same epilogue views.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "gemm.cuh"
#include "mma.cuh"

#ifndef GANNF_CUDA_EMULATE
#include <mma.h>
#endif

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

namespace {

template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct Tile {
  static constexpr bool kTensorCores = false, kStaged = false;
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kThreads = (BM / TM) * (BN / TN);
  // Shared rows padded by 4 floats: rows stay 16-byte aligned for float4
  // reads, and the k-fast stores (consecutive threads, consecutive rows) land
  // in different banks.
  static constexpr int kPad = 4;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "float4 reads of A and B");
};
// 128x128, 8x8 per thread: 64 FMAs per four float4 shared loads, the ratio a
// register-blocked FP32 GEMM needs to approach the FMA peak. For GEMMs whose
// two sides are both >= 128.
using TileL = Tile<128, 128, 8, 8, 8>;
// 64x64, 4x4 per thread: where one side is under 128 (C_out = 64, the 1- to
// 48-wide first and last layers) and a 128 tile would be mostly padding.
using TileS = Tile<64, 64, 16, 4, 4>;
// 64x128, 8x8 per thread (128 threads): TileL's arithmetic density for the
// sub-pixel GEMMs whose rows are 64 to 127 image channels (phase_path).
using TileM = Tile<64, 128, 8, 8, 8>;

// Tensor-core tiles: BM x BN per block, WM x WN per warp (16x16 fragments).
template <int BM_, int BN_, int BK_, int WM_, int WN_>
struct TcTile {
  static constexpr bool kTensorCores = true, kStaged = false;
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_;
  static constexpr int kWarpsN = BN / WN, kWarps = (BM / WM) * kWarpsN;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kFragM = WM / 16, kFragN = WN / 16;
  // (named here so that nvcc's host pass, which never sees their device use, does not warn #177)
  static_assert(kFragM * 16 == WM && kFragN * 16 == WN, "whole fragments per warp");
  // Rows padded by 4 floats: WMMA wants a leading dimension that is a
  // multiple of 4 and fragment pointers 32-byte aligned, which (BK rows apart
  // by multiples of 8) they are.
  static constexpr int kPad = 4;
  static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % 8 == 0, "WMMA m16n16k8 fragments");
  // The epilogue's per-warp 16x16 scratch reuses the A tiles' shared memory.
  static_assert(kWarps * 256 <= 2 * BK * (BM + kPad), "epilogue scratch fits in the A tiles");
};
// 8 warps, each 64x32 (4x2 fragments): the 128x128 tile of the FP32 kernel.
using TcTileL = TcTile<128, 128, 16, 64, 32>;
// 4 warps, each 32x32: the 64x64 tile.
using TcTileS = TcTile<64, 64, 16, 32, 32>;

// ---- operand views ------------------------------------------------------------
// A view of A (M x K) fixes the row m; a view of B (K x N) fixes the column n.
// kKFast says which index consecutive threads should walk when loading a tile,
// so that their global reads are contiguous.

// A = W, row-major (M, K).
struct ViewW {
  const float* W;
  int M, K;
  static constexpr bool kKFast = true;
  struct Fixed {
    const float* row;
    bool ok;
  };
  __device__ Fixed fix(int m) const {
    const bool ok = m < M;
    return {W + (size_t)(ok ? m : 0) * K, ok};
  }
  __device__ float at(const Fixed& f, int k) const {
    return (f.ok && k < K) ? __ldg(f.row + k) : 0.f;
  }
};

// A = W^T for W row-major (K, M): A[m][k] = W[k*M + m].
struct ViewWT {
  const float* W;
  int M, K;
  static constexpr bool kKFast = false;
  struct Fixed {
    const float* col;
    bool ok;
  };
  __device__ Fixed fix(int m) const {
    const bool ok = m < M;
    return {W + (ok ? m : 0), ok};
  }
  __device__ float at(const Fixed& f, int k) const {
    return (f.ok && k < K) ? __ldg(f.col + (size_t)k * M) : 0.f;
  }
};

// A = an NCHW tensor X (nb, M, HW) read as channels x (image, pixel):
// A[m][b*HW + p] = X[(b*M + m)*HW + p].
struct ViewNchwRows {
  const float* X;
  int M, K;
  FastDiv hw;
  static constexpr bool kKFast = true;
  struct Fixed {
    const float* base;
    bool ok;
  };
  __device__ Fixed fix(int m) const {
    const bool ok = m < M;
    return {X + (size_t)(ok ? m : 0) * hw.d, ok};
  }
  __device__ float at(const Fixed& f, int k) const {
    if (!f.ok || k >= K) return 0.f;
    uint32_t p;
    const uint32_t b = hw.divmod((uint32_t)k, p);
    return __ldg(f.base + (size_t)b * M * hw.d + p);
  }
};

// B = an NCHW tensor X (nb, K, HW) read as channels x (image, pixel):
// B[c][b*HW + p] = X[(b*K + c)*HW + p].
struct ViewNchwCols {
  const float* X;
  int K, N;
  FastDiv hw;
  static constexpr bool kKFast = false;
  struct Fixed {
    const float* base;
    bool ok;
  };
  __device__ Fixed fix(int n) const {
    const bool ok = n < N;
    uint32_t p;
    const uint32_t b = hw.divmod((uint32_t)(ok ? n : 0), p);
    return {X + (size_t)b * K * hw.d + p, ok};
  }
  __device__ float at(const Fixed& f, int k) const {
    return (f.ok && k < K) ? __ldg(f.base + (size_t)k * hw.d) : 0.f;
  }
};

// B = im2col(img) (C*K*K, nb*Hg*Wg): B[(c*K + kh)*K + kw][(b*Hg + gh)*Wg + gw]
//   = img[b, c, gh*s - p + kh, gw*s - p + kw], 0 outside the image.
struct ViewIm2col {
  const float* img;
  int Kd, N;
  int C, H, W, s, p;
  FastDiv ks, wg, hg;
  static constexpr bool kKFast = false;
  struct Fixed {
    const float* base;
    int ih0, iw0;
    bool ok;
  };
  __device__ Fixed fix(int n) const {
    const bool ok = n < N;
    uint32_t gw, gh;
    const uint32_t t = wg.divmod((uint32_t)(ok ? n : 0), gw);
    const uint32_t b = hg.divmod(t, gh);
    return {img + (size_t)b * C * H * W, (int)gh * s - p, (int)gw * s - p, ok};
  }
  __device__ float at(const Fixed& f, int k) const {
    if (!f.ok || k >= Kd) return 0.f;
    uint32_t kw, kh;
    const uint32_t t = ks.divmod((uint32_t)k, kw);
    const uint32_t c = ks.divmod(t, kh);
    const int ih = f.ih0 + (int)kh, iw = f.iw0 + (int)kw;
    if ((unsigned)ih >= (unsigned)H || (unsigned)iw >= (unsigned)W) return 0.f;
    return __ldg(f.base + ((size_t)c * H + ih) * W + iw);
  }
};

// B = im2col(img)^T (nb*Hg*Wg, C*K*K): the same entries with the roles of the
// two indices swapped; the reduction (k) runs over images and grid positions.
struct ViewIm2colT {
  const float* img;
  int K, N;  // K = nb*Hg*Wg, N = C*K*K
  int C, H, W, s, p;
  FastDiv ks, wg, hg;
  static constexpr bool kKFast = true;
  struct Fixed {
    const float* base;
    int kh, kw;
    bool ok;
  };
  __device__ Fixed fix(int n) const {
    const bool ok = n < N;
    uint32_t kw, kh;
    const uint32_t t = ks.divmod((uint32_t)(ok ? n : 0), kw);
    const uint32_t c = ks.divmod(t, kh);
    return {img + (size_t)c * H * W, (int)kh, (int)kw, ok};
  }
  __device__ float at(const Fixed& f, int k) const {
    if (!f.ok || k >= K) return 0.f;
    uint32_t gw, gh;
    const uint32_t t = wg.divmod((uint32_t)k, gw);
    const uint32_t b = hg.divmod(t, gh);
    const int ih = (int)gh * s - p + f.kh, iw = (int)gw * s - p + f.kw;
    if ((unsigned)ih >= (unsigned)H || (unsigned)iw >= (unsigned)W) return 0.f;
    return __ldg(f.base + (size_t)b * C * H * W + (size_t)ih * W + iw);
  }
};

// ---- the sub-pixel (phase) decomposition of col2im ------------------------------
// Where the stride s divides the kernel K and the image's height and width,
// image pixel (ih, iw) = (qh*s + rh - p, qw*s + rw - p) of phase (rh, rw)
// gathers only the taps kh = rh + s*jh, kw = rw + s*jw (jh, jw < J = K/s), from
// grid position (qh - jh, qw - jw). Each of the s*s phases is then an ordinary
// GEMM with no col matrix in between:
//   img_phase(C, nb*Qh*Qw) = W_phase(C, Cx*J*J) . X_shifted(Cx*J*J, nb*Qh*Qw)
// with Qh = H/s, Qw = W/s, k = (cx*J + jh)*J + jw, n = (b*Qh + th)*Qw + tw and
// qh = qh0 + th, qh0 = ceil((p - rh) / s) the phase's first row. The phases
// are blockIdx.z of one launch (set_phase); they never split K.
struct PhaseGeom {
  int s, p;
  FastDiv jj, qw, qh;  // J, Qw, Qh
  __device__ static int ceil_div(int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
  struct Phase {
    int rh = 0, rw = 0, qh0 = 0, qw0 = 0;
  };
  __device__ Phase phase(int z) const {
    const int rh = z / s, rw = z % s;
    return {rh, rw, ceil_div(p - rh, s), ceil_div(p - rw, s)};
  }
  // k = (cx*J + jh)*J + jw -> cx, jh, jw
  __device__ uint32_t tap(int k, uint32_t& jh, uint32_t& jw) const {
    return jj.divmod(jj.divmod((uint32_t)k, jw), jh);
  }
  // n = (b*Qh + th)*Qw + tw -> b, th, tw
  __device__ uint32_t position(int n, uint32_t& th, uint32_t& tw) const {
    return qh.divmod(qw.divmod((uint32_t)n, tw), th);
  }
};

// A = W_phase (C, Cx*J*J): A[c][(cx*J + jh)*J + jw] = W[cx][(c*K + rh + s*jh)*K + rw + s*jw]
// for W (Cx, C*K*K) row-major.
struct ViewPhaseW {
  const float* W;
  int M, K;    // M = C, K = Cx*J*J
  int Kk, Kd;  // the kernel's K and C*K*K
  PhaseGeom geo;
  PhaseGeom::Phase ph{};  // set_phase
  static constexpr bool kKFast = true;
  struct Fixed {
    const float* row;
    bool ok;
  };
  __device__ void set_phase(int z) { ph = geo.phase(z); }
  __device__ Fixed fix(int m) const {
    const bool ok = m < M;
    return {W + ((size_t)(ok ? m : 0) * Kk + ph.rh) * Kk + ph.rw, ok};
  }
  __device__ float at(const Fixed& f, int k) const {
    if (!f.ok || k >= K) return 0.f;
    uint32_t jh, jw;
    const uint32_t cx = geo.tap(k, jh, jw);
    return __ldg(f.row + (size_t)cx * Kd + geo.s * ((int)jh * Kk + (int)jw));
  }
};

// B = X_shifted (Cx*J*J, nb*Qh*Qw): B[(cx*J + jh)*J + jw][(b*Qh + th)*Qw + tw]
//   = X[b, cx, qh0 + th - jh, qw0 + tw - jw], 0 outside the grid, for X (nb, Cx, Hg, Wg).
struct ViewPhaseX {
  static constexpr bool kPhased = true;
  const float* X;
  int K, N;  // K = Cx*J*J, N = nb*Qh*Qw
  int Cx, Hg, Wg;
  PhaseGeom geo;
  PhaseGeom::Phase ph{};  // set_phase
  static constexpr bool kKFast = false;
  struct Fixed {
    const float* base;
    int gh0, gw0;
    bool ok;
  };
  __device__ void set_phase(int z) { ph = geo.phase(z); }
  __device__ Fixed fix(int n) const {
    const bool ok = n < N;
    uint32_t th, tw;
    const uint32_t b = geo.position(ok ? n : 0, th, tw);
    return {X + (size_t)b * Cx * Hg * Wg, ph.qh0 + (int)th, ph.qw0 + (int)tw, ok};
  }
  __device__ float at(const Fixed& f, int k) const {
    if (!f.ok || k >= K) return 0.f;
    uint32_t jh, jw;
    const uint32_t cx = geo.tap(k, jh, jw);
    const int gh = f.gh0 - (int)jh, gw = f.gw0 - (int)jw;
    if ((unsigned)gh >= (unsigned)Hg || (unsigned)gw >= (unsigned)Wg) return 0.f;
    return __ldg(f.base + ((size_t)cx * Hg + gh) * Wg + gw);
  }
};

// ---- epilogues ----------------------------------------------------------------

// C (M, nb*HW) scattered into an NCHW tensor (nb, M, HW).
struct EpiNchw {
  float* out;
  int M;
  FastDiv hw;
  __device__ void operator()(int m, int n, float v) const {
    uint32_t p;
    const uint32_t b = hw.divmod((uint32_t)n, p);
    out[((size_t)b * M + m) * hw.d + p] = v;
  }
};
struct EpiStore {
  float* C;
  int ldc;
  __device__ void operator()(int m, int n, float v) const { C[(size_t)m * ldc + n] = v; }
};
struct EpiAccum {
  float* C;
  int ldc;
  __device__ void operator()(int m, int n, float v) const { C[(size_t)m * ldc + n] += v; }
};
// Split-K slice blockIdx.z's partial result, (splits, M, N) in the workspace.
struct EpiPartial {
  float* P;
  int M, N;
  __device__ void operator()(int m, int n, float v) const {
    P[((size_t)blockIdx.z * M + m) * N + n] = v;
  }
};

// C = img_phase (C, nb*Qh*Qw) written to its pixels of img (nb, C, H, W).
struct EpiPhase {
  float* img;
  int C, H, W;
  PhaseGeom geo;
  PhaseGeom::Phase ph{};  // set_phase
  __device__ void set_phase(int z) { ph = geo.phase(z); }
  __device__ void operator()(int m, int n, float v) const {
    uint32_t th, tw;
    const uint32_t b = geo.position(n, th, tw);
    const int ih = (ph.qh0 + (int)th) * geo.s + ph.rh - geo.p;
    const int iw = (ph.qw0 + (int)tw) * geo.s + ph.rw - geo.p;
    img[(((size_t)b * C + m) * H + ih) * W + iw] = v;
  }
};

// ---- the kernel -----------------------------------------------------------------

// Trait<V>::value: view V's static flag where V declares it, else false.
#define GANNF_VIEW_FLAG(Trait, flag)                 \
  template <class V, class = void>                   \
  struct Trait : std::false_type {};                 \
  template <class V>                                 \
  struct Trait<V, std::void_t<decltype(V::flag)>>    \
      : std::bool_constant<V::flag> {};

// A phased GEMM (views with kPhased) runs its phases as blockIdx.z; any other
// uses blockIdx.z for its split-K slice.
GANNF_VIEW_FLAG(IsPhased, kPhased)
// Sets the phase of a phased GEMM's views; returns the split-K slice (0 then).
template <class VA, class VB, class Epi>
__device__ int enter_phase(VA& va, VB& vb, Epi& epi) {
  if constexpr (IsPhased<VB>::value) {
    va.set_phase(blockIdx.z);
    vb.set_phase(blockIdx.z);
    epi.set_phase(blockIdx.z);
    return 0;
  } else {
    return blockIdx.z;
  }
}

// Loads one tile slice (BO outer x BK k) of a view into registers, and stores
// it to shared memory as S[k][outer].
template <class V, int BO, int BK, int NT>
struct TileLoader {
  static constexpr bool kKFast = V::kKFast;
  static constexpr int kPer = BO * BK / NT;  // elements per thread
  static_assert((BO * BK) % NT == 0, "tile slice must split evenly over the threads");
  static_assert(kKFast ? NT % BK == 0 : NT % BO == 0, "thread mapping");
  static constexpr int kStep = kKFast ? NT / BK : NT / BO;  // outer (k-fast) or k stride
  typename V::Fixed fx[kKFast ? kPer : 1];
  int kofs, oofs;

  __device__ void init(const V& v, int o0, int tid) {
    if constexpr (kKFast) {
      kofs = tid % BK;
      oofs = tid / BK;
#pragma unroll
      for (int i = 0; i < kPer; i++) fx[i] = v.fix(o0 + oofs + i * kStep);
    } else {
      kofs = tid / BO;
      oofs = tid % BO;
      fx[0] = v.fix(o0 + oofs);
    }
  }
  __device__ void load(const V& v, int k0, float (&r)[kPer]) const {
#pragma unroll
    for (int i = 0; i < kPer; i++) {
      if constexpr (kKFast)
        r[i] = v.at(fx[i], k0 + kofs);
      else
        r[i] = v.at(fx[0], k0 + kofs + i * kStep);
    }
  }
  template <int LD>
  __device__ void store(float (*S)[LD], const float (&r)[kPer]) const {
#pragma unroll
    for (int i = 0; i < kPer; i++) {
      if constexpr (kKFast)
        S[kofs][oofs + i * kStep] = r[i];
      else
        S[kofs + i * kStep][oofs] = r[i];
    }
  }
};

// Rounds to TF32 as the tensor cores' own conversion does (cvt.rna.tf32.f32).
[[maybe_unused]] __device__ __forceinline__ float to_tf32(float x) {  // (device use only: no host #177)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  return x;  // (no TF32 before compute capability 8.0; the back end refuses it there)
#else
  return nvcuda::wmma::__float_to_tf32(x);
#endif
}

// A block's two tile loaders and their staging registers: load() fetches the
// slices at k0 into registers, store() writes them to shared memory -- rounded
// to TF32 on the way for the tensor-core kernel (kRound).
template <class VA, class VB, int BM, int BN, int BK, int NT>
struct Stage {
  TileLoader<VA, BM, BK, NT> la;
  TileLoader<VB, BN, BK, NT> lb;
  float ra[TileLoader<VA, BM, BK, NT>::kPer], rb[TileLoader<VB, BN, BK, NT>::kPer];

  __device__ void init(const VA& va, const VB& vb, int m0, int n0, int tid) {
    la.init(va, m0, tid);
    lb.init(vb, n0, tid);
  }
  __device__ void load(const VA& va, const VB& vb, int k0) {
    la.load(va, k0, ra);
    lb.load(vb, k0, rb);
  }
  template <bool kRound, int LDA, int LDB>
  __device__ void store(float (*As)[LDA], float (*Bs)[LDB]) {
    if constexpr (kRound) {
#pragma unroll
      for (auto& x : ra) x = to_tf32(x);
#pragma unroll
      for (auto& x : rb) x = to_tf32(x);
    }
    la.store(As, ra);
    lb.store(Bs, rb);
  }
};

// C tile (blockIdx.y, blockIdx.x) of slice blockIdx.z, which covers
// k in [z*kps, min(K, (z+1)*kps)); kps is a multiple of BK. MinBlocks > 1
// asks ptxas to fit that many blocks per SM (at most 65536 / (256 * 2) = 128
// registers a thread for the large tile), trading spills for occupancy;
// same arithmetic, same results (set_gemm_blocks_per_sm).
template <class T, class VA, class VB, class Epi, int MinBlocks = 1>
__global__ void __launch_bounds__(T::kThreads, MinBlocks)
    gemm_kernel(VA va, VB vb, Epi epi, int M, int N, int K, int kps) {
  constexpr int BM = T::BM, BN = T::BN, BK = T::BK, TM = T::TM, TN = T::TN;
  constexpr int NT = T::kThreads, LDA = BM + T::kPad, LDB = BN + T::kPad;
  __shared__ __align__(16) float As[2][BK][LDA];
  __shared__ __align__(16) float Bs[2][BK][LDB];

  const int tid = threadIdx.x;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int kbeg = enter_phase(va, vb, epi) * kps, kend = min(K, kbeg + kps);
  Stage<VA, VB, BM, BN, BK, NT> stage;
  stage.init(va, vb, m0, n0, tid);

  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; i++)
#pragma unroll
    for (int j = 0; j < TN; j++) acc[i][j] = 0.f;

  // Thread (ty, tx) owns rows ty*4 + {0..3} of each of the TM/4 row groups
  // (BM/(TM/4) apart) and likewise for columns: a warp's float4 reads of a
  // shared row are then consecutive (no bank conflicts) or broadcast.
  const int ty = tid / (BN / TN), tx = tid % (BN / TN);

  stage.load(va, vb, kbeg);
  stage.template store<false>(As[0], Bs[0]);
  __syncthreads();
  int buf = 0;
  for (int k0 = kbeg; k0 < kend; k0 += BK) {
    const bool more = k0 + BK < kend;
    if (more) stage.load(va, vb, k0 + BK);  // latency hidden behind the FMAs
#pragma unroll
    for (int kk = 0; kk < BK; kk++) {
      float a[TM], b[TN];
#pragma unroll
      for (int j = 0; j < TM / 4; j++) {
        const float4 t =
            *reinterpret_cast<const float4*>(&As[buf][kk][j * (BM / (TM / 4)) + ty * 4]);
        a[4 * j] = t.x, a[4 * j + 1] = t.y, a[4 * j + 2] = t.z, a[4 * j + 3] = t.w;
      }
#pragma unroll
      for (int j = 0; j < TN / 4; j++) {
        const float4 t =
            *reinterpret_cast<const float4*>(&Bs[buf][kk][j * (BN / (TN / 4)) + tx * 4]);
        b[4 * j] = t.x, b[4 * j + 1] = t.y, b[4 * j + 2] = t.z, b[4 * j + 3] = t.w;
      }
#pragma unroll
      for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = __fmaf_rn(a[i], b[j], acc[i][j]);
    }
    // The other buffer was last read before the previous barrier: free to fill.
    if (more) stage.template store<false>(As[buf ^ 1], Bs[buf ^ 1]);
    __syncthreads();
    buf ^= 1;
  }

#pragma unroll
  for (int i = 0; i < TM; i++) {
    const int m = m0 + (i / 4) * (BM / (TM / 4)) + ty * 4 + (i % 4);
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; j++) {
      const int n = n0 + (j / 4) * (BN / (TN / 4)) + tx * 4 + (j % 4);
      if (n < N) epi(m, n, acc[i][j]);
    }
  }
}

// The TF32 tensor-core GEMM: gemm_kernel's tiles, loads and epilogue, with
// each warp's WM x WN piece of the tile multiplied by WMMA fragments.
// Shared A is stored As[k][m], which WMMA reads as a column-major 16x8
// fragment; B is Bs[k][n], a row-major 8x16 one.
template <class T, class VA, class VB, class Epi>
__global__ void __launch_bounds__(T::kThreads)
    gemm_tf32_kernel(VA va, VB vb, Epi epi, int M, int N, int K, int kps) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched: TF32 needs compute capability 8.0 (checked by the back end)
#else
  namespace wmma = nvcuda::wmma;
  constexpr int BM = T::BM, BN = T::BN, BK = T::BK, FM = T::kFragM, FN = T::kFragN;
  constexpr int NT = T::kThreads, LDA = BM + T::kPad, LDB = BN + T::kPad;
  __shared__ __align__(32) float As[2][BK][LDA];
  __shared__ __align__(32) float Bs[2][BK][LDB];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = (warp / T::kWarpsN) * T::WM, wn = (warp % T::kWarpsN) * T::WN;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int kbeg = enter_phase(va, vb, epi) * kps, kend = min(K, kbeg + kps);
  // Operands are rounded once, as they are staged, not at every fragment load.
  Stage<VA, VB, BM, BN, BK, NT> stage;
  stage.init(va, vb, m0, n0, tid);

  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; i++)
#pragma unroll
    for (int j = 0; j < FN; j++) wmma::fill_fragment(acc[i][j], 0.f);

  stage.load(va, vb, kbeg);
  stage.template store<true>(As[0], Bs[0]);
  __syncthreads();
  int buf = 0;
  for (int k0 = kbeg; k0 < kend; k0 += BK) {
    const bool more = k0 + BK < kend;
    if (more) stage.load(va, vb, k0 + BK);
#pragma unroll
    for (int kk = 0; kk < BK; kk += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> a[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b[FN];
#pragma unroll
      for (int i = 0; i < FM; i++) wmma::load_matrix_sync(a[i], &As[buf][kk][wm + 16 * i], LDA);
#pragma unroll
      for (int j = 0; j < FN; j++) wmma::load_matrix_sync(b[j], &Bs[buf][kk][wn + 16 * j], LDB);
#pragma unroll
      for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    if (more) stage.template store<true>(As[buf ^ 1], Bs[buf ^ 1]);
    __syncthreads();
    buf ^= 1;
  }

  // Epilogue: each fragment through this warp's 16x16 scratch (the A tiles are
  // free after the loop's last barrier), then out through the epilogue view,
  // lanes on consecutive columns.
  float* scratch = &As[0][0][0] + warp * 256;
#pragma unroll
  for (int i = 0; i < FM; i++)
#pragma unroll
    for (int j = 0; j < FN; j++) {
      wmma::store_matrix_sync(scratch, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const int mb = m0 + wm + 16 * i, nb = n0 + wn + 16 * j;
#pragma unroll
      for (int e = lane; e < 256; e += 32) {
        const int m = mb + e / 16, n = nb + e % 16;
        if (m < M && n < N) epi(m, n, scratch[e]);
      }
      __syncwarp();  // read by every lane before the next fragment overwrites it
    }
#endif
}

// ---- the staged TF32 GEMM (compute capability 8.0+) --------------------------------
// Where the workspace has room, the TF32 forward GEMM W . im2col(img) runs on
// operands laid out for the tensor cores first, so that its inner loop does no
// per-element index arithmetic (which set the WMMA kernel's pace):
//   Wt (M, Kt)              W (M, C, K, K) as (m, kh, kw, c), c padded to Cp = C
//                           rounded up to 4 with zeros; Kt = K*K*Cp
//   Xp (nb, Hp, Wp, Cp)     the image in NHWC, moved by the padding p (zeros
//                           around it: Hp = H + 2p, Wp = W + 2p) and padded to Cp
//                           channels with zeros
// both rounded to TF32 as they are written (cvt.rna, once per element, as the
// WMMA path rounds them when it stages them). Then every 4 consecutive k of an
// operand row are 16 contiguous, aligned bytes: one cp.async each, straight to
// shared memory, 3 stages in flight; k's tap (kh, kw) and channel come from
// two divisions per thread and stage, and no bounds test is needed but the
// matrix's own edges (the padding is in the data). Fragments come out of
// shared memory with ldmatrix (rows of 16 floats, 16-byte chunks XOR-swizzled
// by row so that the 8 rows an ldmatrix phase reads fall in 8 different bank
// groups) and go into mma.sync m16n8k8. Each warp owns WM x WN of the block's
// tile: (WM/16) x (WN/8) accumulators of 4 floats per lane.
// The epilogue writes each accumulator element through the epilogue view, as
// the other kernels do; split-K slices, tile choice and slice sizes are
// plan_gemm's, so results depend only on the dimensions and the workspace.
// E: the staged operands' type -- float (TF32 values) or uint16_t (BF16
// bits). A shared row is 64 bytes either way (BK = 16 TF32 or 32 BF16 k),
// four 16-byte chunks of kEpc elements; each mma takes kMmaK of them.
template <int BM_, int BN_, int WM_, int WN_, class E>
struct StTile {
  static constexpr bool kTensorCores = true, kStaged = true;
  using Elt = E;
  static constexpr int kEpc = 16 / (int)sizeof(E), kMmaK = 2 * kEpc;
  static constexpr int BM = BM_, BN = BN_, BK = 4 * kEpc, WM = WM_, WN = WN_;
  static constexpr int kStages = 3;
  static constexpr int kWarpsN = BN / WN, kWarps = (BM / WM) * kWarpsN;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kFragM = WM / 16, kFragN = WN / 8;
  static_assert(kFragM * 16 == WM && kFragN * 8 == WN && kFragN % 2 == 0,
                "m16 x n8 fragments, B's in pairs (one ldmatrix.x4 gives two)");
  static_assert((BM * 4) % kThreads == 0 && (BN * 4) % kThreads == 0,
                "a stage's 16-byte chunks split evenly over the threads");
  // (named here so that nvcc's host pass, which never sees their device use, does not warn #177)
  static_assert(kTensorCores && kStages >= 2 && BK == 2 * kMmaK && (kEpc == 4 || kEpc == 8),
                "rows of four 16-byte chunks, two mma steps a stage, >= 2 stages");
};
// 8 warps of 64x32 (4 x 4 mma tiles): the 128x128 tile; 4 warps of 32x32: 64x64.
template <class E>
using StTileL = StTile<128, 128, 64, 32, E>;
template <class E>
using StTileS = StTile<64, 64, 32, 32, E>;

// Staged operand views: row(r) is the row's base (nullptr past the matrix),
// koff(k) the offset of k's 16-byte run from it (for k < K: the kernel
// zero-fills from kend on); base() any valid address (a zero-fill's source).
// A thread's rows stay fixed over the K loop; koff is once per stage.
template <class E>
struct StRows {  // a row-major (rows, K) matrix, K a multiple of a chunk's elements
  const E* A;
  int rows, K;
  __device__ const E* base() const { return A; }
  __device__ const E* row(int r) const { return r < rows ? A + (size_t)r * K : nullptr; }
  __device__ int koff(int k) const { return k; }
};
// im2col of the staged image: B[(kh*Kk + kw)*Cp + c][(b*Hg + gh)*Wg + gw]
//   = Xp[b, gh*s + kh, gw*s + kw, c].
template <class E>
struct StPatches {
  const E* X;
  int K, N;  // K = Kk*Kk*Cp, N = nb*Hg*Wg
  int Cp, Wp, Hp, s;
  FastDiv cp, kk, wg, hg;
  __device__ const E* base() const { return X; }
  __device__ const E* row(int n) const {
    if (n >= N) return nullptr;
    uint32_t gw, gh;
    const uint32_t b = hg.divmod(wg.divmod((uint32_t)n, gw), gh);
    return X + (((size_t)b * Hp + gh * s) * Wp + gw * s) * Cp;
  }
  __device__ int koff(int k) const {
    uint32_t c, kw;
    const uint32_t kh = kk.divmod(cp.divmod((uint32_t)k, c), kw);
    return ((int)kh * Wp + (int)kw) * Cp + (int)c;
  }
};
// The sub-pixel GEMMs on staged operands, phase z = blockIdx.z (PhaseGeom):
//   A = Wph[z] (C, J*J*Cxp): Wph[z][c][(jh*J + jw)*Cxp + cx] = W[cx][c][rh + s*jh][rw + s*jw]
//   B[(jh*J + jw)*Cxp + cx][(b*Qh + th)*Qw + tw] = Xp[b, qh0 + th - jh + ph, qw0 + tw - jw + pw, cx]
// with Xp the grid tensor X (nb, Cx, Hg, Wg) in NHWC, moved by (ph, pw) and
// surrounded by zeros so that every (phase, tap, position) reads inside it.
template <class E>
struct StRowsPhased {
  const E* A;  // s*s phases of (rows, K)
  int rows, K;
  const E* Az = nullptr;  // set_phase
  __device__ void set_phase(int z) { Az = A + (size_t)z * rows * K; }
  __device__ const E* base() const { return A; }
  __device__ const E* row(int r) const { return r < rows ? Az + (size_t)r * K : nullptr; }
  __device__ int koff(int k) const { return k; }
};
template <class E>
struct StPhaseX {
  static constexpr bool kPhased = true;
  const E* X;
  int K, N;  // K = J*J*Cxp, N = nb*Qh*Qw
  int Cp, Wp, Hp, ph, pw;
  PhaseGeom geo;
  FastDiv cp;
  PhaseGeom::Phase z{};  // set_phase
  __device__ void set_phase(int zz) { z = geo.phase(zz); }
  __device__ const E* base() const { return X; }
  __device__ const E* row(int n) const {
    if (n >= N) return nullptr;
    uint32_t th, tw;
    const uint32_t b = geo.position(n, th, tw);
    return X + (((size_t)b * Hp + z.qh0 + (int)th + ph) * Wp + z.qw0 + (int)tw + pw) * Cp;
  }
  __device__ int koff(int k) const {
    uint32_t c, jw;
    const uint32_t jh = geo.jj.divmod(cp.divmod((uint32_t)k, c), jw);
    return (int)c - ((int)jh * Wp + (int)jw) * Cp;
  }
};

// The weight gradients' B, im2col(img)^T on the staged image, is MN-major:
// 4 consecutive n = (kh*Kk + kw)*Cp + c (one tap, 4 channels) are 16
// contiguous bytes, consecutive k (positions) are not. So it is staged k by k
// (kMnMajor): col(n) is n's offset within a position (fixed per thread),
// kpos(k) position k's base in Xp (nullptr past the positions).
//   B[(b*Hg + gh)*Wg + gw][(kh*Kk + kw)*Cp + c] = Xp[b, gh*s + kh, gw*s + kw, c]
template <class E>
struct StPatchesT {
  static constexpr bool kMnMajor = true;
  const E* X;
  int K, N;  // K = nb*Hg*Wg (positions), N = Kk*Kk*Cp
  int Cp, Wp, Hp, s;
  FastDiv cp, kk, wg, hg;
  __device__ const E* base() const { return X; }
  __device__ int col(int n) const {
    if (n >= N) return -1;
    uint32_t c, kw;
    const uint32_t kh = kk.divmod(cp.divmod((uint32_t)n, c), kw);
    return ((int)kh * Wp + (int)kw) * Cp + (int)c;
  }
  __device__ const E* kpos(int k) const {
    if (k >= K) return nullptr;
    uint32_t gw, gh;
    const uint32_t b = hg.divmod(wg.divmod((uint32_t)k, gw), gh);
    return X + (((size_t)b * Hp + gh * s) * Wp + gw * s) * Cp;
  }
};
GANNF_VIEW_FLAG(IsMnMajor, kMnMajor)

// Shared rows of BK = 16 floats, four 16-byte chunks; chunk c of row r is
// stored at chunk c ^ ((r / 2) % 4).
__device__ __forceinline__ int st_swizzle(int r, int c) { return (c ^ ((r >> 1) & 3)) * 4; }
// An MN-major B's shared rows are one k each, BN floats: chunk c of row k is
// stored at chunk c ^ 2*(k % 4), so that a fragment's reads -- rows t and
// t + 4 (t < 4), 8 consecutive n -- fall in 32 different banks.
__device__ __forceinline__ int st_swizzle_mn(int k, int c) { return (c ^ ((k & 3) << 1)) * 4; }

template <class T, class VA, class VB, class Epi>
__global__ void __launch_bounds__(T::kThreads, 2)
    gemm_staged_kernel(VA va, VB vb, Epi epi, int M, int N, int K, int kps) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // Never launched: cp.async, ldmatrix and TF32 mma need compute capability
  // 8.0 (mma.cuh compiles them to nothing below it; the body stays, so that
  // the front end sees the views used on every architecture).
  __trap();
#endif
  using E = typename T::Elt;
  constexpr int BM = T::BM, BN = T::BN, BK = T::BK, S = T::kStages, NT = T::kThreads;
  constexpr int FM = T::kFragM, FN = T::kFragN, kEpc = T::kEpc;
  constexpr bool kBT = IsMnMajor<VB>::value;  // B staged k by k (rows of BN elements)
  constexpr int kRowStep = NT / 4, kRowsA = BM / kRowStep, kRowsB = kBT ? 1 : BN / kRowStep;
  constexpr int kColsT = BN / kEpc, kRowStepT = NT / kColsT, kRowsBT = BK / kRowStepT;
  constexpr int kRowF = BN * (int)sizeof(E) / 4;  // an MN-major B row, in floats
  static_assert(!kBT || (NT % kColsT == 0 && BK % kRowStepT == 0 && kColsT >= 8),
                "an MN-major B's chunks split evenly, 8+ chunks a row for its swizzle");
  // Shared memory in floats whatever E is: a row is 16 floats = 64 bytes.
  __shared__ __align__(128) float As[S][BM][16];
  __shared__ __align__(128) float Bs[S][BN * 16];  // [BN][16] k-major, [BK][kRowF] MN-major

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = (warp / T::kWarpsN) * T::WM, wn = (warp % T::kWarpsN) * T::WN;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int kbeg = enter_phase(va, vb, epi) * kps, kend = min(K, kbeg + kps);
  const int nk = (kend - kbeg + BK - 1) / BK;

  // This thread's chunk column and rows of every stage.
  const int kc = tid % 4, r0 = tid / 4;
  const E* arow[kRowsA];
  const E* brow[kRowsB];
  int bcol = 0;  // (MN-major B) this thread's chunk column: its n offset, -1 past N
  const int ct = tid % kColsT, kt0 = tid / kColsT;
#pragma unroll
  for (int i = 0; i < kRowsA; i++) arow[i] = va.row(m0 + r0 + i * kRowStep);
  if constexpr (kBT) {
    bcol = vb.col(n0 + kEpc * ct);
  } else {
#pragma unroll
    for (int i = 0; i < kRowsB; i++) brow[i] = vb.row(n0 + r0 + i * kRowStep);
  }
  auto load = [&](int st, int k0) {
    const int k = k0 + kEpc * kc;
    const bool in = k < kend;
    const int ao = in ? va.koff(k) : 0;
#pragma unroll
    for (int i = 0; i < kRowsA; i++) {
      const int r = r0 + i * kRowStep;
      const bool ok = in && arow[i];
      cp_async16(&As[st][r][st_swizzle(r, kc)], ok ? arow[i] + ao : va.base(), ok);
    }
    if constexpr (kBT) {
#pragma unroll
      for (int i = 0; i < kRowsBT; i++) {
        const int kr = kt0 + i * kRowStepT, kg = k0 + kr;
        const E* pos = kg < kend ? vb.kpos(kg) : nullptr;
        const bool ok = pos && bcol >= 0;
        cp_async16(&Bs[st][kr * kRowF + st_swizzle_mn(kr, ct)], ok ? pos + bcol : vb.base(), ok);
      }
    } else {
      const int bo = in ? vb.koff(k) : 0;
#pragma unroll
      for (int i = 0; i < kRowsB; i++) {
        const int r = r0 + i * kRowStep;
        const bool ok = in && brow[i];
        cp_async16(&Bs[st][r * 16 + st_swizzle(r, kc)], ok ? brow[i] + bo : vb.base(), ok);
      }
    }
  };

  float acc[FM][FN][4];
#pragma unroll
  for (int i = 0; i < FM; i++)
#pragma unroll
    for (int j = 0; j < FN; j++)
#pragma unroll
      for (int r = 0; r < 4; r++) acc[i][j][r] = 0.f;

#pragma unroll
  for (int st = 0; st < S - 1; st++) {
    if (st < nk) load(st, kbeg + st * BK);
    cp_async_commit();  // (empty groups too: the count stays one per stage)
  }
  // ldmatrix rows: A's matrices are (rows 0-7 | 8-15) x (k 0-3 | 4-7), B's
  // (n 0-7 | 8-15) x (k 0-3 | 4-7) in the order the fragments want them.
  const int a_row = (lane % 8) + ((lane / 8) % 2) * 8, a_chunk = lane / 16;
  const int b_row = (lane % 8) + (lane / 16) * 8, b_chunk = (lane / 8) % 2;
  for (int kt = 0; kt < nk; kt++) {
    cp_async_wait<S - 2>();  // this thread's copies of stage kt have landed ...
    __syncthreads();         // ... and everyone's; stage kt - 1 is no longer read
    if (kt + S - 1 < nk) load((kt + S - 1) % S, kbeg + (kt + S - 1) * BK);
    cp_async_commit();
    const int st = kt % S;
#pragma unroll
    for (int kk = 0; kk < BK / T::kMmaK; kk++) {
      uint32_t a[FM][4], b[FN][2];
#pragma unroll
      for (int i = 0; i < FM; i++) {
        const int r = wm + 16 * i + a_row;
        ldmatrix_x4(a[i], &As[st][r][st_swizzle(r, 2 * kk + a_chunk)]);
      }
      if constexpr (kBT && kEpc == 4) {
        // TF32: b[0] = B(k = t, n = g), b[1] = B(t + 4, g): plain 32-bit reads.
        const int g = lane / 4, t = lane % 4, k0 = 8 * kk + t;
#pragma unroll
        for (int j = 0; j < FN; j++) {
          const int n = wn + 8 * j + g;
          b[j][0] = __float_as_uint(Bs[st][k0 * kRowF + st_swizzle_mn(k0, n / 4) + n % 4]);
          b[j][1] = __float_as_uint(Bs[st][(k0 + 4) * kRowF + st_swizzle_mn(k0 + 4, n / 4) + n % 4]);
        }
      } else if constexpr (kBT) {
        // BF16: b[0] = B(2t..2t+1, g), b[1] = B(2t+8..2t+9, g): two 16-bit reads each.
        const int g = lane / 4, t = lane % 4, k0 = 16 * kk + 2 * t;
        const uint16_t* Bh = reinterpret_cast<const uint16_t*>(&Bs[st][0]);
        auto at = [&](int k, int n) -> uint32_t {
          return Bh[k * BN + 2 * st_swizzle_mn(k, n / 8) + n % 8];
        };
#pragma unroll
        for (int j = 0; j < FN; j++) {
          const int n = wn + 8 * j + g;
          b[j][0] = at(k0, n) | at(k0 + 1, n) << 16;
          b[j][1] = at(k0 + 8, n) | at(k0 + 9, n) << 16;
        }
      } else {
#pragma unroll
        for (int j = 0; j < FN; j += 2) {
          const int r = wn + 8 * j + b_row;
          uint32_t t[4];
          ldmatrix_x4(t, &Bs[st][r * 16 + st_swizzle(r, 2 * kk + b_chunk)]);
          b[j][0] = t[0], b[j][1] = t[1], b[j + 1][0] = t[2], b[j + 1][1] = t[3];
        }
      }
#pragma unroll
      for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++) {
          if constexpr (kEpc == 4)
            mma_tf32_16x8x8(acc[i][j], a[i], b[j]);
          else
            mma_bf16_16x8x16(acc[i][j], a[i], b[j]);
        }
    }
  }

  const int g = lane / 4, t4 = lane % 4;
#pragma unroll
  for (int i = 0; i < FM; i++)
#pragma unroll
    for (int j = 0; j < FN; j++)
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const int m = m0 + wm + 16 * i + g + 8 * (r / 2), n = n0 + wn + 8 * j + 2 * t4 + r % 2;
        if (m < M && n < N) epi(m, n, acc[i][j][r]);
      }
}

// The staged operands' values: TF32 (cvt.rna, kept in a float) or BF16 bits
// (nearest, ties to even).
template <class E>
__device__ __forceinline__ E stage_value(float x);
template <>
__device__ __forceinline__ float stage_value<float>(float x) {
  return to_tf32(x);
}
template <>
__device__ __forceinline__ uint16_t stage_value<uint16_t>(float x) {
  return bf16_bits(x);
}

// Wt (M, Kk*Kk*Cp) = W (M, C, Kk, Kk) as (m, kh, kw, c), zeros for c >= C.
template <class E>
__global__ void __launch_bounds__(256)
    stage_weights_kernel(E* Wt, const float* W, int M, int C, int KK, int Cp) {
  const size_t total = (size_t)M * KK * Cp;
  for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < total; i += (size_t)gridDim.x * 256) {
    const int c = (int)(i % Cp);
    const size_t t = i / Cp;
    const int tap = (int)(t % KK);
    const size_t m = t / KK;
    Wt[i] = c < C ? stage_value<E>(W[(m * C + c) * KK + tap]) : E(0);
  }
}

// Xp (nb, Hp, Wp, Cp) = img (nb, C, H, W) at (h + ph, w + pw), zeros
// elsewhere: a transpose of each image row (C x W -> Wp x Cp) through a 32 x 32
// shared tile, so that both the reads (along w) and the writes (along c) are
// contiguous. Grid (Wp/32, Cp/32, up to nb*Hp rows, strided), blocks of 32 x 8.
template <class E>
__global__ void __launch_bounds__(256)
    stage_image_kernel(E* Xp, const float* img, int nb, int C, int H, int W, int ph, int pw,
                       int Cp, int Hp, int Wp) {
  __shared__ E tile[32][33];
  const int w0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
  for (int z = blockIdx.z; z < nb * Hp; z += gridDim.z) {
    const int b = z / Hp, hp = z % Hp, ih = hp - ph;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int cl = threadIdx.y + 8 * i, c = c0 + cl, iw = w0 + threadIdx.x - pw;
      const bool in = c < C && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
      tile[cl][threadIdx.x] = in ? stage_value<E>(img[(((size_t)b * C + c) * H + ih) * W + iw]) : E(0);
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int wl = threadIdx.y + 8 * i, wp = w0 + wl, c = c0 + threadIdx.x;
      if (wp < Wp && c < Cp) Xp[(((size_t)b * Hp + hp) * Wp + wp) * Cp + c] = tile[threadIdx.x][wl];
    }
    __syncthreads();  // the tile is read before the next row overwrites it
  }
}

// Wph (s*s, C, J*J*Cxp) = W (Cx, C, K, K) per phase z = rh*s + rw:
// Wph[z][c][(jh*J + jw)*Cxp + cx] = W[cx][c][rh + s*jh][rw + s*jw], zeros for cx >= Cx.
template <class E>
__global__ void __launch_bounds__(256)
    stage_phase_weights_kernel(E* Wph, const float* W, int Cx, int C, int K, int s, int J,
                               int Cxp) {
  const size_t total = (size_t)s * s * C * J * J * Cxp;
  for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < total; i += (size_t)gridDim.x * 256) {
    const int cx = (int)(i % Cxp);
    const size_t t = i / Cxp;
    const int tap = (int)(t % (J * J)), jh = tap / J, jw = tap % J;
    const size_t t2 = t / (J * J);
    const int c = (int)(t2 % C), z = (int)(t2 / C), rh = z / s, rw = z % s;
    Wph[i] = cx < Cx ? stage_value<E>(W[(((size_t)cx * C + c) * K + rh + s * jh) * K + rw + s * jw])
                     : E(0);
  }
}

// Xs (M, K4) = X (nb, M, HW) as channels x (image, pixel), each row's K = nb*HW
// entries followed by zeros up to K4 (a multiple of a chunk's elements).
template <class E>
__global__ void __launch_bounds__(256)
    stage_rows_kernel(E* Xs, const float* X, int M, int HW, int K, int K4) {
  const size_t total = (size_t)M * K4;
  for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < total; i += (size_t)gridDim.x * 256) {
    const size_t m = i / K4;
    const int k = (int)(i % K4);
    Xs[i] = k < K ? stage_value<E>(X[((size_t)(k / HW) * M + m) * HW + k % HW]) : E(0);
  }
}

// The staged weight gradient's result, (M, (kh*Kk + kw)*Cp + c), added to
// dW (M, C*Kk*Kk); the padding channels are dropped.
struct EpiDwStaged {
  float* dW;
  int Kd, C;
  FastDiv cp;
  int KK;
  __device__ void operator()(int m, int n, float v) const {
    uint32_t c;
    const uint32_t tap = cp.divmod((uint32_t)n, c);
    if ((int)c < C) dW[(size_t)m * Kd + (size_t)c * KK + tap] += v;
  }
};

// The second pass of a split GEMM: each element's partials added in slice order.
template <class Epi>
__global__ void __launch_bounds__(256)
    splitk_reduce_kernel(Epi epi, const float* P, int M, int N, int splits) {
  const size_t MN = (size_t)M * N;
  for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < MN; i += (size_t)gridDim.x * 256) {
    float s = P[i];
    for (int z = 1; z < splits; z++) s += P[(size_t)z * MN + i];
    epi((int)(i / N), (int)(i % N), s);
  }
}

// img (nb, C, H, W) = col2im(col (C*K*K, nb*Hg*Wg)): each pixel gathers the
// col entries that read it, in (kh, kw) order -- the order in which
// kernels/cpu's col2im adds them, so equal cols give bit-equal images. No
// atomics: one thread owns each pixel.
__global__ void __launch_bounds__(256)
    col2im_kernel(float* img, const float* col, PatchGrid g, int nb, FastDiv fw, FastDiv fh,
                  FastDiv fc) {
  const uint32_t total = (uint32_t)nb * g.C * g.H * g.W;
  const size_t HWg = (size_t)g.Hg * g.Wg, N = (size_t)nb * HWg;
  for (uint32_t idx = blockIdx.x * 256 + threadIdx.x; idx < total; idx += gridDim.x * 256) {
    uint32_t iw, ih, c;
    uint32_t t = fw.divmod(idx, iw);
    t = fh.divmod(t, ih);
    const uint32_t b = fc.divmod(t, c);
    const float* src = col + (size_t)c * g.K * g.K * N + b * HWg;
    float acc = 0.f;
    for (int kh = 0; kh < g.K; kh++) {
      const int th = (int)ih + g.p - kh;
      if (th < 0) break;  // th only falls as kh grows
      if (th % g.s) continue;
      const int gh = th / g.s;
      if (gh >= g.Hg) continue;
      for (int kw = 0; kw < g.K; kw++) {
        const int tw = (int)iw + g.p - kw;
        if (tw < 0) break;
        if (tw % g.s) continue;
        const int gw = tw / g.s;
        if (gw >= g.Wg) continue;
        acc += src[(size_t)(kh * g.K + kw) * N + (size_t)gh * g.Wg + gw];
      }
    }
    img[idx] = acc;
  }
}

// ---- planning and launching (host) -----------------------------------------------

// Blocks per SM the large FP32 tile is compiled for: 0 = not chosen yet (then
// $GANNF_GEMM_BLOCKS_PER_SM, else 2: on an H100, 1-6% faster a training step
// than 1 over four runs, and faster on most of the large conv passes).
std::atomic<int> g_blocks_per_sm{0};

// Whether TF32 GEMMs take the staged kernels where the workspace allows
// (set_tf32_staging): -1 = not chosen yet ($GANNF_TF32_STAGED=0 says no).
std::atomic<int> g_tf32_staging{-1};
std::atomic<uint64_t> g_tf32_staged_gemms{0};

bool tf32_staging() {
  int v = g_tf32_staging.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("GANNF_TF32_STAGED");
    v = e && std::string(e) == "0" ? 0 : 1;
    g_tf32_staging.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

int gemm_blocks_per_sm() {
  int b = g_blocks_per_sm.load(std::memory_order_relaxed);
  if (b == 0) {
    const char* e = std::getenv("GANNF_GEMM_BLOCKS_PER_SM");
    b = e && std::string(e) == "1" ? 1 : 2;
    g_blocks_per_sm.store(b, std::memory_order_relaxed);
  }
  return b;
}

// A split GEMM aims for this many blocks: two waves on the largest current
// GPUs (132 SMs), more on smaller ones, which costs those only the partials'
// traffic. A constant, not the GPU's SM count, so results are the same on
// every GPU.
constexpr size_t kTargetBlocks = 264;
// Below this many k per slice a split's prologue and epilogue dominate.
constexpr size_t kMinSplitK = 256;
// The weight gradients of D's first and G's last layer are a 64 x 48 output
// over K = batch x 1024 positions (131072 at batch 128): one tile, so up to
// 128 slices (128 blocks); their partials are 128 x 3072 floats.
constexpr size_t kMaxSplits = 128;

struct Plan {
  bool large, tc;  // tc: the tensor cores' tiles (TF32 or BF16)
  bool mid;    // FP32 TileM: a phased GEMM of >= 64 rows short of the large tile (TF32: small)
  int splits, kps;
  int phases;  // grid.z of a phased GEMM (splits is then 1); 1 for any other
};

size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

// partial_room: elements of workspace for split-K partials (SIZE_MAX: as many
// as wanted; 0: no splitting).
// The FP32 and TF32 kernels use the same block tiles (only BK differs), so
// the choice of tile and split count reads the same for both.
static_assert(TileL::BM == TcTileL::BM && TileL::BN == TcTileL::BN && TileS::BM == TcTileS::BM &&
                  TileS::BN == TcTileS::BN,
              "FP32 and TF32 tiles of the same shape");

// phases: a phased GEMM's phase count (sub-pixel views, never split); 0 for any other.
Plan plan_gemm(size_t M, size_t N, size_t K, bool can_split, size_t partial_room, ConvMath math,
               int phases = 0) {
  Plan pl{};
  pl.tc = math != ConvMath::fp32;
  pl.phases = std::max(phases, 1);
  const size_t tiles_l = cdiv(M, TileL::BM) * cdiv(N, TileL::BN) * pl.phases;
  // The large tile where both sides fill it, and where either split-K or its
  // own tile count (one block per SM of a large GPU) keeps the GPU busy.
  pl.large = M >= 128 && N >= 128 && (can_split || tiles_l >= 132);
  pl.mid = !pl.large && !pl.tc && phases > 0 && M >= 64 && N >= 128;
  const size_t BM = pl.large ? TileL::BM : TileS::BM, BN = pl.large ? TileL::BN : TileS::BN;
  // (BF16 runs only on the staged kernels, whose BK is 32 BF16 k)
  const size_t BK = math == ConvMath::bf16 ? StTileL<uint16_t>::BK
                    : pl.tc              ? (pl.large ? TcTileL::BK : TcTileS::BK)
                                           : (pl.large ? TileL::BK : TileS::BK);
  const size_t tiles = cdiv(M, BM) * cdiv(N, BN);
  size_t splits = 1;
  if (can_split && tiles < kTargetBlocks && K >= 2 * kMinSplitK) {
    splits = std::min({cdiv(kTargetBlocks, tiles), K / kMinSplitK, kMaxSplits});
    splits = std::min(splits, partial_room / (M * N));
    splits = std::max<size_t>(splits, 1);
  }
  const size_t kps = cdiv(cdiv(K, splits), BK) * BK;
  pl.kps = (int)kps;
  pl.splits = (int)cdiv(K, kps);  // every slice non-empty
  return pl;
}

void check_range(const char* what, size_t n, size_t limit) {
  if (n >= limit)
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(n) +
                                " elements is past what the kernels' 32-bit index arithmetic "
                                "allows; use a smaller batch");
}

void check_grid(const PatchGrid& g, int rows, int nb) {
  const size_t HWg = (size_t)g.Hg * g.Wg;
  check_range("conv image batch", (size_t)nb * g.C * g.H * g.W, (size_t)1 << 32);
  check_range("conv grid batch", (size_t)nb * rows * HWg, (size_t)1 << 32);
  check_range("conv GEMM width", (size_t)nb * HWg, (size_t)1 << 31);
  check_range("conv GEMM depth", (size_t)g.C * g.K * g.K, (size_t)1 << 31);
}

template <class T, class VA, class VB, class Epi>
auto kernel_for() {
  if constexpr (T::kStaged)
    return gemm_staged_kernel<T, VA, VB, Epi>;
  else if constexpr (T::kTensorCores)
    return gemm_tf32_kernel<T, VA, VB, Epi>;
  else if constexpr (T::BM == TileL::BM && T::BN == TileL::BN)
    return gemm_blocks_per_sm() == 2 ? gemm_kernel<T, VA, VB, Epi, 2> : gemm_kernel<T, VA, VB, Epi, 1>;
  else if constexpr (T::BM == TileM::BM && T::BN == TileM::BN)
    return gemm_kernel<T, VA, VB, Epi, 4>;  // 128 threads, <= 128 registers: TileL's 2/SM budget
  else
    return gemm_kernel<T, VA, VB, Epi>;  // 256 threads of few registers: two blocks fit anyway
}

template <class T, bool kSplit, class VA, class VB, class Epi>
void run_tile(const char* what, const VA& va, const VB& vb, const Epi& epi, int M, int N, int K,
              const Plan& pl, float* ws, cudaStream_t st) {
  const dim3 grid((unsigned)cdiv(N, T::BN), (unsigned)cdiv(M, T::BM),
                  (unsigned)(pl.splits * pl.phases));
  if (grid.y > 65535) throw std::invalid_argument(std::string(what) + ": GEMM too tall");
  if constexpr (kSplit) {
    if (pl.splits > 1) {
      launch(what, kernel_for<T, VA, VB, EpiPartial>(), grid, dim3(T::kThreads), st, va, vb,
             EpiPartial{ws, M, N}, M, N, K, pl.kps);
      launch("split-K reduction", splitk_reduce_kernel<Epi>,
             dim3(elementwise_blocks((size_t)M * N, 256)), dim3(256), st, epi, (const float*)ws,
             M, N, pl.splits);
      return;
    }
  }
  launch(what, kernel_for<T, VA, VB, Epi>(), grid, dim3(T::kThreads), st, va, vb, epi, M, N, K,
         pl.kps);
}

template <bool kSplit, class VA, class VB, class Epi>
void run_gemm(const char* what, const VA& va, const VB& vb, const Epi& epi, int M, int N, int K,
              const Plan& pl, float* ws, cudaStream_t st) {
  if (pl.tc) {
    if (pl.large)
      run_tile<TcTileL, kSplit>(what, va, vb, epi, M, N, K, pl, ws, st);
    else
      run_tile<TcTileS, kSplit>(what, va, vb, epi, M, N, K, pl, ws, st);
  } else if (pl.large) {
    run_tile<TileL, kSplit>(what, va, vb, epi, M, N, K, pl, ws, st);
  } else if (pl.mid) {
    if constexpr (IsPhased<VB>::value)
      run_tile<TileM, false>(what, va, vb, epi, M, N, K, pl, ws, st);
    else
      throw std::logic_error(std::string(what) + ": the 64x128 tile is planned for phased GEMMs only");
  } else {
    run_tile<TileS, kSplit>(what, va, vb, epi, M, N, K, pl, ws, st);
  }
}

// Room for the partials of either kernel's split (their BK differ).
size_t split_workspace(size_t M, size_t N, size_t K) {
  size_t most = 0;
  for (ConvMath math : {ConvMath::fp32, ConvMath::tf32}) {
    const Plan pl = plan_gemm(M, N, K, true, SIZE_MAX, math);
    if (pl.splits > 1) most = std::max(most, (size_t)pl.splits * M * N);
  }
  return most;
}

// ---- the staged kernels' operands (host) -------------------------------------------
// Each staged operand region of the workspace, in floats, rounded up to 16
// bytes; esize = the staged element's bytes (4 TF32, 2 BF16), epc = elements
// a 16-byte chunk holds (channels are padded to a multiple of it).
size_t st_floats(size_t n, int esize) { return (n * esize + 15) / 16 * 4; }
int st_esize(ConvMath math) { return math == ConvMath::bf16 ? 2 : 4; }
int round_up(int n, int m) { return (n + m - 1) / m * m; }

// W . im2col(img): Xp (nb, Hp, Wp, Cp) then Wt (M, Kt), then the partials.
struct StagedIm2col {
  int Cp, Hp, Wp, Kt;
  size_t xp, wt;  // floats
};
StagedIm2col staged_im2col(int M, int nb, const PatchGrid& g, int esize) {
  StagedIm2col s{};
  s.Cp = round_up(g.C, 16 / esize);
  s.Hp = g.H + 2 * g.p;
  s.Wp = g.W + 2 * g.p;
  s.Kt = g.K * g.K * s.Cp;
  s.xp = st_floats((size_t)nb * s.Hp * s.Wp * s.Cp, esize);
  s.wt = st_floats((size_t)M * s.Kt, esize);
  return s;
}
// The sub-pixel GEMMs: the grid tensor X (nb, Cx, Hg, Wg) as Xp (nb, Hp, Wp,
// Cxp) moved by (ph, pw), then the s*s phases' weights.
struct StagedPhase {
  int J, Qh, Qw, Cxp, Kt;  // Kt = J*J*Cxp
  int ph, pw, Hp, Wp;
  size_t xp, wph;          // floats
};
StagedPhase staged_phase(int Cx, int nb, const PatchGrid& g, int esize) {
  StagedPhase s{};
  s.J = g.K / g.s, s.Qh = g.H / g.s, s.Qw = g.W / g.s;
  s.Cxp = round_up(Cx, 16 / esize);
  s.Kt = s.J * s.J * s.Cxp;
  // Phase r's first grid row is qh0 = ceil((p - r) / s); it reads grid rows
  // qh0 - (J-1) .. qh0 + Qh - 1 (and likewise columns).
  auto ceil_div = [](int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); };
  int lo = INT_MAX, hi = INT_MIN;
  for (int r = 0; r < g.s; r++) {
    lo = std::min(lo, ceil_div(g.p - r, g.s));
    hi = std::max(hi, ceil_div(g.p - r, g.s));
  }
  s.ph = std::max(0, s.J - 1 - lo);
  s.pw = s.ph;
  s.Hp = std::max(hi + s.Qh, g.Hg) + s.ph;
  s.Wp = std::max(hi + s.Qw, g.Wg) + s.pw;
  s.xp = st_floats((size_t)nb * s.Hp * s.Wp * s.Cxp, esize);
  s.wph = st_floats((size_t)g.s * g.s * g.C * s.Kt, esize);
  return s;
}
// The weight gradient: Xp as for W . im2col, then Xs (M, K4), then the partials.
size_t staged_dw_rows(int M, int nb, const PatchGrid& g, int esize, int* K4 = nullptr) {
  const int k4 = round_up(nb * g.Hg * g.Wg, 16 / esize);
  if (K4) *K4 = k4;
  return st_floats((size_t)M * k4, esize);
}
// The col GEMM: W^T (Kd, Cxp), then per image its grid as positions x
// channels and its col.
struct StagedCol {
  int Cxp;
  size_t wt, per_image;  // floats
};
StagedCol staged_col(int Cx, const PatchGrid& g, int esize) {
  StagedCol s{};
  const size_t Kd = (size_t)g.C * g.K * g.K, HWg = (size_t)g.Hg * g.Wg;
  s.Cxp = round_up(Cx, 16 / esize);
  s.wt = st_floats(Kd * s.Cxp, esize);
  s.per_image = st_floats(HWg * s.Cxp, esize) + Kd * HWg;
  return s;
}

template <class E>
const char* st_name(const char* tf32, const char* bf16) {
  return sizeof(E) == 4 ? tf32 : bf16;
}
// The staged launches' grid for stage_image_kernel: z strides over the rows
// past the hardware's 65535. The emulator caps it at 7, so that every
// emulated test runs that loop (a GPU test would need 65536 image rows).
#ifdef GANNF_CUDA_EMULATE
constexpr size_t kStageGridZ = 7;
#else
constexpr size_t kStageGridZ = 65535;
#endif
dim3 stage_image_grid(int Wp, int Cp, size_t rows) {
  return dim3((unsigned)cdiv(Wp, 32), (unsigned)cdiv(Cp, 32), (unsigned)std::min(rows, kStageGridZ));
}

template <class E, bool kSplit, class VA, class VB, class Epi>
void run_staged(const char* what, const VA& va, const VB& vb, const Epi& epi, int M, int N, int K,
                const Plan& pl, float* ws, cudaStream_t st) {
  g_tf32_staged_gemms.fetch_add(1, std::memory_order_relaxed);
  if (pl.large)
    run_tile<StTileL<E>, kSplit>(what, va, vb, epi, M, N, K, pl, ws, st);
  else
    run_tile<StTileS<E>, kSplit>(what, va, vb, epi, M, N, K, pl, ws, st);
}

// Each staged GEMM: false (nothing launched) where the workspace is too small.
template <class E>
bool staged_w_im2col(const EpiNchw& epi, const float* W, const float* img, int M, int nb,
                     const PatchGrid& g, float* ws, size_t ws_size, cudaStream_t st, ConvMath math) {
  const StagedIm2col sg = staged_im2col(M, nb, g, sizeof(E));
  if (ws_size < sg.xp + sg.wt) return false;
  E* Xp = reinterpret_cast<E*>(ws);
  E* Wt = reinterpret_cast<E*>(ws + sg.xp);
  const int N = nb * g.Hg * g.Wg;
  launch(st_name<E>("TF32 staging of W", "BF16 staging of W"), stage_weights_kernel<E>,
         dim3(elementwise_blocks((size_t)M * sg.Kt, 256)), dim3(256), st, Wt, W, M, g.C, g.K * g.K, sg.Cp);
  launch(st_name<E>("TF32 staging of the image", "BF16 staging of the image"), stage_image_kernel<E>,
         stage_image_grid(sg.Wp, sg.Cp, (size_t)nb * sg.Hp), dim3(32, 8), st, Xp, img, nb, g.C, g.H,
         g.W, g.p, g.p, sg.Cp, sg.Hp, sg.Wp);
  const StRows<E> sa{Wt, M, sg.Kt};
  const StPatches<E> sb{Xp, sg.Kt, N, sg.Cp, sg.Wp, sg.Hp, g.s,
                        FastDiv(sg.Cp), FastDiv(g.K), FastDiv(g.Wg), FastDiv(g.Hg)};
  const Plan pl = plan_gemm(M, N, sg.Kt, true, ws_size - sg.xp - sg.wt, math);
  run_staged<E, true>("conv GEMM W.im2col (staged)", sa, sb, epi, M, N, sg.Kt, pl,
                      ws + sg.xp + sg.wt, st);
  return true;
}

template <class E>
bool staged_dw(float* dW, const float* X, const float* img, int M, int nb, const PatchGrid& g,
               float* ws, size_t ws_size, cudaStream_t st, ConvMath math) {
  const StagedIm2col sg = staged_im2col(M, nb, g, sizeof(E));
  int K4 = 0;
  const size_t xs = staged_dw_rows(M, nb, g, sizeof(E), &K4);
  if (ws_size < sg.xp + xs) return false;
  const int Kd = g.C * g.K * g.K, HWg = g.Hg * g.Wg, K = nb * HWg;
  E* Xp = reinterpret_cast<E*>(ws);
  E* Xs = reinterpret_cast<E*>(ws + sg.xp);
  launch(st_name<E>("TF32 staging of the image", "BF16 staging of the image"), stage_image_kernel<E>,
         stage_image_grid(sg.Wp, sg.Cp, (size_t)nb * sg.Hp), dim3(32, 8), st, Xp, img, nb, g.C, g.H,
         g.W, g.p, g.p, sg.Cp, sg.Hp, sg.Wp);
  launch(st_name<E>("TF32 staging of the output gradient", "BF16 staging of the output gradient"),
         stage_rows_kernel<E>, dim3(elementwise_blocks((size_t)M * K4, 256)), dim3(256), st, Xs, X,
         M, HWg, K, K4);
  const StRows<E> sa{Xs, M, K4};
  const StPatchesT<E> sb{Xp, K, sg.Kt, sg.Cp, sg.Wp, sg.Hp, g.s,
                         FastDiv(sg.Cp), FastDiv(g.K), FastDiv(g.Wg), FastDiv(g.Hg)};
  const EpiDwStaged epi{dW, Kd, g.C, FastDiv(sg.Cp), g.K * g.K};
  const Plan pl = plan_gemm(M, sg.Kt, K4, true, ws_size - sg.xp - xs, math);
  run_staged<E, true>("conv GEMM dW += X.im2col^T (staged)", sa, sb, epi, M, sg.Kt, K4, pl,
                      ws + sg.xp + xs, st);
  return true;
}

template <class E>
bool staged_phases(const EpiPhase& epi, const PhaseGeom& geo, const float* W, const float* X,
                   int Cx, int nb, const PatchGrid& g, float* ws, size_t ws_size, cudaStream_t st,
                   ConvMath math) {
  const StagedPhase sp = staged_phase(Cx, nb, g, sizeof(E));
  if (ws_size < sp.xp + sp.wph) return false;
  const int N = nb * sp.Qh * sp.Qw;
  E* Xp = reinterpret_cast<E*>(ws);
  E* Wph = reinterpret_cast<E*>(ws + sp.xp);
  launch(st_name<E>("TF32 staging of the phases' W", "BF16 staging of the phases' W"),
         stage_phase_weights_kernel<E>,
         dim3(elementwise_blocks((size_t)g.s * g.s * g.C * sp.Kt, 256)), dim3(256), st, Wph, W, Cx,
         g.C, g.K, g.s, sp.J, sp.Cxp);
  launch(st_name<E>("TF32 staging of the grid", "BF16 staging of the grid"), stage_image_kernel<E>,
         stage_image_grid(sp.Wp, sp.Cxp, (size_t)nb * sp.Hp), dim3(32, 8), st, Xp, X, nb, Cx, g.Hg,
         g.Wg, sp.ph, sp.pw, sp.Cxp, sp.Hp, sp.Wp);
  const StRowsPhased<E> sa{Wph, g.C, sp.Kt};
  const StPhaseX<E> sb{Xp, sp.Kt, N, sp.Cxp, sp.Wp, sp.Hp, sp.ph, sp.pw, geo, FastDiv(sp.Cxp)};
  const Plan pl = plan_gemm(g.C, N, sp.Kt, false, 0, math, g.s * g.s);
  run_staged<E, false>("conv GEMM img = W_phase.X (sub-pixel, staged)", sa, sb, epi, g.C, N,
                       sp.Kt, pl, ws, st);
  return true;
}

template <class E>
bool staged_col2im(float* img, const float* W, const float* X, int Cx, int nb, const PatchGrid& g,
                   float* ws, size_t ws_size, cudaStream_t st, ConvMath math) {
  const StagedCol sc = staged_col(Cx, g, sizeof(E));
  if (ws_size < sc.wt + sc.per_image) return false;
  const int Kd = g.C * g.K * g.K, HWg = g.Hg * g.Wg;
  E* WT = reinterpret_cast<E*>(ws);
  // W (Cx, Kd) read as one image of Cx channels, 1 x Kd pixels: W^T (Kd, Cxp).
  launch(st_name<E>("TF32 staging of W^T", "BF16 staging of W^T"), stage_image_kernel<E>,
         stage_image_grid(Kd, sc.Cxp, 1), dim3(32, 8), st, WT, W, 1, Cx, 1, Kd, 0, 0, sc.Cxp, 1, Kd);
  const int nb_max = (int)std::min<size_t>((size_t)nb, (ws_size - sc.wt) / sc.per_image);
  const size_t xn_floats = st_floats((size_t)nb_max * HWg * sc.Cxp, sizeof(E));
  E* Xn = reinterpret_cast<E*>(ws + sc.wt);
  float* col = ws + sc.wt + xn_floats;
  const FastDiv fw(g.W), fh(g.H), fc(g.C);
  for (int b0 = 0; b0 < nb; b0 += nb_max) {
    const int nbc = std::min(nb_max, nb - b0);
    const int N = nbc * HWg;
    launch(st_name<E>("TF32 staging of the grid", "BF16 staging of the grid"), stage_image_kernel<E>,
           stage_image_grid(g.Wg, sc.Cxp, (size_t)nbc * g.Hg), dim3(32, 8), st, Xn,
           X + (size_t)b0 * Cx * HWg, nbc, Cx, g.Hg, g.Wg, 0, 0, sc.Cxp, g.Hg, g.Wg);
    const StRows<E> sa{WT, Kd, sc.Cxp}, sb{Xn, N, sc.Cxp};
    const EpiStore epi{col, N};
    const Plan pl = plan_gemm(Kd, N, sc.Cxp, false, 0, math);
    run_staged<E, false>("conv GEMM col = W^T.X (staged)", sa, sb, epi, Kd, N, sc.Cxp, pl, col, st);
    const size_t pixels = (size_t)nbc * g.C * g.H * g.W;
    launch("col2im", col2im_kernel, dim3(elementwise_blocks(pixels, 256, 1)), dim3(256), st,
           img + (size_t)b0 * g.C * g.H * g.W, (const float*)col, g, nbc, fw, fh, fc);
  }
  return true;
}

// Runs staged(E{}) -- one of the staged GEMMs above, for math's operand type
// E -- where `math` takes the staged kernels (BF16 always: it has no other;
// TF32 unless set_tf32_staging(0)); true if it ran. BF16 whose workspace
// (have) is below the staged operands' (need()) is an error; TF32's then
// falls back to the WMMA kernel (false).
template <class Staged, class Need>
bool try_staged(ConvMath math, const float* ws, size_t have, const char* what, Staged staged, Need need) {
  const bool on = math == ConvMath::bf16 || (math == ConvMath::tf32 && tf32_staging());
  if (on && ws && (math == ConvMath::bf16 ? staged(uint16_t{}) : staged(float{}))) return true;
  if (math == ConvMath::bf16)
    throw std::invalid_argument(std::string(what) + " (BF16): a workspace of " +
                                std::to_string(ws ? have : 0) + " elements is below the " +
                                std::to_string(need()) +
                                " the staged kernels need (*_workspace_min(d, ConvMath::bf16))");
  return false;
}

}  // namespace

size_t gemm_w_im2col_workspace(int M, int nb, const PatchGrid& g, ConvMath math) {
  const size_t N = (size_t)nb * g.Hg * g.Wg;
  size_t w = math == ConvMath::bf16 ? 0 : split_workspace(M, N, (size_t)g.C * g.K * g.K);
  if (math != ConvMath::fp32) {
    const StagedIm2col st = staged_im2col(M, nb, g, st_esize(math));
    const Plan pl = plan_gemm(M, N, st.Kt, true, SIZE_MAX, math);
    w = std::max(w, st.xp + st.wt + (pl.splits > 1 ? (size_t)pl.splits * M * N : 0));
  }
  return w;
}
size_t gemm_dw_workspace(int M, int nb, const PatchGrid& g, ConvMath math) {
  const size_t Kpos = (size_t)nb * g.Hg * g.Wg;
  size_t w = math == ConvMath::bf16 ? 0 : split_workspace(M, (size_t)g.C * g.K * g.K, Kpos);
  if (math != ConvMath::fp32) {
    const StagedIm2col st = staged_im2col(M, nb, g, st_esize(math));
    int K4 = 0;
    const size_t xs = staged_dw_rows(M, nb, g, st_esize(math), &K4);
    const Plan pl = plan_gemm(M, st.Kt, K4, true, SIZE_MAX, math);
    w = std::max(w, st.xp + xs + (pl.splits > 1 ? (size_t)pl.splits * M * st.Kt : 0));
  }
  return w;
}
// The sub-pixel path (ViewPhaseW) where it applies and pays, for Cx grid
// channels: s divides K and the image; at least 64 image channels (its GEMM's
// rows: fewer would be mostly padding of a 64-row tile, where col's C*K*K rows
// fill it); and a col GEMM too shallow to hide writing and re-reading col --
// Cx < 512 at s >= 2 (on an H100 the 4x4-to-8x8 layers, Cx = 512, ran 0.38 ms
// through col, 0.47 sub-pixel; Cx = 128 and 256, 0.56 and 0.49 through col,
// 0.44 and 0.36 sub-pixel), and at s = 1 only a reduction of a few channels
// (D's last layer's data gradient, Cx = 1), since there most taps of a small
// grid fall outside it and are multiplied by zero.
bool phase_path(int Cx, const PatchGrid& g) {
  const bool divides = g.s <= 8 && g.K % g.s == 0 && g.H % g.s == 0 && g.W % g.s == 0;
  return divides && g.C >= 64 && (g.s >= 2 ? Cx < 512 : Cx <= 16);
}

size_t gemm_wT_col2im_workspace(int Cx, int nb, const PatchGrid& g, ConvMath math) {
  const size_t Kd = (size_t)g.C * g.K * g.K, HWg = (size_t)g.Hg * g.Wg;
  if (!phase_path(Cx, g)) {
    if (math == ConvMath::fp32) return Kd * HWg * nb;
    const StagedCol sc = staged_col(Cx, g, st_esize(math));
    return sc.wt + nb * sc.per_image;
  }
  if (math == ConvMath::fp32) return 0;
  const StagedPhase sp = staged_phase(Cx, nb, g, st_esize(math));
  return sp.xp + sp.wph;
}
size_t gemm_wT_col2im_workspace_min(int Cx, const PatchGrid& g) {
  return phase_path(Cx, g) ? 0 : (size_t)g.C * g.K * g.K * g.Hg * g.Wg;
}
size_t gemm_staged_workspace_min(int rows, int Cx, int nb, const PatchGrid& g) {
  // BF16 without split-K partials and with col for one image: each pass's
  // staged operands, the largest of the three.
  const StagedIm2col st = staged_im2col(rows, nb, g, 2);
  const size_t fwd = st.xp + st.wt, dw = st.xp + staged_dw_rows(rows, nb, g, 2);
  size_t data;
  if (phase_path(Cx, g)) {
    const StagedPhase sp = staged_phase(Cx, nb, g, 2);
    data = sp.xp + sp.wph;
  } else {
    const StagedCol sc = staged_col(Cx, g, 2);
    data = sc.wt + sc.per_image;
  }
  return std::max({fwd, dw, data});
}

void gemm_w_im2col(float* out, const float* W, const float* img, int M, int nb,
                   const PatchGrid& g, float* ws, size_t ws_size, cudaStream_t st,
                   ConvMath math) {
  check_grid(g, M, nb);
  const int Kd = g.C * g.K * g.K, HWg = g.Hg * g.Wg, N = nb * HWg;
  const EpiNchw epi{out, M, FastDiv(HWg)};
  if (try_staged(
          math, ws, ws_size, "conv GEMM W.im2col",
          [&](auto e) { return staged_w_im2col<decltype(e)>(epi, W, img, M, nb, g, ws, ws_size, st, math); },
          [&] { return gemm_w_im2col_workspace(M, nb, g, math); }))
    return;
  const ViewW va{W, M, Kd};
  const ViewIm2col vb{img, Kd, N, g.C, g.H, g.W, g.s, g.p,
                      FastDiv(g.K), FastDiv(g.Wg), FastDiv(g.Hg)};
  const Plan pl = plan_gemm(M, N, Kd, true, ws ? ws_size : 0, math);
  run_gemm<true>("conv GEMM W.im2col", va, vb, epi, M, N, Kd, pl, ws, st);
}

void gemm_dw(float* dW, const float* X, const float* img, int M, int nb, const PatchGrid& g,
             float* ws, size_t ws_size, cudaStream_t st, ConvMath math) {
  check_grid(g, M, nb);
  const int Kd = g.C * g.K * g.K, HWg = g.Hg * g.Wg, K = nb * HWg;
  if (try_staged(
          math, ws, ws_size, "conv GEMM dW += X.im2col^T",
          [&](auto e) { return staged_dw<decltype(e)>(dW, X, img, M, nb, g, ws, ws_size, st, math); },
          [&] { return gemm_dw_workspace(M, nb, g, math); }))
    return;
  const ViewNchwRows va{X, M, K, FastDiv(HWg)};
  const ViewIm2colT vb{img, K, Kd, g.C, g.H, g.W, g.s, g.p,
                       FastDiv(g.K), FastDiv(g.Wg), FastDiv(g.Hg)};
  const EpiAccum epi{dW, Kd};
  const Plan pl = plan_gemm(M, Kd, K, true, ws ? ws_size : 0, math);
  run_gemm<true>("conv GEMM dW += X.im2col^T", va, vb, epi, M, Kd, K, pl, ws, st);
}

void gemm_wT_col2im(float* img, const float* W, const float* X, int Cx, int nb,
                    const PatchGrid& g, float* ws, size_t ws_size, cudaStream_t st,
                    ConvMath math) {
  check_grid(g, Cx, nb);
  const int Kd = g.C * g.K * g.K, HWg = g.Hg * g.Wg;
  if (phase_path(Cx, g)) {
    // One launch, the s*s phases as blockIdx.z: img_phase = W_phase . X_shifted.
    const int J = g.K / g.s, Qh = g.H / g.s, Qw = g.W / g.s;
    const int Kp = Cx * J * J, N = nb * Qh * Qw;
    const PhaseGeom geo{g.s, g.p, FastDiv(J), FastDiv(Qw), FastDiv(Qh)};
    const EpiPhase epi{img, g.C, g.H, g.W, geo};
    if (try_staged(
            math, ws, ws_size, "conv GEMM img = W_phase.X",
            [&](auto e) { return staged_phases<decltype(e)>(epi, geo, W, X, Cx, nb, g, ws, ws_size, st, math); },
            [&] { return gemm_wT_col2im_workspace(Cx, nb, g, math); }))
      return;
    const ViewPhaseW va{W, g.C, Kp, g.K, Kd, geo};
    const ViewPhaseX vb{X, Kp, N, Cx, g.Hg, g.Wg, geo};
    const Plan pl = plan_gemm(g.C, N, Kp, false, 0, math, g.s * g.s);
    run_gemm<false>("conv GEMM img = W_phase.X (sub-pixel)", va, vb, epi, g.C, N, Kp, pl, ws, st);
    return;
  }
  if (try_staged(
          math, ws, ws_size, "conv GEMM col = W^T.X",
          [&](auto e) { return staged_col2im<decltype(e)>(img, W, X, Cx, nb, g, ws, ws_size, st, math); },
          [&] { return gemm_wT_col2im_workspace(Cx, nb, g, math); }))
    return;
  const size_t per = gemm_wT_col2im_workspace_min(Cx, g);
  if (!ws || ws_size < per)
    throw std::invalid_argument("conv: workspace of " + std::to_string(ws ? ws_size : 0) +
                                " elements is below the minimum " + std::to_string(per));
  // As many images per GEMM as the workspace holds: a chunk's col is
  // (Kd, nbc*HWg). The chunking changes no result (each col entry is one dot
  // product over Cx; col2im is per image).
  const int nb_max = (int)std::min<size_t>((size_t)nb, ws_size / per);
  const FastDiv fw(g.W), fh(g.H), fc(g.C);
  for (int b0 = 0; b0 < nb; b0 += nb_max) {
    const int nbc = std::min(nb_max, nb - b0);
    const int N = nbc * HWg;
    const ViewWT va{W, Kd, Cx};
    const ViewNchwCols vb{X + (size_t)b0 * Cx * HWg, Cx, N, FastDiv(HWg)};
    const EpiStore epi{ws, N};
    const Plan pl = plan_gemm(Kd, N, Cx, false, 0, math);
    run_gemm<false>("conv GEMM col = W^T.X", va, vb, epi, Kd, N, Cx, pl, ws, st);
    const size_t pixels = (size_t)nbc * g.C * g.H * g.W;
    launch("col2im", col2im_kernel, dim3(elementwise_blocks(pixels, 256, 1)), dim3(256), st,
           img + (size_t)b0 * g.C * g.H * g.W, (const float*)ws, g, nbc, fw, fh, fc);
  }
}

uint64_t tf32_staged_gemms() { return g_tf32_staged_gemms.load(std::memory_order_relaxed); }

void set_tf32_staging(int mode) {
  if (mode < -1 || mode > 1)
    throw std::invalid_argument("set_tf32_staging: 1, 0 or -1 (the default), not " +
                                std::to_string(mode));
  g_tf32_staging.store(mode, std::memory_order_relaxed);
}

void set_gemm_blocks_per_sm(int blocks) {
  if (blocks < 0 || blocks > 2)
    throw std::invalid_argument("set_gemm_blocks_per_sm: 1, 2 or 0 (the default), not " +
                                std::to_string(blocks));
  g_blocks_per_sm.store(blocks, std::memory_order_relaxed);
}

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
